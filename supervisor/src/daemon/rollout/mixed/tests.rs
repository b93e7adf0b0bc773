//! Tests of the rollout over a cluster of Linux and Windows nodes.

use super::*;
use crate::swap::plan::member;

/// cp-1 (Linux, on the Linux target b), w-1 and w-2 (Linux, on a), win-1 and win-2 (Windows,
/// on c; their target is d).
fn mixed() -> Vec<(NodeOs, Member)> {
    vec![
        (NodeOs::Linux, member("cp-1", Role::ControlPlane, 'b')),
        (NodeOs::Linux, member("w-1", Role::Worker, 'a')),
        (NodeOs::Linux, member("w-2", Role::Worker, 'a')),
        (NodeOs::Windows, member("win-1", Role::Worker, 'c')),
        (NodeOs::Windows, member("win-2", Role::Worker, 'c')),
    ]
}

fn aim(target: char) -> Aim {
    Aim {
        target: Some(Digest::repeated(target)),
        kubernetes: None,
        holds: Holds {
            window_open: true,
            ..Holds::default()
        },
    }
}

fn policy(max_unavailable: u32) -> Rollout {
    Rollout {
        max_unavailable,
        ..Rollout::default()
    }
}

/// Plays the rollout to its end: every pass starts what the decision says, and the swaps
/// started one pass commit the next (each onto its own OS's target). Returns the nodes started
/// at each pass, checking that no pass has more than `max` nodes down.
fn play(
    max: u32,
    members: &mut [(NodeOs, Member)],
    linux: &Aim,
    windows: &Aim,
) -> Vec<Vec<String>> {
    let mut passes = Vec::new();
    for _ in 0..10 {
        // The swaps in flight commit.
        for (os, m) in members.iter_mut().filter(|(_, m)| m.swapping) {
            let aim = if *os == NodeOs::Linux { linux } else { windows };
            m.image.clone_from(&aim.target);
            m.swapping = false;
        }
        let d = decide(&policy(max), linux, Some(windows), members);
        if d.state == State::Done {
            return passes;
        }
        assert!(d.start.len() <= usize::try_from(max).unwrap(), "{d:?}");
        for (_, m) in members
            .iter_mut()
            .filter(|(_, m)| d.start.contains(&m.name))
        {
            assert!(!m.swapping);
            m.swapping = true;
        }
        passes.push(d.start);
    }
    panic!("the rollout never ended: {members:?}");
}

#[test]
fn each_member_moves_to_its_own_oss_target_within_one_budget() {
    let (linux, windows) = (aim('b'), aim('d'));
    let mut members = mixed();
    // Linux workers first in the budget, then the Windows workers in what is left.
    let d = decide(&policy(3), &linux, Some(&windows), &members);
    assert_eq!(d.state, State::Rolling);
    assert_eq!(d.start, ["w-1", "w-2", "win-1"]);
    let passes = play(2, &mut members, &linux, &windows);
    assert_eq!(
        passes,
        [vec!["w-1", "w-2"], vec!["win-1", "win-2"]],
        "two at a time across both OSes"
    );
    for (os, m) in &members {
        let want = if *os == NodeOs::Linux { 'b' } else { 'd' };
        assert_eq!(m.image, Some(Digest::repeated(want)), "{}", m.name);
    }
    // One at a time: never a Linux and a Windows node down together.
    let mut members = mixed();
    let passes = play(1, &mut members, &linux, &windows);
    assert_eq!(passes, [["w-1"], ["w-2"], ["win-1"], ["win-2"]]);
    // A Linux node that is not ready takes the budget of the Windows nodes too.
    let mut members = mixed();
    members[1].1.image = Some(Digest::repeated('b'));
    members[2].1.image = Some(Digest::repeated('b'));
    members[2].1.ready = false;
    let d = decide(&policy(1), &linux, Some(&windows), &members);
    assert!(d.start.is_empty(), "{d:?}");
    assert_eq!(d.state, State::Waiting);
    assert!(
        d.reason.contains("windows nodes waiting: w-2 not ready"),
        "{}",
        d.reason
    );
}

#[test]
fn a_cluster_without_windows_nodes_is_decided_as_with_one_channel() {
    let linux = aim('b');
    let members: Vec<(NodeOs, Member)> = mixed()
        .into_iter()
        .filter(|(os, _)| *os == NodeOs::Linux)
        .collect();
    let plain: Vec<Member> = members.iter().map(|(_, m)| m.clone()).collect();
    for windows in [None, Some(&aim('d'))] {
        for max in [1, 2, 5] {
            assert_eq!(
                decide(&policy(max), &linux, windows, &members),
                plan::decide(
                    &policy(max),
                    linux.target.as_ref(),
                    None,
                    &linux.holds,
                    &plain
                )
            );
        }
    }
    // No Linux target yet: idle, as before.
    let none = Aim::default();
    assert_eq!(decide(&policy(1), &none, None, &members).state, State::Idle);
}

#[test]
fn windows_workers_wait_for_the_control_planes() {
    let (linux, windows) = (aim('b'), aim('d'));
    let mut members = mixed();
    for (_, m) in &mut members {
        if m.name.starts_with("w-") {
            m.image = Some(Digest::repeated('b'));
        }
    }
    // The control plane is behind the Linux target: it moves first, alone.
    members[0].1.image = Some(Digest::repeated('a'));
    let d = decide(&policy(3), &linux, Some(&windows), &members);
    assert_eq!(d.start, ["cp-1"]);
    // Not ready to move (here: not ready), the Windows workers still wait for it.
    members[0].1.ready = false;
    let d = decide(&policy(3), &linux, Some(&windows), &members);
    assert!(d.start.is_empty(), "{d:?}");
    assert!(
        d.reason
            .contains("the Windows workers wait for the control planes (cp-1)"),
        "{}",
        d.reason
    );
    // A Linux image that failed will not move the control plane: the Windows workers go.
    members[0].1.ready = true;
    let failed = Aim {
        holds: Holds {
            failed: Some("linux-node 2 failed on cp-1: no beacon".into()),
            ..linux.holds.clone()
        },
        ..linux.clone()
    };
    let d = decide(&policy(3), &failed, Some(&windows), &members);
    assert_eq!(d.start, ["win-1", "win-2"]);
    assert_eq!(d.state, State::Rolling);
    assert!(d.reason.starts_with("linux nodes failed: "), "{}", d.reason);
    // On the Linux target, but on an older Kubernetes minor than the Windows image's.
    members[0].1.image = Some(Digest::repeated('b'));
    members[0].1.kubernetes = Some("1.32.10".into());
    let newer = Aim {
        kubernetes: Some("1.33.1".into()),
        ..windows.clone()
    };
    let d = decide(&policy(3), &linux, Some(&newer), &members);
    assert!(d.start.is_empty(), "{d:?}");
    assert!(
        d.reason
            .contains("Kubernetes 1.33.1, newer than the 1.32.10 that cp-1 runs"),
        "{}",
        d.reason
    );
    let same = Aim {
        kubernetes: Some("1.32.12".into()),
        ..windows.clone()
    };
    assert_eq!(
        decide(&policy(3), &linux, Some(&same), &members).start,
        ["win-1", "win-2"]
    );
}

#[test]
fn each_oss_holds_and_states_are_its_own_and_the_cluster_shows_the_one_that_says_most() {
    let (linux, windows) = (aim('b'), aim('d'));
    let mut members = mixed();
    for (_, m) in &mut members {
        if m.name.starts_with("w-") {
            m.image = Some(Digest::repeated('b'));
        }
    }
    // The Windows image aborted in this cluster: the Linux nodes are done, the cluster aborted.
    let aborted = Aim {
        holds: Holds {
            aborted: true,
            ..windows.holds.clone()
        },
        ..windows.clone()
    };
    let d = decide(&policy(2), &linux, Some(&aborted), &members);
    assert_eq!((d.state, d.start.len()), (State::Aborted, 0));
    assert_eq!(d.reason, "windows nodes aborted: aborted by an operator");
    // No Windows channel (or no verified Windows image): idle until there is one.
    let d = decide(&policy(2), &linux, None, &members);
    assert_eq!(d.state, State::Idle);
    assert_eq!(d.reason, "windows nodes idle: no verified image yet");
    // Every node on its own target: done.
    for (_, m) in &mut members {
        if m.name.starts_with("win-") {
            m.image = Some(Digest::repeated('d'));
        }
    }
    let d = decide(&policy(2), &linux, Some(&windows), &members);
    assert_eq!((d.state, d.reason.as_str()), (State::Done, ""));
    assert_eq!(abort_key("lab", NodeOs::Linux), "lab");
    assert_eq!(abort_key("lab", NodeOs::Windows), "lab/windows");
}
