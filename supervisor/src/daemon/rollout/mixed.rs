//! One rollout per cluster over nodes of two OSes: each node moves to the target of its own
//! OS's channel (`[source] channel` for Linux, `windows-channel` for Windows), and
//! max-unavailable holds across both. A pure function of the two aims and the members, built on
//! [`plan::decide`] (which knows one target):
//!
//! - the Linux nodes are planned first, the Windows nodes seen as not behind (they still count
//!   against the budget when they swap or are not ready);
//! - then the Windows nodes, the Linux nodes seen as not behind and the Linux swaps that start
//!   now as in flight, so the two together never exceed max-unavailable;
//! - Windows nodes are workers: they start only once no control plane swaps or is behind the
//!   Linux target (unless the Linux rollout cannot move: failed, aborted or refused), and never
//!   to an image whose Kubernetes minor is above one a control plane of this host runs (a
//!   kubelet may not be newer than its API server);
//! - a cluster without Windows nodes is decided exactly as before there were two channels.
//!
//! The journal's aborted rollouts are keyed by cluster; a Windows abort is kept under
//! [`abort_key`] `CLUSTER/windows`, a name no cluster can have (cluster names are DNS labels),
//! so a journal from before reads as it did and one written now reads in an older slipwayd.

use crate::config::{NodeOs, Role, Rollout};
use crate::model::Digest;
use crate::swap::plan::{self, Decision, Holds, Member, State};

/// Where one OS's nodes of a cluster are rolled.
#[derive(Debug, Clone, Default)]
pub(in crate::daemon) struct Aim {
    /// The verified target of the OS's channel (None: none yet).
    pub target: Option<Digest>,
    /// The Kubernetes its manifest names.
    pub kubernetes: Option<String>,
    /// What holds it back: failed and aborted are the target's; paused and the window the
    /// cluster's.
    pub holds: Holds,
}

/// The key of the journal's aborted rollouts for `os`'s nodes of `cluster`.
pub(in crate::daemon) fn abort_key(cluster: &str, os: NodeOs) -> String {
    match os {
        NodeOs::Linux => cluster.to_owned(),
        NodeOs::Windows => format!("{cluster}/windows"),
    }
}

/// The decision for a cluster's `members` (each with its OS) under `policy`: the Linux nodes
/// aimed at `linux`, the Windows nodes at `windows` (None: the host follows no Windows channel).
pub(in crate::daemon) fn decide(
    policy: &Rollout,
    linux: &Aim,
    windows: Option<&Aim>,
    members: &[(NodeOs, Member)],
) -> Decision {
    let seen_by = |os: NodeOs, starting: &[String]| -> Vec<Member> {
        members
            .iter()
            .map(|(o, m)| {
                if *o == os {
                    m.clone()
                } else {
                    // Another OS's node is never behind this target, but it is down when it
                    // swaps (or starts to now) or is not ready.
                    Member {
                        image: None,
                        swapping: m.swapping || starting.contains(&m.name),
                        ..m.clone()
                    }
                }
            })
            .collect()
    };
    let has = |os: NodeOs| members.iter().any(|(o, _)| *o == os);
    let on_linux = plan::decide(
        policy,
        linux.target.as_ref(),
        linux.kubernetes.as_deref(),
        &linux.holds,
        &seen_by(NodeOs::Linux, &[]),
    );
    if !has(NodeOs::Windows) {
        return on_linux;
    }
    let no_channel = Aim::default();
    let windows = windows.unwrap_or(&no_channel);
    let mut on_windows = plan::decide(
        policy,
        windows.target.as_ref(),
        windows.kubernetes.as_deref(),
        &windows.holds,
        &seen_by(NodeOs::Windows, &on_linux.start),
    );
    if !on_windows.start.is_empty()
        && let Some(why) = control_planes_first(linux, &on_linux, windows, members)
    {
        let in_flight = members
            .iter()
            .any(|(o, m)| *o == NodeOs::Windows && m.swapping);
        on_windows = Decision {
            state: if in_flight {
                State::Rolling
            } else {
                State::Waiting
            },
            reason: why,
            start: Vec::new(),
        };
    }
    if !has(NodeOs::Linux) {
        return on_windows;
    }
    combine(on_linux, on_windows)
}

/// Why the Windows workers may not start now: a control plane swaps or is behind the Linux
/// target (and the Linux rollout can move), or runs a Kubernetes minor below the Windows
/// image's.
fn control_planes_first(
    linux: &Aim,
    on_linux: &Decision,
    windows: &Aim,
    members: &[(NodeOs, Member)],
) -> Option<String> {
    let control_planes = members
        .iter()
        .filter(|(os, m)| *os == NodeOs::Linux && m.role == Role::ControlPlane)
        .map(|(_, m)| m);
    let stuck = matches!(
        on_linux.state,
        State::Failed | State::Aborted | State::Refused
    );
    let behind: Vec<&str> = control_planes
        .clone()
        .filter(|m| {
            m.swapping
                || on_linux.start.contains(&m.name)
                || (!stuck
                    && m.image.is_some()
                    && linux.target.is_some()
                    && m.image != linux.target)
        })
        .map(|m| m.name.as_str())
        .collect();
    if !behind.is_empty() {
        return Some(format!(
            "the Windows workers wait for the control planes ({}) to move to the Linux image first",
            behind.join(", ")
        ));
    }
    let to = windows.kubernetes.as_deref()?;
    let (major, minor) = minor_of(to)?;
    control_planes
        .filter_map(|m| Some((m, m.kubernetes.as_deref()?)))
        .find(|(_, runs)| minor_of(runs).is_some_and(|v| v < (major, minor)))
        .map(|(m, runs)| {
            format!(
                "the Windows image carries Kubernetes {to}, newer than the {runs} that {} runs: a kubelet may not be newer than its API server (promote a Linux image of Kubernetes {major}.{minor} first and let it roll)",
                m.name
            )
        })
}

/// `X.Y` of a Kubernetes version `X.Y.Z` (a leading `v` allowed).
fn minor_of(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.strip_prefix('v').unwrap_or(version).split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// How much a state says about a rollout that has two parts: the first that either part is
/// in is the cluster's (anything moving shows as rolling).
const RANK: [State; 8] = [
    State::Rolling,
    State::Failed,
    State::Aborted,
    State::Refused,
    State::Paused,
    State::Waiting,
    State::Idle,
    State::Done,
];

/// The cluster's decision from its Linux and Windows parts: both parts' starts, the state that
/// says most, and each part's reason named by its OS.
fn combine(on_linux: Decision, on_windows: Decision) -> Decision {
    let mut start = on_linux.start.clone();
    start.extend(on_windows.start.iter().cloned());
    let state = if start.is_empty() {
        RANK.into_iter()
            .find(|s| *s == on_linux.state || *s == on_windows.state)
            .unwrap_or(on_linux.state)
    } else {
        State::Rolling
    };
    let reason = [(NodeOs::Linux, &on_linux), (NodeOs::Windows, &on_windows)]
        .into_iter()
        .filter(|(_, d)| !d.reason.is_empty())
        .map(|(os, d)| format!("{os} nodes {}: {}", d.state.as_str(), d.reason))
        .collect::<Vec<_>>()
        .join("; ");
    Decision {
        state,
        reason,
        start,
    }
}

#[cfg(test)]
mod tests;
