//! Tests of the node executor's crash handling.

use super::*;
use crate::driver::testing::Hooked;

#[test]
fn exits_without_a_ready_beacon_back_off_longer_each_time_then_show_crashloop() {
    let backoff = crate::model::Backoff::default();
    let mut node = Node::new("w-1");
    node.set(NodeState::Starting, "booting");
    let dir = Path::new("/nonexistent");
    let mut gaps = Vec::new();
    for _ in 0..CRASHLOOP_AFTER {
        let before = Instant::now();
        exited(&mut node, dir, &backoff);
        gaps.push(node.next_start.map(|t| t - before));
        // The pass starts it again once the gap passed.
        node.set(NodeState::Starting, "booting");
    }
    assert!(gaps.windows(2).all(|w| w[0] < w[1]), "gaps grow: {gaps:?}");
    exited(&mut node, dir, &backoff);
    assert_eq!(node.state, NodeState::Crashloop, "{}", node.reason);
    assert!(node.reason.contains("console.log"), "{}", node.reason);
    // Whatever state its VM's exits find it in, the third one without a ready beacon is a
    // crash loop (a state that refused the move would leave it never restarted).
    for state in NodeState::ALL.into_iter().filter(|s| {
        !s.is_leaving()
            && !matches!(
                s,
                NodeState::Waiting | NodeState::Exited | NodeState::Crashloop
            )
    }) {
        let mut node = Node::new("w-2");
        for _ in 0..CRASHLOOP_AFTER {
            node.state = state;
            node.pid = 1;
            exited(&mut node, dir, &backoff);
        }
        assert_eq!(
            node.state,
            NodeState::Crashloop,
            "from {state}: {}",
            node.reason
        );
    }
    // A ready beacon ends the loop: the next exit counts from one again.
    node.set(NodeState::Starting, "booting");
    node.ready_since_start = true;
    exited(&mut node, dir, &backoff);
    assert_eq!((node.state, node.failures), (NodeState::Exited, 1));
}

/// Cluster lab on a Hyper-V host: cp-1 (Linux) and win-1 (Windows), following channel
/// stable and windows-channel stable-windows.
fn mixed(dir: &Path) -> Daemon<crate::driver::testing::NoVms> {
    let state = dir.join("state");
    let nodes = [
        ("cp-1", "control-plane", "linux"),
        ("win-1", "worker", "windows"),
    ];
    let text = super::super::testing::hyperv_config(&state, &nodes, 1);
    super::super::testing::daemon(dir, &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_takes_its_own_oss_target_and_never_boots_another_oss_image() {
    use images::manifest::Os;

    use super::super::channel::Freshness;
    use super::super::testing::put;

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = mixed(dir.path());
    let root = daemon.config.state_dir.join("store");
    let (linux, windows) = (Digest::repeated('b'), Digest::repeated('d'));
    let linux_image = put(&root, &linux, Os::Linux, "2");
    assert!(
        daemon
            .channels
            .linux
            .pulled(Ok(linux_image.clone()), 100)
            .unwrap()
    );
    daemon.ensure_records().unwrap();

    // No Windows image yet: the Linux node has its target, the Windows node waits and says
    // for which channel.
    assert_eq!(
        daemon.image_for_new_nodes("lab", config::NodeOs::Linux),
        Some(linux.clone())
    );
    assert_eq!(
        daemon.image_for_new_nodes("lab", config::NodeOs::Windows),
        None
    );
    daemon.wait("win-1");
    let reason = &daemon.nodes["win-1"].reason;
    assert_eq!(
        reason,
        "not booted: no verified image yet on its channel stable-windows (windows nodes)"
    );

    // The Windows channel naming a Linux image: refused, no target, and status says why.
    let channel = daemon.channels.windows.as_mut().unwrap();
    assert!(!channel.pulled(Ok(linux_image), 200).unwrap());
    assert_eq!(channel.freshness, Freshness::Refused);
    assert!(channel.target.is_none());
    assert!(
        channel.reason.contains(
            "a linux image: the windows nodes' channel must name windows images (promote a windows image to stable-windows)"
        ),
        "{}",
        channel.reason
    );
    assert_eq!(
        daemon.image_for_new_nodes("lab", config::NodeOs::Windows),
        None
    );
    let snapshot = daemon.snapshot("");
    assert!(
        snapshot
            .problem
            .contains("windows-channel stable-windows refused: the channel stable-windows named"),
        "{}",
        snapshot.problem
    );
    assert_eq!(snapshot.windows_channel, "refused");

    // A Windows image verified: the Windows node's target; the Linux node's is unchanged.
    let windows_image = put(&root, &windows, Os::Windows, "1");
    let channel = daemon.channels.windows.as_mut().unwrap();
    assert!(channel.pulled(Ok(windows_image), 300).unwrap());
    assert_eq!(channel.freshness, Freshness::Fresh);
    assert_eq!(
        daemon.image_for_new_nodes("lab", config::NodeOs::Windows),
        Some(windows.clone())
    );
    assert_eq!(
        daemon.image_for_new_nodes("lab", config::NodeOs::Linux),
        Some(linux.clone())
    );
    let snapshot = daemon.snapshot("");
    assert_eq!(snapshot.problem, "");
    assert!(
        snapshot.image.starts_with("linux-node 2 sha256:bbb"),
        "{}",
        snapshot.image
    );
    assert!(
        snapshot
            .windows_image
            .starts_with("windows-node 1 sha256:ddd"),
        "{}",
        snapshot.windows_image
    );
    assert_eq!(
        (snapshot.channel.as_str(), snapshot.windows_channel.as_str()),
        ("fresh", "fresh")
    );
    assert_eq!(snapshot.windows_channel_verified, 300);

    // An image of another OS is refused before the node's record names it.
    for (node, image, says) in [
        (
            "win-1",
            &linux,
            "is a linux image and node win-1 runs windows",
        ),
        (
            "cp-1",
            &windows,
            "is a windows image and node cp-1 runs linux",
        ),
    ] {
        let e = daemon.prepare(node, image).await.unwrap_err();
        assert!(format!("{e:#}").contains(says), "{e:#}");
        assert_eq!(daemon.records[node].image, None, "{node}");
        let on_disk = crate::records::load_all(&daemon.config.state_dir).unwrap();
        assert_eq!(on_disk[node].image, None, "{node}");
    }
}

/// A status the hypervisor did not give (a Hyper-V host out of reach for one pass) changes no
/// node's state; a VM known to be paused still fails its node.
#[tokio::test]
async fn an_unknown_vm_status_leaves_a_ready_node_ready() {
    use images::manifest::Os;

    use crate::daemon::testing;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let image = Digest::repeated('c');
    testing::put(&state.join("store"), &image, Os::Windows, "1");
    let nodes = [
        ("cp-1", "control-plane", "linux"),
        ("win-1", "worker", "windows"),
    ];
    let mut daemon = testing::daemon(dir.path(), &testing::hyperv_config(&state, &nodes, 1));
    daemon.ensure_records().unwrap();
    daemon
        .tracked("win-1")
        .unwrap()
        .2
        .set(NodeState::Starting, "booting");
    daemon.tracked("win-1").unwrap().2.set(NodeState::Ready, "");
    daemon.keep(
        "win-1",
        Some(&image),
        VmStatus::unknown("ssh: connection refused"),
    );
    assert_eq!(daemon.tracked("win-1").unwrap().2.state, NodeState::Ready);
    daemon.keep(
        "win-1",
        Some(&image),
        VmStatus::Paused {
            pid: 7,
            status: "internal-error".into(),
        },
    );
    let node = &daemon.tracked("win-1").unwrap().2;
    assert_eq!(node.state, NodeState::Failed, "{}", node.reason);
}

/// A hypervisor whose status answers come only once `together` asks are in flight at the same
/// time (asked one after another, the first would wait forever), that panics when asked about
/// a VM named `boom`, and that counts the most asks it ever had in flight. Each VM's status is
/// its entry in `answers`, or running with a pid of its own.
struct Together {
    gate: tokio::sync::Barrier,
    together: usize,
    asked: std::sync::atomic::AtomicUsize,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    answers: std::sync::Mutex<BTreeMap<String, VmStatus>>,
}

impl Together {
    fn new(together: usize) -> Together {
        Together {
            gate: tokio::sync::Barrier::new(together),
            together,
            asked: 0.into(),
            in_flight: 0.into(),
            most: 0.into(),
            answers: std::sync::Mutex::default(),
        }
    }

    /// Running, with a pid made of the name's bytes.
    fn running(name: &str) -> VmStatus {
        VmStatus::Running {
            pid: name.bytes().map(u32::from).sum(),
        }
    }

    fn answer(&self, name: &str, status: VmStatus) {
        self.answers.lock().unwrap().insert(name.to_owned(), status);
    }
}

impl crate::driver::testing::Hooks for Together {
    async fn status(&self, name: &str) -> VmStatus {
        use std::sync::atomic::Ordering::SeqCst;
        assert_ne!(name, "boom", "a status ask that panics");
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        // The first `together` asks wait for each other; the later ones just take a while.
        if self.asked.fetch_add(1, SeqCst) < self.together {
            self.gate.wait().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        let answer = self.answers.lock().unwrap().get(name).cloned();
        answer.unwrap_or_else(|| Together::running(name))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_are_asked_for_their_status_together_a_few_at_a_time() {
    use std::sync::atomic::Ordering::SeqCst;

    use crate::daemon::testing;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let names: Vec<String> = (1..=10).map(|i| format!("w-{i}")).collect();
    let nodes: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| {
            let role = if n == "w-1" {
                "control-plane"
            } else {
                "worker"
            };
            (n.as_str(), role, "linux")
        })
        .collect();
    let text = testing::hyperv_config(&state, &nodes, 1);
    let daemon = testing::daemon_over(dir.path(), &text, Hooked::new(Together::new(3)));
    for name in &names {
        std::fs::create_dir_all(state.join("nodes").join(name)).unwrap();
    }
    // Asked in turn, the first ask would wait for two more forever.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(20), daemon.observe())
        .await
        .expect("the status asks were not made together");
    assert_eq!(seen.len(), names.len());
    assert!(seen.iter().all(|(name, s)| *s == Together::running(name)));
    let most = daemon.driver.hooks.most.load(SeqCst);
    assert!(
        (3..=STATUS_ASKS).contains(&most),
        "{most} asks in flight at once"
    );
    // An ask whose task panicked is unknown: nothing is started or deleted on it.
    let asks = vec![
        ("boom".to_owned(), state.join("nodes/boom")),
        ("w-1".to_owned(), state.join("nodes/w-1")),
    ];
    let seen = daemon.statuses(asks).await;
    assert!(seen["boom"].is_unknown(), "{:?}", seen["boom"]);
    assert_eq!(seen["w-1"], Together::running("w-1"));
}

/// The watch loop asks its nodes' VMs together too, and each answer reaches its own node; a
/// VM in a generation no record names is stopped only when it is known to run.
#[tokio::test]
async fn the_watch_asks_together_and_strays_are_stopped_only_when_known_to_run() {
    use crate::daemon::testing;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let nodes = [
        ("w-1", "control-plane", "linux"),
        ("w-2", "worker", "linux"),
        ("w-3", "worker", "linux"),
    ];
    let text = testing::hyperv_config(&state, &nodes, 1);
    let mut daemon = testing::daemon_over(dir.path(), &text, Hooked::new(Together::new(3)));
    daemon.ensure_records().unwrap();
    for (name, _, _) in nodes {
        let tracked = daemon.tracked(name).unwrap().2;
        tracked.set(NodeState::Starting, "booting");
        tracked.set(NodeState::Ready, "");
        tracked.pid = 1;
    }
    daemon.driver.hooks.answer("w-2", VmStatus::Stopped);
    // Asked in turn, the first ask would wait for two more forever.
    tokio::time::timeout(std::time::Duration::from_secs(20), daemon.check())
        .await
        .expect("the watch did not ask together");
    assert_eq!(daemon.nodes["w-2"].state, NodeState::Exited);
    assert_eq!(daemon.nodes["w-1"].state, NodeState::Ready);
    assert_eq!(daemon.nodes["w-3"].state, NodeState::Ready);

    // A VM in generation 2 of w-3, whose record names generation 0.
    std::fs::create_dir_all(records::run_dir(&state, "w-3", 2)).unwrap();
    let observed = BTreeMap::from([("w-3".to_owned(), Observed::Running)]);
    daemon
        .driver
        .hooks
        .answer("w-3/gen-2", VmStatus::unknown("ssh: connection timed out"));
    daemon.stop_strays(&observed).await;
    assert!(daemon.strays.is_empty(), "stopped on a guess");
    daemon
        .driver
        .hooks
        .answer("w-3/gen-2", Together::running("w-3/gen-2"));
    daemon.stop_strays(&observed).await;
    assert!(daemon.strays.contains("w-3/gen-2"));
}

/// What a surge left of a generation its node no longer runs is removed again on a later pass:
/// one the hypervisor holds stays (and is tried again later, not on every pass), one it gives
/// back goes, the node's own and its record stay, and nothing is touched while a swap of the
/// node is in flight.
#[tokio::test]
async fn leftovers_of_a_generation_a_node_no_longer_runs_are_removed_on_a_later_pass() {
    use crate::driver::testing::HELD;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut daemon = mixed(dir.path());
    daemon.ensure_records().unwrap();
    daemon.records.get_mut("win-1").unwrap().generation = 3;
    let root = records::run_dir(&state, "win-1", 0);
    let (held, own) = (
        records::run_dir(&state, "win-1", 2),
        records::run_dir(&state, "win-1", 3),
    );
    for gen_dir in [&held, &own] {
        std::fs::create_dir_all(gen_dir).unwrap();
        std::fs::write(gen_dir.join("seed.img"), b"token").unwrap();
    }
    std::fs::write(held.join(HELD), b"").unwrap();
    std::fs::write(root.join("seed.img"), b"token").unwrap();
    let observed = BTreeMap::from([("win-1".to_owned(), Observed::Running)]);

    // A swap in flight owns every generation of its node.
    let swap = swap::Swap::plan(
        "win-1",
        "lab",
        Digest::repeated('a'),
        Digest::repeated('b'),
        0,
    );
    daemon.journal.swaps.insert("win-1".into(), swap);
    daemon.stop_strays(&observed).await;
    assert!(root.join("seed.img").exists() && held.is_dir());
    daemon.journal.swaps.remove("win-1");

    // One generation a pass: the held one first, then generation 0's files.
    daemon.stop_strays(&observed).await;
    assert!(root.join("seed.img").exists(), "one sweep a pass");
    daemon.stop_strays(&observed).await;
    assert!(!root.join("seed.img").exists(), "generation 0's files go");
    assert!(root.join("record").exists(), "the record stays");
    assert!(
        held.join("seed.img").exists(),
        "kept while the hypervisor holds it"
    );
    assert!(
        own.join("seed.img").exists(),
        "the node's own generation stays"
    );

    // Given back later: not tried again on the very next pass, but once its wait is over.
    std::fs::remove_file(held.join(HELD)).unwrap();
    daemon.stop_strays(&observed).await;
    assert!(held.is_dir(), "tried again only after a while");
    daemon.swept.clear();
    daemon.stop_strays(&observed).await;
    assert!(!held.exists());
    assert!(own.join("seed.img").exists() && root.join("record").exists());
}
