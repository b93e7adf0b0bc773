//! Tests of the rollout planned over a cluster of Linux and Windows nodes, on a supervisor
//! driven without VMs.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use images::manifest::Os;

use super::*;
use crate::daemon::testing::{self, put};
use crate::driver::testing::NoVms;
use crate::swap::journal;

/// cp-1 (Linux control plane), w-1 (Linux worker), win-1 and win-2 (Windows workers) of
/// cluster lab, max-unavailable 2, with images a, b (Linux) and c, d (Windows) in the store;
/// the channels name b and d (c and a before them) unless `old_channel` holds the Linux one.
/// cp-1 runs b, w-1 runs a, the Windows workers c; every node is ready.
async fn mixed(dir: &Path, before: impl FnOnce(&Path)) -> Daemon<NoVms> {
    let state = dir.join("state");
    let root = state.join("store");
    std::fs::create_dir_all(&root).unwrap();
    let d = Digest::repeated;
    let images = [
        put(&root, &d('a'), Os::Linux, "1"),
        put(&root, &d('b'), Os::Linux, "2"),
        put(&root, &d('c'), Os::Windows, "1"),
        put(&root, &d('d'), Os::Windows, "2"),
    ];
    before(&state);
    let nodes = [
        ("cp-1", "control-plane", "linux"),
        ("w-1", "worker", "linux"),
        ("win-1", "worker", "windows"),
        ("win-2", "worker", "windows"),
    ];
    let text = testing::hyperv_config(&state, &nodes, 2);
    let mut daemon = testing::daemon(dir, &text);
    if daemon.channels.linux.target.is_none() {
        for image in &images[..2] {
            daemon.channels.linux.pulled(Ok(image.clone()), 10).unwrap();
        }
    }
    let windows = daemon.channels.windows.as_mut().unwrap();
    for image in &images[2..] {
        windows.pulled(Ok(image.clone()), 10).unwrap();
    }
    daemon.ensure_records().unwrap();
    for (node, image) in [("cp-1", 'b'), ("w-1", 'a'), ("win-1", 'c'), ("win-2", 'c')] {
        daemon.set_record_image(node, &d(image)).unwrap();
        daemon.tracked(node).unwrap().2.state = NodeState::Ready;
    }
    // Workers wait for the fleet's view to show the control plane ready on the Linux target.
    daemon.report_to_fleet();
    for _ in 0..100 {
        if daemon
            .control_planes_first("lab", d('b').as_str())
            .is_none()
        {
            return daemon;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the fleet's view never showed cp-1 ready on b");
}

/// Marks `node`'s swap committed: its record names the swap's target, its slot is free.
async fn commit(daemon: &mut Daemon<NoVms>, node: &str) {
    let to = daemon.journal.swaps[node].to.clone();
    assert!(daemon.journal(|j| {
        j.swaps.remove(node);
    }));
    daemon.set_record_image(node, &to).unwrap();
    daemon.release_slot(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_cluster_swaps_each_node_to_its_own_oss_target_within_max_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = mixed(dir.path(), |_| {}).await;
    let d = Digest::repeated;
    // The Linux worker first, then a Windows worker: two down at most.
    assert_eq!(daemon.plan_swaps().await, ["w-1", "win-1"]);
    let swaps = &daemon.journal.swaps;
    assert_eq!((&swaps["w-1"].from, &swaps["w-1"].to), (&d('a'), &d('b')));
    assert_eq!(
        (&swaps["win-1"].from, &swaps["win-1"].to),
        (&d('c'), &d('d'))
    );
    assert_eq!(daemon.decisions["lab"].state, plan::State::Rolling);
    // Two in flight: nothing more starts.
    assert!(daemon.plan_swaps().await.is_empty());
    // One commits: the last Windows worker goes, to the Windows target.
    commit(&mut daemon, "w-1").await;
    assert_eq!(daemon.plan_swaps().await, ["win-2"]);
    assert_eq!(daemon.journal.swaps["win-2"].to, d('d'));

    // Status: the cluster's two targets, each node's own.
    let infos = daemon.rollout_infos();
    let lab = &infos[0];
    assert!(lab.target.ends_with(&d('b').to_string()), "{}", lab.target);
    assert!(
        lab.windows_target.starts_with("windows-node 2 sha256:ddd"),
        "{}",
        lab.windows_target
    );
    let target = |node: &str| {
        lab.nodes
            .iter()
            .find(|n| n.node == node)
            .map(|n| n.target.clone())
            .unwrap()
    };
    assert_eq!(target("win-2"), d('d').to_string());
    assert_eq!(target("w-1"), "", "on its target");
    commit(&mut daemon, "win-1").await;
    commit(&mut daemon, "win-2").await;
    assert!(daemon.plan_swaps().await.is_empty());
    assert_eq!(daemon.decisions["lab"].state, plan::State::Done);

    // An abort holds both targets in the cluster, each under its own key.
    daemon
        .control(RolloutControl::Abort {
            cluster: "lab".into(),
        })
        .await;
    assert_eq!(daemon.journal.aborted["lab"], d('b'));
    assert_eq!(daemon.journal.aborted["lab/windows"], d('d'));
    assert_eq!(
        daemon.image_for_new_nodes("lab", NodeOs::Windows),
        Some(d('c'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_and_a_channel_record_written_before_two_channels_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = Digest::repeated;
    // As a slipwayd of one channel wrote them: its channel record, and a journal whose
    // cluster lab aborted b.
    let write_old = |state: &Path| {
        crate::persist::write(
            &state.join("channel"),
            "channel",
            1,
            &serde_json::json!({ "target": d('b'), "previous": d('a'), "verified": 7 }),
        )
        .unwrap();
        crate::persist::write(
            &journal::path(state),
            journal::KIND,
            journal::VERSION,
            &serde_json::json!({
                "paused": false,
                "swaps": {},
                "last": {},
                "failed": {},
                "aborted": { "lab": d('b') },
            }),
        )
        .unwrap();
    };
    let mut daemon = mixed(dir.path(), write_old).await;
    assert_eq!(daemon.channels.linux.target_digest(), Some(d('b')));
    assert_eq!(daemon.channels.linux.previous, Some(d('a')));
    assert_eq!(daemon.channels.linux.verified, 7);
    // The old abort holds the Linux image in lab, not the Windows one.
    assert_eq!(daemon.plan_swaps().await, ["win-1", "win-2"]);
    let decision = &daemon.decisions["lab"];
    assert_eq!(decision.state, plan::State::Rolling);
    assert!(
        decision.reason.contains("linux nodes aborted"),
        "{}",
        decision.reason
    );
    // And the journal as written now reads back (an older slipwayd reads the same fields).
    let again = journal::Journal::load(&daemon.config.state_dir).unwrap();
    assert_eq!(again, daemon.journal);
}

/// A surge's replacement is named NAME-gN: for a Windows node that is its computer name, so a
/// name with no room for the suffix within 15 characters is refused, a shorter one is not.
#[tokio::test]
async fn a_windows_replacements_computer_name_must_fit_in_15_characters() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let nodes = [
        ("cp-1", "control-plane", "linux"),
        ("win-worker-0001", "worker", "windows"),
        ("win-wkr-01", "worker", "windows"),
    ];
    let mut daemon = testing::daemon(dir.path(), &testing::hyperv_config(&state, &nodes, 1));
    daemon.ensure_records().unwrap();
    let cluster = daemon.config.clusters["lab"].clone();
    let long = daemon.records["win-worker-0001"].clone();
    let why = daemon.replacement(&cluster, &long).err().unwrap();
    assert!(
        why.contains("win-worker-0001-g1 is longer than a Windows computer name's 15 characters"),
        "{why}"
    );
    let short = daemon.records["win-wkr-01"].clone();
    assert_eq!(daemon.replacement(&cluster, &short).unwrap().generation, 1);
}

/// A node whose os in host.toml is no longer its image's (here: its record names a Windows
/// image, the config says Linux) is left out of the rollout: no swap to the other OS's image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_os_changed_is_not_swapped_to_the_other_oss_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = mixed(dir.path(), |_| {}).await;
    let d = Digest::repeated;
    daemon.set_record_image("w-1", &d('c')).unwrap();
    assert_eq!(daemon.plan_swaps().await, ["win-1", "win-2"]);
    assert!(!daemon.journal.swaps.contains_key("w-1"));
}

/// A surge's old generation whose VM the hypervisor cannot give back keeps its directory (so no
/// later generation is made over its disks) and does not stop the swap; one it gives back goes.
#[tokio::test]
async fn a_generation_the_hypervisor_holds_keeps_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let nodes = [
        ("cp-1", "control-plane", "linux"),
        ("win-1", "worker", "windows"),
    ];
    let mut daemon = testing::daemon(dir.path(), &testing::hyperv_config(&state, &nodes, 1));
    daemon.ensure_records().unwrap();
    let (held, free) = (
        records::run_dir(&state, "win-1", 2),
        records::run_dir(&state, "win-1", 3),
    );
    for gen_dir in [&held, &free] {
        std::fs::create_dir_all(gen_dir).unwrap();
    }
    std::fs::write(held.join(crate::driver::testing::HELD), b"").unwrap();
    daemon.remove_generation("win-1", 2).await.unwrap();
    daemon.remove_generation("win-1", 3).await.unwrap();
    assert!(held.is_dir(), "kept while the hypervisor holds its VM");
    assert!(!free.exists());
}
