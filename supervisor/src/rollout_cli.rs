//! `slipwayd rollout status`: the rollouts as tables, and `--follow`: one line per change
//! between two answers and the decision when following ends. The formatting and the decision
//! are pure functions of the answers; only [`status`] talks to the supervisor.

use anyhow::bail;

use crate::api::{self, RolloutInfo, RolloutStatus};

/// A rollout's header line: `rollout CLUSTER: STATE → TARGET (REASON)`.
fn header(r: &RolloutInfo) -> String {
    let target = if r.target.is_empty() {
        "no target"
    } else {
        &r.target
    };
    if r.reason.is_empty() {
        format!("rollout {}: {} → {target}", r.cluster, r.state)
    } else {
        format!(
            "rollout {}: {} → {target} ({})",
            r.cluster, r.state, r.reason
        )
    }
}

/// `slipwayd rollout status` as tables for people: per cluster a header line, then one row
/// per node. `now` (Unix seconds) makes the SINCE column.
pub fn table(status: &RolloutStatus, now: i64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if status.paused {
        let _ = writeln!(
            out,
            "rollouts paused: no new swap starts (slipwayd rollout resume)"
        );
    }
    if status.rollouts.is_empty() {
        let _ = writeln!(out, "no rollout: no cluster has nodes on this host yet");
    }
    for r in &status.rollouts {
        let _ = writeln!(out, "{}", header(r));
        let _ = writeln!(
            out,
            "  {:<12} {:<14} {:<24} {:<16} {:>8}  REASON",
            "NODE", "ROLE", "CURRENT", "STEP", "SINCE"
        );
        for n in &r.nodes {
            let since = if n.since == 0 {
                "-".to_owned()
            } else {
                format!("{}s ago", (now - n.since).max(0))
            };
            let _ = writeln!(
                out,
                "  {:<12} {:<14} {:<24} {:<16} {:>8}  {}",
                n.node,
                if n.role.is_empty() { "-" } else { &n.role },
                n.current,
                if n.step.is_empty() { "-" } else { &n.step },
                since,
                n.reason
            );
        }
        for slot in &r.slots {
            let _ = writeln!(
                out,
                "  fleet slot {}: node {} on host {}, {}s ago",
                slot.index,
                slot.node,
                slot.host,
                (now - slot.since).max(0)
            );
        }
        if !r.fleet_problem.is_empty() {
            let _ = writeln!(out, "  fleet: {}", r.fleet_problem);
        }
    }
    out
}

/// How often `rollout status --follow` asks.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// `slipwayd rollout status`: asks the supervisor on `bus` once and prints the tables (or
/// JSON); with `follow`, asks every [`FOLLOW_INTERVAL`], prints each change and returns when
/// [`follow_end`] says so (an error for a failed or aborted rollout) or `timeout` seconds pass.
/// Before the first answer a missing supervisor is an error unless `timeout` is given; after
/// it, one that goes away (a restart) is waited for.
pub async fn status(
    bus: Option<&str>,
    json: bool,
    follow: bool,
    target: Option<&str>,
    timeout: Option<u64>,
) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let mut client: Option<api::Client> = None;
    let mut last: Option<RolloutStatus> = None;
    let mut unanswered = false;
    loop {
        let answer = match &client {
            Some(c) => c.rollout().await,
            None => match api::Client::connect(bus).await {
                Ok(c) => client.insert(c).rollout().await,
                Err(e) => Err(e),
            },
        };
        match answer {
            Ok(status) => {
                unanswered = false;
                match (&last, json) {
                    (_, true) if !follow => println!("{}", serde_json::to_string_pretty(&status)?),
                    (Some(before), true) if *before == status => {}
                    (_, true) => println!("{}", serde_json::to_string(&status)?),
                    (None, false) => print!("{}", table(&status, api::unix_now())),
                    (Some(before), false) => {
                        for line in changes(before, &status, api::unix_now()) {
                            println!("{line}");
                        }
                    }
                }
                if !follow {
                    return Ok(());
                }
                match follow_end(&status, target) {
                    FollowEnd::Wait => {}
                    FollowEnd::Done => return Ok(()),
                    FollowEnd::Failed(why) => bail!("{why}"),
                }
                last = Some(status);
            }
            // Before the first answer, fail at once unless told how long to wait; after it,
            // ride out a supervisor restart.
            Err(e) if !follow || (last.is_none() && deadline.is_none()) => return Err(e),
            Err(e) => {
                client = None;
                if !unanswered {
                    println!("{} {e:#}", clock(api::unix_now()));
                    unanswered = true;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!(
                "gave up after {} s waiting for {}; raise --timeout, or see slipwayd rollout status and the supervisor's log",
                timeout.unwrap_or_default(),
                waited_for(last.as_ref(), target)
            );
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// `unix` (seconds) as HH:MM:SS, UTC.
fn clock(unix: i64) -> String {
    let day = unix.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// Where a node is being moved, for a follow line: the rollout target's version (with its
/// name when that differs from the current image's), or the digest when the node's target
/// is not the rollout's.
fn destination(rollout: &RolloutInfo, node: &api::SwapInfo) -> String {
    let mut target = rollout.target.split_whitespace();
    match (target.next(), target.next(), target.next()) {
        (Some(name), Some(version), Some(digest)) if digest == node.target => {
            if node.current.split_whitespace().next() == Some(name) {
                version.to_owned()
            } else {
                format!("{name} {version}")
            }
        }
        _ => node.target.clone(),
    }
}

/// A follow line for `node` of `rollout`, e.g.
/// `06:12:03 lab cp-1 stopping: powering down (tiny-linux 2026.11.0 → 2026.12.0)`.
fn node_line(time: &str, rollout: &RolloutInfo, node: &api::SwapInfo) -> String {
    let step = if node.step.is_empty() {
        "no swap"
    } else {
        &node.step
    };
    let reason = if node.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", node.reason)
    };
    let image = if node.target.is_empty() {
        node.current.clone()
    } else {
        format!("{} → {}", node.current, destination(rollout, node))
    };
    format!(
        "{time} {} {} {step}{reason} ({image})",
        rollout.cluster, node.node
    )
}

/// The lines `rollout status --follow` prints between two answers, stamped `now` (Unix
/// seconds): one per change of the pause, of a rollout's state, target or reason, and of a
/// node's step, reason or image; clusters and nodes that came or went too.
fn changes(before: &RolloutStatus, after: &RolloutStatus, now: i64) -> Vec<String> {
    let time = clock(now);
    let mut lines = Vec::new();
    if before.paused != after.paused {
        let what = if after.paused {
            "paused: no new swap starts"
        } else {
            "resumed"
        };
        lines.push(format!("{time} rollouts {what}"));
    }
    for r in &after.rollouts {
        let old = before.rollouts.iter().find(|o| o.cluster == r.cluster);
        if old.is_none_or(|o| (&o.state, &o.target, &o.reason) != (&r.state, &r.target, &r.reason))
        {
            lines.push(format!("{time} {}", header(r)));
        }
        for n in &r.nodes {
            let was = old.and_then(|o| o.nodes.iter().find(|m| m.node == n.node));
            if was.is_none_or(|m| {
                (&m.step, &m.reason, &m.current) != (&n.step, &n.reason, &n.current)
            }) {
                lines.push(node_line(&time, r, n));
            }
        }
        for m in old.iter().flat_map(|o| &o.nodes) {
            if !r.nodes.iter().any(|n| n.node == m.node) {
                lines.push(format!("{time} {} {} left the rollout", r.cluster, m.node));
            }
        }
    }
    for o in &before.rollouts {
        if !after.rollouts.iter().any(|r| r.cluster == o.cluster) {
            lines.push(format!(
                "{time} rollout {}: gone (no node of it on this host)",
                o.cluster
            ));
        }
    }
    lines
}

/// Whether `rollout status --follow` ends on `status`.
#[derive(Debug, PartialEq, Eq)]
enum FollowEnd {
    /// Not yet.
    Wait,
    /// Every rollout ended well (exit 0).
    Done,
    /// Every rollout ended, one or more failed or were aborted (exit 1 with this message).
    Failed(String),
}

/// Whether following ends on `status`: when every cluster's rollout is in a final state (done,
/// failed, aborted, refused; paused too without `target`) and, with `target`, targets that version. No
/// rollout at all is waited for (a supervisor that just started has not planned them yet).
fn follow_end(status: &RolloutStatus, target: Option<&str>) -> FollowEnd {
    let ended = |r: &RolloutInfo| match r.state.as_str() {
        "done" | "failed" | "aborted" | "refused" => true,
        "paused" => target.is_none(),
        _ => false,
    };
    // A version names the Linux nodes' target or the Windows nodes'.
    let aims = |r: &RolloutInfo| {
        target.is_none_or(|v| {
            [&r.target, &r.windows_target]
                .iter()
                .any(|t| format!(" {t} ").contains(&format!(" {v} ")))
        })
    };
    if status.rollouts.is_empty() || !status.rollouts.iter().all(|r| ended(r) && aims(r)) {
        return FollowEnd::Wait;
    }
    let failed: Vec<String> = status
        .rollouts
        .iter()
        .filter(|r| matches!(r.state.as_str(), "failed" | "aborted" | "refused"))
        .map(|r| {
            let why = if r.reason.is_empty() {
                &r.state
            } else {
                &r.reason
            };
            format!("rollout of {} failed: {why}", r.cluster)
        })
        .collect();
    if failed.is_empty() {
        FollowEnd::Done
    } else {
        FollowEnd::Failed(failed.join("; "))
    }
}

/// What following waited for, and where it stood, for the timeout's message.
fn waited_for(last: Option<&RolloutStatus>, target: Option<&str>) -> String {
    let goal = match target {
        Some(v) => format!("every cluster's rollout to reach {v} and end"),
        None => "every cluster's rollout to end".to_owned(),
    };
    let now = match last {
        None => "slipwayd never answered".to_owned(),
        Some(s) if s.rollouts.is_empty() => "no rollout yet".to_owned(),
        Some(s) => s.rollouts.iter().map(header).collect::<Vec<_>>().join("; "),
    };
    format!("{goal} (now: {now})")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::api::tests::lab;
    use api::SwapInfo;

    /// 06:12:03 UTC on some day.
    const T: i64 = 1_795_000_000 - 1_795_000_000 % 86_400 + 6 * 3600 + 12 * 60 + 3;

    fn node(name: &str, step: &str, reason: &str) -> SwapInfo {
        SwapInfo {
            node: name.into(),
            role: "worker".into(),
            current: "tiny-linux 2026.11.0".into(),
            current_digest: "sha256:11".into(),
            target: "sha256:12".into(),
            step: step.into(),
            reason: reason.into(),
            since: T,
        }
    }

    fn rollout(cluster: &str, state: &str, version: &str, nodes: Vec<SwapInfo>) -> RolloutInfo {
        RolloutInfo {
            cluster: cluster.into(),
            state: state.into(),
            target: format!("tiny-linux {version} sha256:12"),
            reason: String::new(),
            nodes,
            ..RolloutInfo::default()
        }
    }

    fn answer(rollouts: Vec<RolloutInfo>) -> RolloutStatus {
        RolloutStatus {
            paused: false,
            rollouts,
        }
    }

    #[test]
    fn the_clock_is_utc_hours_minutes_seconds() {
        assert_eq!(clock(T), "06:12:03");
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock(-1), "23:59:59");
    }

    #[test]
    fn each_change_is_one_line_and_an_unchanged_answer_none() {
        let before = answer(vec![rollout(
            "lab",
            "rolling",
            "2026.12.0",
            vec![node("cp-1", "drained", ""), node("w-1", "", "")],
        )]);
        assert_eq!(changes(&before, &before, T), Vec::<String>::new());

        let mut after = before.clone();
        after.rollouts[0].nodes[0].step = "stopping".into();
        after.rollouts[0].nodes[0].reason = "powering down".into();
        assert_eq!(
            changes(&before, &after, T),
            ["06:12:03 lab cp-1 stopping: powering down (tiny-linux 2026.11.0 → 2026.12.0)"]
        );

        // A node that reached the target: its image changes, it has nowhere left to go.
        let mut moved = after.clone();
        moved.rollouts[0].nodes[0] = SwapInfo {
            current: "tiny-linux 2026.12.0".into(),
            current_digest: "sha256:12".into(),
            target: String::new(),
            step: "committed".into(),
            ..after.rollouts[0].nodes[0].clone()
        };
        moved.rollouts[0].state = "failed".into();
        moved.rollouts[0].reason = "w-1 rolled back: no beacon".into();
        moved.rollouts[0].nodes.pop();
        moved.paused = true;
        assert_eq!(
            changes(&after, &moved, T),
            [
                "06:12:03 rollouts paused: no new swap starts",
                "06:12:03 rollout lab: failed → tiny-linux 2026.12.0 sha256:12 (w-1 rolled back: no beacon)",
                "06:12:03 lab cp-1 committed: powering down (tiny-linux 2026.12.0)",
                "06:12:03 lab w-1 left the rollout",
            ]
        );

        // A cluster that appears is shown whole; one that goes is said to be gone.
        let other = answer(vec![rollout(
            "edge",
            "waiting",
            "2026.12.0",
            vec![node("e-1", "", "")],
        )]);
        assert_eq!(
            changes(&before, &other, T),
            [
                "06:12:03 rollout edge: waiting → tiny-linux 2026.12.0 sha256:12",
                "06:12:03 edge e-1 no swap (tiny-linux 2026.11.0 → 2026.12.0)",
                "06:12:03 rollout lab: gone (no node of it on this host)",
            ]
        );
    }

    #[test]
    fn a_node_bound_elsewhere_shows_its_own_target() {
        let mut r = rollout("lab", "rolling", "2026.12.0", vec![]);
        let mut n = node("cp-1", "rolling-back", "");
        n.target = "sha256:10".into();
        assert_eq!(
            node_line("t", &r, &n),
            "t lab cp-1 rolling-back (tiny-linux 2026.11.0 → sha256:10)"
        );
        r.target = "other-linux 2026.12.0 sha256:12".into();
        n.target = "sha256:12".into();
        assert_eq!(
            node_line("t", &r, &n),
            "t lab cp-1 rolling-back (tiny-linux 2026.11.0 → other-linux 2026.12.0)"
        );
    }

    #[test]
    fn following_ends_when_every_rollout_has_ended() {
        let end = |rollouts, target| follow_end(&answer(rollouts), target);
        // Nothing planned yet: wait.
        assert_eq!(end(vec![], None), FollowEnd::Wait);
        // One still rolling: wait, whatever the other did.
        let rolling = rollout("edge", "rolling", "2026.12.0", vec![]);
        let done = rollout("lab", "done", "2026.12.0", vec![]);
        assert_eq!(end(vec![done.clone(), rolling], None), FollowEnd::Wait);
        assert_eq!(end(vec![done.clone()], None), FollowEnd::Done);
        assert_eq!(end(vec![done.clone()], Some("2026.12.0")), FollowEnd::Done);
        // Done, but on another version than the one asked for: wait for that one.
        assert_eq!(end(vec![done.clone()], Some("2026.13.0")), FollowEnd::Wait);
        // A version is matched whole, not as a prefix.
        assert_eq!(end(vec![done.clone()], Some("2026.12")), FollowEnd::Wait);
        // ... and may be the Windows nodes' target.
        let mut mixed = done.clone();
        mixed.windows_target = "windows-node 2026.12.1 sha256:34".into();
        assert_eq!(end(vec![mixed.clone()], Some("2026.12.1")), FollowEnd::Done);
        assert_eq!(end(vec![mixed], Some("2026.12.2")), FollowEnd::Wait);
        // Paused ends only without a target.
        let paused = rollout("lab", "paused", "2026.12.0", vec![]);
        assert_eq!(end(vec![paused.clone()], None), FollowEnd::Done);
        assert_eq!(end(vec![paused], Some("2026.12.0")), FollowEnd::Wait);
        for state in ["waiting", "idle"] {
            let r = rollout("lab", state, "2026.12.0", vec![]);
            assert_eq!(end(vec![r], None), FollowEnd::Wait, "{state}");
        }
        // Failed and aborted end it with exit 1, naming the cluster and the reason.
        let mut failed = rollout("lab", "failed", "2026.12.0", vec![]);
        failed.reason = "cp-1 rolled back: no beacon".into();
        let aborted = rollout("edge", "aborted", "2026.12.0", vec![]);
        assert_eq!(
            end(vec![failed, aborted], Some("2026.12.0")),
            FollowEnd::Failed(
                "rollout of lab failed: cp-1 rolled back: no beacon; rollout of edge failed: aborted"
                    .into()
            )
        );
    }

    #[test]
    fn the_timeout_says_what_it_waited_for() {
        let lab = answer(vec![rollout("lab", "waiting", "2026.11.0", vec![])]);
        assert_eq!(
            waited_for(Some(&lab), Some("2026.12.0")),
            "every cluster's rollout to reach 2026.12.0 and end (now: rollout lab: waiting → tiny-linux 2026.11.0 sha256:12)"
        );
        assert_eq!(
            waited_for(None, None),
            "every cluster's rollout to end (now: slipwayd never answered)"
        );
    }

    /// `rollout status --follow` against a real service: it ends at once on a done rollout,
    /// fails naming the cluster on a failed one, follows a change to the end, and gives up
    /// at --timeout saying what it waited for.
    #[tokio::test]
    async fn following_a_real_supervisor_ends_as_its_rollouts_do() {
        let bus = ::tests::dbus::Bus::start();
        let shared = api::Shared::default();
        let _service = api::Service::start(
            Some(&bus.address),
            shared.clone(),
            Box::new(|| true),
            Box::new(|_| true),
            Box::new(|_| true),
        )
        .await
        .unwrap();
        let set = |r: RolloutInfo| shared.lock().rollouts = vec![r];
        let follow =
            |target, timeout| super::status(Some(&bus.address), false, true, target, Some(timeout));
        set(rollout("lab", "done", "2026.12.0", vec![]));
        follow(Some("2026.12.0"), 5).await.unwrap();

        let mut failed = rollout("lab", "failed", "2026.12.0", vec![]);
        failed.reason = "cp-1 rolled back: no beacon".into();
        set(failed);
        let e = follow(Some("2026.12.0"), 5).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "rollout of lab failed: cp-1 rolled back: no beacon"
        );

        set(rollout("lab", "rolling", "2026.12.0", vec![]));
        let started = std::time::Instant::now();
        let e = follow(None, 1).await.unwrap_err();
        assert!(
            e.to_string().starts_with("gave up after 1 s waiting for every cluster's rollout to end (now: rollout lab: rolling"),
            "{e}"
        );
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));

        let later = {
            let shared = shared.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(800)).await;
                shared.lock().rollouts = vec![rollout("lab", "done", "2026.12.0", vec![])];
            }
        };
        let (followed, ()) = tokio::join!(follow(Some("2026.12.0"), 10), later);
        followed.unwrap();
    }

    #[test]
    fn the_rollout_table_has_a_header_per_cluster_and_a_row_per_node() {
        let status = RolloutStatus {
            paused: true,
            rollouts: vec![lab()],
        };
        let text = table(&status, 1_042);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "rollouts paused: no new swap starts (slipwayd rollout resume)"
        );
        assert_eq!(
            lines[1],
            "rollout lab: rolling → tiny-linux 2026.12.0 sha256:12 (swapping cp-1)"
        );
        let row = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(row(lines[2]), "NODE ROLE CURRENT STEP SINCE REASON");
        assert_eq!(
            row(lines[3]),
            "cp-1 control-plane tiny-linux 2026.11.0 stopping 42s ago powering down"
        );
        assert_eq!(row(lines[4]), "w-1 worker tiny-linux 2026.11.0 - -");
        assert_eq!(lines.len(), 5);
        let mut spread = lab();
        spread.slots.push(crate::api::SlotInfo {
            index: 0,
            host: "hci-02".into(),
            node: "w-3".into(),
            since: 1_000,
        });
        spread.fleet_problem = "the fleet lock store is unreachable".into();
        let text = table(
            &RolloutStatus {
                paused: false,
                rollouts: vec![spread],
            },
            1_042,
        );
        assert!(
            text.ends_with(
                "  fleet slot 0: node w-3 on host hci-02, 42s ago\n  fleet: the fleet lock store is unreachable\n"
            ),
            "{text}"
        );
        let idle = RolloutInfo {
            cluster: "edge".into(),
            state: "idle".into(),
            ..RolloutInfo::default()
        };
        assert_eq!(header(&idle), "rollout edge: idle → no target");
    }
}
