//! The swap executor's calls ([`super::ops`]) against the FAKE API server: a budget that
//! allows no disruption holds the drain until its deadline, then the policy acts (roll-back
//! fails the step and the uncordon leaves the node schedulable; force deletes the pod), and
//! the node is cordoned only by what the journal would name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::CordonChange;
use super::fake::{FakeApiServer, FakePod, Spec, World};
use super::ops::{self, Clients, Cordoned};
use crate::config::{Kube, OnDeadline};

struct Setup {
    _dir: tempfile::TempDir,
    pki: PathBuf,
    log: PathBuf,
    server: FakeApiServer,
    clients: Clients,
}

impl Setup {
    fn new(mut world: World) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = ops::pki_dir(&dir.path().join("state"), "lab");
        crate::pki::ensure(&pki, "lab").unwrap();
        let log = dir.path().join("requests.jsonl");
        world.log_to(std::fs::File::create(&log).unwrap());
        let server = FakeApiServer::start(&pki, world).unwrap();
        Setup {
            _dir: dir,
            pki,
            log,
            server,
            clients: Clients::default(),
        }
    }

    fn kube(&self, deadline: Duration, on_deadline: OnDeadline) -> Kube {
        Kube {
            drain_deadline: deadline,
            on_deadline,
            ..Kube::defaults(&self.server.endpoint())
        }
    }

    fn drain(&self, kube: &Kube, node: &str, cancel: &AtomicBool) -> ops::DrainReport {
        let deadline = Instant::now() + kube.drain_deadline;
        ops::drain_for_swap(
            &self.clients,
            "lab",
            &self.pki,
            kube,
            node,
            deadline,
            cancel,
        )
    }

    fn uncordon(&self, node: &str) -> Result<CordonChange, String> {
        ops::uncordon_for_swap(
            &self.clients,
            "lab",
            &self.pki,
            &self.server.endpoint(),
            node,
        )
    }

    /// The fake's log: (what, node or pod, code) of each request that changed something.
    fn logged(&self) -> Vec<(String, String, u64)> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let object = v.get("node").or_else(|| v.get("pod")).unwrap();
                (
                    v["what"].as_str().unwrap().to_owned(),
                    object.as_str().unwrap().to_owned(),
                    v["code"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// w1 runs web-1 (under a budget that wants both web pods: no disruption allowed), a
/// DaemonSet's pod and a static pod's mirror; w2 runs web-2.
fn blocked() -> World {
    let spec: Spec = serde_json::from_value(serde_json::json!({
        "nodes": [{"name": "w1"}, {"name": "w2", "ready": false}],
        "pods": [
            {"namespace": "shop", "name": "web-1", "node": "w1",
             "owner": ["ReplicaSet", "web-5d8f"], "labels": {"app": "web"}},
            {"namespace": "shop", "name": "web-2", "node": "w2",
             "owner": ["ReplicaSet", "web-5d8f"], "labels": {"app": "web"}},
            {"namespace": "kube-system", "name": "kube-proxy-w1", "node": "w1",
             "owner": ["DaemonSet", "kube-proxy"]},
            {"namespace": "kube-system", "name": "etcd-w1", "node": "w1",
             "owner": ["Node", "w1"], "mirror": true},
        ],
        "pdbs": [{"namespace": "shop", "name": "web", "selector": {"app": "web"}, "minAvailable": 2}],
    }))
    .unwrap();
    World::from_spec(&spec)
}

fn set(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_budget_allowing_no_disruption_holds_the_drain_to_its_deadline_then_roll_back_fails_and_uncordons()
 {
    let setup = Setup::new(blocked());
    let kube = setup.kube(Duration::from_millis(1500), OnDeadline::RollBack);
    let start = Instant::now();
    let report = setup.drain(&kube, "w1", &AtomicBool::new(false));
    let elapsed = start.elapsed();
    assert_eq!(report.cordoned, Cordoned::Changed);
    let why = report.result.unwrap_err();
    assert!(
        why.contains("shop/web-1 blocked by a PodDisruptionBudget"),
        "{why}"
    );
    assert!(why.contains("on-deadline = \"roll-back\""), "{why}");
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    {
        let mut world = setup.server.world();
        assert!(world.unschedulable("w1"), "cordoned while it drained");
        assert_eq!(
            world.pods_on("w1"),
            set(&[
                "kube-system/etcd-w1",
                "kube-system/kube-proxy-w1",
                "shop/web-1"
            ]),
            "nothing went"
        );
    }
    // The swap's end: the node is schedulable again, and a second uncordon changes nothing.
    assert_eq!(setup.uncordon("w1"), Ok(CordonChange::Changed));
    assert!(!setup.server.world().unschedulable("w1"));
    assert_eq!(setup.uncordon("w1"), Ok(CordonChange::Unchanged));

    let logged = setup.logged();
    assert_eq!(
        logged.first().unwrap(),
        &("cordon".into(), "w1".into(), 200)
    );
    assert_eq!(
        logged.last().unwrap(),
        &("uncordon".into(), "w1".into(), 200)
    );
    let refusals = logged
        .iter()
        .filter(|l| **l == ("evict".into(), "shop/web-1".into(), 429))
        .count();
    assert!(
        (3..=8).contains(&refusals),
        "retried with backoff: {logged:?}"
    );
    assert_eq!(
        logged.len(),
        refusals + 2,
        "only the cordon, the refused evictions (never the skipped pods) and the uncordon: {logged:?}"
    );
}

#[test]
fn with_force_the_deadline_deletes_what_the_budget_holds_and_the_step_is_done() {
    let setup = Setup::new(blocked());
    let kube = setup.kube(Duration::from_millis(800), OnDeadline::Force);
    let report = setup.drain(&kube, "w1", &AtomicBool::new(false));
    assert_eq!(report.cordoned, Cordoned::Changed);
    let done = report.result.unwrap();
    assert!(done.contains("1 pods deleted"), "{done}");
    assert_eq!(
        setup.server.world().pods_on("w1"),
        set(&["kube-system/etcd-w1", "kube-system/kube-proxy-w1"]),
        "the DaemonSet's and the mirror pod stay"
    );
    let logged = setup.logged();
    assert!(logged.contains(&("delete".into(), "shop/web-1".into(), 200)));
    assert!(
        !logged
            .iter()
            .any(|(what, pod, _)| what == "delete" && pod != "shop/web-1")
    );
    assert!(
        setup.server.world().unschedulable("w1"),
        "cordoned until its swap ends"
    );
}

#[test]
fn a_drain_that_can_go_is_done_and_a_cancelled_one_ends_early() {
    let mut world = blocked();
    world.add_pod(
        FakePod::new("shop", "web-3", "w2")
            .owned_by("ReplicaSet", "web-5d8f")
            .label("app", "web"),
    );
    let setup = Setup::new(world);
    let kube = setup.kube(Duration::from_secs(10), OnDeadline::RollBack);
    // Three healthy web pods: the budget allows one disruption.
    let report = setup.drain(&kube, "w1", &AtomicBool::new(false));
    assert_eq!(report.cordoned, Cordoned::Changed);
    let done = report.result.unwrap();
    assert!(
        done.starts_with("drained: 1 pods evicted, 2 left"),
        "{done}"
    );
    // On w2 the budget now allows none; the swap is sent back meanwhile.
    let cancel = AtomicBool::new(false);
    let start = Instant::now();
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            cancel.store(true, Ordering::SeqCst);
        });
        setup.drain(&kube, "w2", &cancel)
    });
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(report.result, Err("drain cancelled: its swap ended".into()));
}

#[test]
fn the_cordon_says_whose_it_is_and_an_api_server_that_is_away_fails_the_drain_at_its_deadline() {
    let setup = Setup::new(blocked());
    let kube = setup.kube(Duration::from_millis(500), OnDeadline::RollBack);
    // An operator's cordon: not this swap's to undo.
    let client = setup
        .clients
        .get("lab", &setup.pki, &setup.server.endpoint())
        .unwrap();
    assert_eq!(client.cordon("w2").unwrap(), CordonChange::Changed);
    let report = setup.drain(&kube, "w2", &AtomicBool::new(false));
    assert_eq!(report.cordoned, Cordoned::Already);
    // A node the API server does not know has nothing to drain.
    let report = setup.drain(&kube, "w1-g1", &AtomicBool::new(false));
    assert_eq!(report.cordoned, Cordoned::NotRegistered);
    assert!(report.result.unwrap().contains("not registered"));
    assert_eq!(setup.uncordon("w1-g1"), Ok(CordonChange::Unchanged));

    // Nothing listens: retried until the deadline, then the step fails.
    let away = Kube {
        endpoint: "127.0.0.1:1".into(),
        ..kube
    };
    let start = Instant::now();
    let report = ops::drain_for_swap(
        &Clients::default(),
        "lab",
        &setup.pki,
        &away,
        "w1",
        Instant::now() + away.drain_deadline,
        &AtomicBool::new(false),
    );
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(report.cordoned, Cordoned::Unknown);
    let why = report.result.unwrap_err();
    assert!(why.starts_with("cannot cordon node w1: "), "{why}");
    assert!(why.contains("no answer from the API server"), "{why}");
    // Without the cluster's PKI there is no client to make.
    let report = ops::drain_for_swap(
        &Clients::default(),
        "lab",
        &setup.pki.join("missing"),
        &away,
        "w1",
        Instant::now(),
        &AtomicBool::new(false),
    );
    let why = report.result.unwrap_err();
    assert!(why.contains("cannot read"), "{why}");
}

#[test]
fn the_ready_conditions_are_listed_as_the_api_server_has_them() {
    let setup = Setup::new(blocked());
    let listed = ops::list_ready(&setup.clients, "lab", &setup.pki, &setup.server.endpoint());
    let want = BTreeMap::from([
        ("w1".to_owned(), Some(true)),
        ("w2".to_owned(), Some(false)),
    ]);
    assert_eq!(listed, Ok(want));
    setup.server.world().set_ready("w1", false);
    setup.server.world().set_ready("w2", true);
    let listed = ops::list_ready(&setup.clients, "lab", &setup.pki, &setup.server.endpoint());
    let want = BTreeMap::from([
        ("w1".to_owned(), Some(false)),
        ("w2".to_owned(), Some(true)),
    ]);
    assert_eq!(listed, Ok(want));
    let away = ops::list_ready(&Clients::default(), "lab", &setup.pki, "127.0.0.1:1");
    assert!(away.unwrap_err().contains("no answer"));
    // A world file with a key the fake does not know is refused, not half read.
    assert!(serde_json::from_str::<Spec>(r#"{"nodes": [], "pod": []}"#).is_err());
}
