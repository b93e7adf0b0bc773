//! The etcd backend against a real three-member etcd cluster.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::testing::EtcdCluster;
use super::super::{Health, Holding, NodeReport, Refusal, Slot, Slots, Take};
use super::*;

const TTL: Duration = Duration::from_secs(2);

fn host(name: &str, etcd: &EtcdCluster) -> EtcdSlots {
    EtcdSlots::new(
        name,
        &Options {
            endpoints: etcd.endpoints(),
            ttl: TTL,
            request_timeout: Duration::from_millis(800),
            prefix: "/slipway".into(),
        },
    )
}

fn report(node: &str, health: Health) -> NodeReport {
    NodeReport {
        node: node.into(),
        health,
        image: String::new(),
        control_plane: false,
    }
}

fn taken(take: Take) -> Slot {
    match take {
        Take::Taken(slot) => slot,
        Take::Refused(why) => panic!("expected a slot, refused: {why}"),
    }
}

#[test]
fn at_most_max_unavailable_down_across_three_hosts_under_contention() {
    let etcd = EtcdCluster::start(3);
    const MAX: u32 = 2;
    let max = usize::try_from(MAX).unwrap();
    let down: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let most = Arc::new(Mutex::new(0usize));
    let refusals = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for h in 1..=3 {
        let slots = host(&format!("h{h}"), &etcd);
        let nodes: Vec<String> = (1..=2).map(|n| format!("n{h}{n}")).collect();
        let ready: Vec<NodeReport> = nodes.iter().map(|n| report(n, Health::Ready)).collect();
        slots.publish("c", &ready).unwrap();
        let (down, most) = (Arc::clone(&down), Arc::clone(&most));
        let refusals = Arc::clone(&refusals);
        threads.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            for node in &nodes {
                let slot = loop {
                    assert!(Instant::now() < deadline, "{node} never got a slot");
                    match slots.take("c", node, MAX) {
                        Ok(Take::Taken(slot)) => break slot,
                        Ok(Take::Refused(_)) | Err(Error::Contended { .. }) => {
                            refusals.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(30));
                        }
                        Err(e) => panic!("take: {e}"),
                    }
                };
                // The swap: the node goes down, is checked before each step, comes back.
                {
                    let mut d = down.lock().unwrap();
                    d.insert(node.clone());
                    let mut m = most.lock().unwrap();
                    *m = (*m).max(d.len());
                }
                slots.publish("c", &[report(node, Health::Down)]).unwrap();
                for _ in 0..3 {
                    assert!(matches!(slots.check(&slot), Holding::Held));
                    std::thread::sleep(Duration::from_millis(50));
                }
                slots.publish("c", &[report(node, Health::Ready)]).unwrap();
                down.lock().unwrap().remove(node);
                slots.release(&slot).unwrap();
            }
            slots
        }));
    }
    // An observer of the store itself: never more than MAX nodes counted down.
    let observer = host("observer", &etcd);
    let mut samples = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        let view = observer.view("c").unwrap();
        assert!(view.slots.len() <= max, "slots held: {:?}", view.slots);
        let counted = view.unavailable().len();
        assert!(counted <= max, "unavailable: {:?}", view.unavailable());
        samples += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        t.join().unwrap();
    }
    let most = *most.lock().unwrap();
    assert!(most <= max, "{most} nodes were down at once");
    assert!(samples > 0);
    // Three hosts wanted six swaps through two slots: some must have been turned away.
    assert!(
        refusals.load(Ordering::Relaxed) > 0,
        "no contention happened"
    );
    eprintln!(
        "{samples} observer samples, {} refused or contended takes",
        refusals.load(Ordering::Relaxed)
    );
    assert!(observer.view("c").unwrap().slots.is_empty());
}

#[test]
fn a_dead_holder_frees_its_slot_in_the_ttl_but_its_down_node_still_counts() {
    let etcd = EtcdCluster::start(3);
    let h1 = host("h1", &etcd);
    let h2 = host("h2", &etcd);
    // Cluster a: nobody publishes; cluster b: both hosts report their nodes.
    h1.publish("b", &[report("n1", Health::Ready)]).unwrap();
    h2.publish("b", &[report("n2", Health::Ready)]).unwrap();
    let a1 = taken(h1.take("a", "n1", 1).unwrap());
    let b1 = taken(h1.take("b", "n1", 1).unwrap());
    h1.publish("b", &[report("n1", Health::Down)]).unwrap();
    assert!(matches!(h2.take("a", "n2", 1).unwrap(), Take::Refused(_)));
    // Past one keep-alive period the slot is still held (keep-alives work).
    std::thread::sleep(TTL + Duration::from_millis(500));
    assert!(matches!(h1.check(&a1), Holding::Held));
    let holders = h2.view("a").unwrap().slots;
    assert_eq!(
        (holders[&0].host.as_str(), holders[&0].node.as_str()),
        ("h1", "n1")
    );

    // kill -9: no more keep-alives, no revoke; nobody deletes anything.
    drop(h1);
    let killed = Instant::now();
    let a2 = loop {
        match h2.take("a", "n2", 1).unwrap() {
            Take::Taken(slot) => break slot,
            Take::Refused(_) => std::thread::sleep(Duration::from_millis(100)),
        }
        assert!(
            killed.elapsed() < TTL * 3,
            "the dead holder's slot never freed"
        );
    };
    let freed = killed.elapsed();
    eprintln!("slot freed {freed:?} after its holder died (TTL {TTL:?})");
    assert!(
        freed <= TTL + Duration::from_millis(1500),
        "freed after {freed:?}"
    );
    // The dead holder's fencing check fails: its slot is gone, and taken again by another.
    assert!(matches!(h2.check(&a1), Holding::Lost { .. }));
    assert_eq!(a2.index, a1.index);
    assert!(matches!(h2.check(&a2), Holding::Held));

    // In b its slot is gone too, but n1 was down and nobody vouches for it now: it counts.
    let view = h2.view("b").unwrap();
    assert!(view.slots.is_empty(), "{:?}", view.slots);
    assert!(!view.statuses.contains_key("n1"));
    match h2.take("b", "n2", 1).unwrap() {
        Take::Refused(Refusal::Budget { unavailable, .. }) => {
            assert_eq!(unavailable, BTreeSet::from(["n1".to_owned()]));
        }
        other => panic!("a dead host's down node must spend the budget: {other:?}"),
    }
    assert!(matches!(h2.check(&b1), Holding::Lost { .. }));
    // The host comes back and reports its node ready: the budget is free again.
    let h1 = host("h1", &etcd);
    h1.publish("b", &[report("n1", Health::Ready)]).unwrap();
    let b2 = taken(h2.take("b", "n2", 1).unwrap());
    h2.release(&b2).unwrap();
    // n1 goes down again on h1, then is removed from h1's host.toml: it stops counting.
    h1.publish("b", &[report("n1", Health::Down)]).unwrap();
    assert!(matches!(h2.take("b", "n2", 1).unwrap(), Take::Refused(_)));
    h1.retire("b", "n1").unwrap();
    let b2 = taken(h2.take("b", "n2", 1).unwrap());
    // A host leaving for good revokes its lease: its statuses go at once, its slots too.
    h2.revoke().unwrap();
    let view = h1.view("b").unwrap();
    assert!(view.slots.is_empty() && !view.statuses.contains_key("n2"));
    assert_eq!(view.members.get("n2").map(String::as_str), Some("h2"));
    match h1.check(&b2) {
        Holding::Lost { reason } => assert!(reason.contains("lease"), "{reason}"),
        other => panic!("a revoked slot must be lost: {other:?}"),
    }
    // A lease that vanished behind our back (revoked, or expired while we were cut off):
    // the put fails with "lease not found", and publish and take grant a new one.
    let lease = h1.inner.lease().unwrap();
    h1.inner.gateway.revoke(lease).unwrap();
    h1.publish("b", &[report("n1", Health::Ready)]).unwrap();
    assert_ne!(h1.inner.lease().unwrap(), lease);
    h1.inner.gateway.revoke(h1.inner.lease().unwrap()).unwrap();
    let slot = taken(h1.take("b", "n1", 2).unwrap_or_else(|e| panic!("{e}")));
    assert_ne!(slot.lease, lease);
    assert!(matches!(h1.check(&slot), Holding::Held));
}

#[test]
fn one_member_down_is_survived_and_quorum_loss_is_unreachable_not_lost() {
    let mut etcd = EtcdCluster::start(3);
    let h1 = host("h1", &etcd);
    let h2 = host("h2", &etcd);
    // Kill the leader, the worst single member to lose.
    let leader = etcd.leader();
    etcd.kill(leader);
    let killed = Instant::now();
    let slot = loop {
        match h1.take("c", "n1", 1) {
            Ok(take) => break taken(take),
            Err(Error::Unreachable { .. }) if killed.elapsed() < Duration::from_secs(8) => {
                // An election is under way.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("take with one member of three down: {e}"),
        }
    };
    eprintln!(
        "first slot taken {:?} after the leader (member {leader}) was killed",
        killed.elapsed()
    );
    assert!(matches!(h1.check(&slot), Holding::Held));
    h1.release(&slot).unwrap();
    let held = taken(h2.take("c", "n2", 1).unwrap());

    // Lose quorum: a second member of three.
    let second = (0..3).find(|i| *i != leader).unwrap_or(0);
    etcd.kill(second);
    let lost = Instant::now();
    let error = h1.take("c", "n1", 1).unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("unreachable") && message.contains("no new swap starts"),
        "{message}"
    );
    match h2.check(&held) {
        Holding::Unreachable(Error::Unreachable { .. }) => {}
        other => panic!("a held slot with quorum lost must be unreachable, not {other:?}"),
    }
    assert!(h2.release(&held).is_err());
    eprintln!("quorum loss reported in {:?}", lost.elapsed());
}
