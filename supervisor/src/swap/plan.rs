//! Which nodes of a cluster swap next: a pure function of the rollout policy, the image the
//! channel names, the journal and the nodes as they are now.
//!
//! The rules:
//! - only a node that booted (its record names an image) and runs another image than the
//!   target moves; a node already on it never swaps again;
//! - an image that failed on this host, or whose rollout an operator aborted in the cluster,
//!   is not rolled (a newer promotion starts a new rollout);
//! - nothing new starts while paused or outside the maintenance window;
//! - control-plane nodes go first, one at a time, the cluster's initialiser first of them
//!   (it runs `kubeadm upgrade apply`, the others `kubeadm upgrade node`), then workers (the
//!   order kubeadm upgrades need);
//! - a target whose Kubernetes is more than one minor version above what a node runs, or a
//!   minor version below it, is refused before any swap (kubeadm upgrades one minor at a time
//!   and never downgrades one); patch versions move freely;
//! - at most max-unavailable nodes are down at once: a node swapping counts, and so does any
//!   node that is not ready, whoever is to blame; only a ready node is picked.

use std::collections::BTreeSet;

use crate::config::{Role, Rollout};
use crate::model::Digest;

/// One node of the cluster as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The image its record names (None: never booted).
    pub image: Option<Digest>,
    /// Whether it is ready now.
    pub ready: bool,
    /// Whether a swap of it is in flight.
    pub swapping: bool,
    /// Whether it initialised its cluster (its upgrade is `kubeadm upgrade apply`).
    pub initialises: bool,
    /// The Kubernetes version it runs (`1.32.10`): its image's, or the cluster's configured
    /// one when its image names none. None: no Kubernetes (the version rule does not apply).
    pub kubernetes: Option<String>,
}

/// Where a cluster's rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// No verified image to roll.
    Idle,
    /// Every node runs the target.
    Done,
    /// A swap is in flight, or one starts now.
    Rolling,
    /// Nodes still need the target, but none may start now (the reason says why).
    Waiting,
    /// Paused by an operator.
    Paused,
    /// The target failed on this host.
    Failed,
    /// An operator aborted the target's rollout in this cluster.
    Aborted,
    /// The target cannot be rolled to these nodes (a Kubernetes version skew kubeadm refuses).
    Refused,
}

impl State {
    /// Its name in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Done => "done",
            State::Rolling => "rolling",
            State::Waiting => "waiting",
            State::Paused => "paused",
            State::Failed => "failed",
            State::Aborted => "aborted",
            State::Refused => "refused",
        }
    }
}

/// What the plan decided for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Where the rollout is.
    pub state: State,
    /// Why, when it is not rolling or done.
    pub reason: String,
    /// The nodes whose swap starts now.
    pub start: Vec<String>,
}

/// What holds the target back, as the journal and the operator decided.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    /// Paused by an operator.
    /// Why rollouts are paused (an operator, a host failure); None: not paused.
    pub paused: Option<String>,
    /// Why the target failed on this host, if it did.
    pub failed: Option<String>,
    /// Whether an operator aborted this target's rollout in this cluster.
    pub aborted: bool,
    /// Whether the maintenance window is open now.
    pub window_open: bool,
}

/// The decision for a cluster with `members` under `policy`, the channel naming `target`,
/// whose manifest says it carries Kubernetes `kubernetes` (None: none, or not known).
pub fn decide(
    policy: &Rollout,
    target: Option<&Digest>,
    kubernetes: Option<&str>,
    holds: &Holds,
    members: &[Member],
) -> Decision {
    let wait = |state: State, reason: String| Decision {
        state,
        reason,
        start: Vec::new(),
    };
    let Some(target) = target else {
        return wait(State::Idle, "no verified image yet".into());
    };
    let in_flight = members.iter().filter(|m| m.swapping).count();
    let behind: Vec<&Member> = members
        .iter()
        .filter(|m| !m.swapping && m.image.as_ref().is_some_and(|i| i != target))
        .collect();
    if let Some(why) = &holds.failed {
        return wait(State::Failed, why.clone());
    }
    if holds.aborted {
        return wait(State::Aborted, "aborted by an operator".into());
    }
    if behind.is_empty() {
        return if in_flight > 0 {
            wait(State::Rolling, String::new())
        } else {
            wait(State::Done, String::new())
        };
    }
    let rolling_or = |state: State, reason: String| {
        if in_flight > 0 {
            wait(State::Rolling, reason)
        } else {
            wait(state, reason)
        }
    };
    if let Some(to) = kubernetes
        && let Err(why) = kubernetes_skew(to, &behind)
    {
        return rolling_or(State::Refused, why);
    }
    if let Some(why) = &holds.paused {
        return rolling_or(State::Paused, why.clone());
    }
    if !holds.window_open {
        let window = policy
            .window
            .map_or_else(String::new, |w| format!(" ({w})"));
        return rolling_or(
            State::Waiting,
            format!("outside the maintenance window{window}"),
        );
    }
    // Control planes first, one at a time; workers once every control plane is on the target.
    let control_plane_moving = members
        .iter()
        .any(|m| m.swapping && m.role == Role::ControlPlane);
    let control_planes_behind = behind.iter().any(|m| m.role == Role::ControlPlane);
    let candidates: Vec<&Member> = if control_planes_behind {
        if control_plane_moving {
            return wait(State::Rolling, String::new());
        }
        let mut control_planes: Vec<&Member> = behind
            .iter()
            .filter(|m| m.role == Role::ControlPlane)
            .copied()
            .collect();
        // The initialiser first: its `kubeadm upgrade apply` moves the cluster before the other
        // control planes' `kubeadm upgrade node` (a stable sort keeps the others' order).
        control_planes.sort_by_key(|m| !m.initialises);
        control_planes.truncate(1);
        control_planes
    } else if control_plane_moving {
        return wait(State::Rolling, String::new());
    } else {
        behind.clone()
    };
    let unavailable: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.swapping || !m.ready)
        .map(|m| m.name.as_str())
        .collect();
    let budget = usize::try_from(policy.max_unavailable)
        .unwrap_or(usize::MAX)
        .saturating_sub(unavailable.len());
    let start: Vec<String> = candidates
        .iter()
        .filter(|m| m.ready)
        .take(budget)
        .map(|m| m.name.clone())
        .collect();
    if start.is_empty() {
        let down: Vec<&str> = unavailable.into_iter().collect();
        let reason = if down.is_empty() {
            "no node to move is ready".to_owned()
        } else {
            format!(
                "{} not ready (max-unavailable {})",
                down.join(", "),
                policy.max_unavailable
            )
        };
        return rolling_or(State::Waiting, reason);
    }
    Decision {
        state: State::Rolling,
        reason: String::new(),
        start,
    }
}

/// A Kubernetes version `X.Y.Z` (a leading `v` allowed) as (major, minor, patch).
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.strip_prefix('v').unwrap_or(text).split('.');
    let mut next = || parts.next()?.parse::<u64>().ok();
    let version = (next()?, next()?, next()?);
    parts.next().is_none().then_some(version)
}

/// Whether every node of `behind` can move to Kubernetes `to` by swap: kubeadm upgrades one
/// minor version at a time and never downgrades a minor; patch versions move either way.
/// The error names the first node that cannot, and what to promote instead.
fn kubernetes_skew(to: &str, behind: &[&Member]) -> Result<(), String> {
    let (major, minor, _) = parse_version(to).ok_or_else(|| {
        format!(
            "refused before any swap: the image's Kubernetes version {to:?} is not X.Y.Z (fix the recipe's `kubernetes`)"
        )
    })?;
    for member in behind {
        let Some(from) = member.kubernetes.as_deref() else {
            continue;
        };
        let Some((from_major, from_minor, _)) = parse_version(from) else {
            return Err(format!(
                "refused before any swap: {} runs Kubernetes {from:?}, not X.Y.Z",
                member.name
            ));
        };
        if major != from_major || minor < from_minor {
            return Err(format!(
                "refused before any swap: the image carries Kubernetes {to}, older than the {from} that {} runs; kubeadm cannot downgrade a minor version (promote an image of Kubernetes {from_major}.{from_minor} or newer)",
                member.name
            ));
        }
        if minor > from_minor.saturating_add(1) {
            return Err(format!(
                "refused before any swap: the image carries Kubernetes {to}, more than one minor version above the {from} that {} runs; kubeadm upgrades one minor at a time (promote an image of Kubernetes {from_major}.{} first and let it roll)",
                member.name,
                from_minor.saturating_add(1)
            ));
        }
    }
    Ok(())
}

/// A ready member `name` on the image of digest `image` repeated (tests).
#[cfg(test)]
pub(crate) fn member(name: &str, role: Role, image: char) -> Member {
    Member {
        name: name.into(),
        role,
        image: Some(Digest::repeated(image)),
        ready: true,
        swapping: false,
        initialises: false,
        kubernetes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Vec<Member> {
        vec![
            member("cp-1", Role::ControlPlane, 'a'),
            member("cp-2", Role::ControlPlane, 'a'),
            member("w-1", Role::Worker, 'a'),
            member("w-2", Role::Worker, 'a'),
        ]
    }

    fn open() -> Holds {
        Holds {
            window_open: true,
            ..Holds::default()
        }
    }

    #[test]
    fn control_planes_move_first_one_at_a_time_then_workers_within_the_budget() {
        let b = Digest::repeated('b');
        let policy = Rollout {
            max_unavailable: 2,
            ..Rollout::default()
        };
        let mut nodes = cluster();
        let d = decide(&policy, Some(&b), None, &open(), &nodes);
        assert_eq!(
            (d.state, d.start.clone()),
            (State::Rolling, vec!["cp-1".into()])
        );
        nodes[0].swapping = true;
        // Budget left, but a second control plane never moves beside the first.
        assert!(
            decide(&policy, Some(&b), None, &open(), &nodes)
                .start
                .is_empty()
        );
        nodes[0].swapping = false;
        nodes[0].image = Some(b.clone());
        nodes[1].image = Some(b.clone());
        let d = decide(&policy, Some(&b), None, &open(), &nodes);
        assert_eq!(d.start, vec!["w-1".to_owned(), "w-2".to_owned()]);
        // A node that is not ready takes a slot, whoever is to blame.
        nodes[1].ready = false;
        let d = decide(&policy, Some(&b), None, &open(), &nodes);
        assert_eq!(d.start, vec!["w-1".to_owned()]);
        nodes[2].swapping = true;
        let d = decide(&policy, Some(&b), None, &open(), &nodes);
        assert_eq!(d.state, State::Rolling);
        assert!(d.start.is_empty());
        assert!(d.reason.contains("cp-2, w-1 not ready"), "{}", d.reason);
        for n in &mut nodes {
            n.image = Some(b.clone());
            n.swapping = false;
        }
        assert_eq!(
            decide(&policy, Some(&b), None, &open(), &nodes).state,
            State::Done
        );
    }

    #[test]
    fn a_failed_aborted_paused_or_closed_rollout_starts_nothing_and_says_why() {
        let b = Digest::repeated('b');
        let policy = Rollout::default();
        let nodes = cluster();
        let failed = Holds {
            failed: Some("cp-1: no healthy beacon within 300 s".into()),
            ..open()
        };
        let d = decide(&policy, Some(&b), None, &failed, &nodes);
        assert_eq!(d.state, State::Failed);
        assert!(d.start.is_empty() && d.reason.contains("cp-1"));
        let aborted = Holds {
            aborted: true,
            ..open()
        };
        assert_eq!(
            decide(&policy, Some(&b), None, &aborted, &nodes).state,
            State::Aborted
        );
        let paused = Holds {
            paused: Some("paused by an operator".into()),
            ..open()
        };
        assert_eq!(
            decide(&policy, Some(&b), None, &paused, &nodes).state,
            State::Paused
        );
        let night = Rollout {
            window: Some(crate::config::Window::parse("02:00-04:00").unwrap()),
            ..Rollout::default()
        };
        let d = decide(&night, Some(&b), None, &Holds::default(), &nodes);
        assert_eq!(d.state, State::Waiting);
        assert!(d.reason.contains("02:00-04:00 UTC"), "{}", d.reason);
        assert_eq!(
            decide(&policy, None, None, &open(), &nodes).state,
            State::Idle
        );
        // A node that never booted is not behind: it boots the channel's image anyway.
        let fresh = vec![Member {
            image: None,
            ..member("w-9", Role::Worker, 'a')
        }];
        assert_eq!(
            decide(&policy, Some(&b), None, &open(), &fresh).state,
            State::Done
        );
    }

    fn on_kubernetes(version: &str) -> Vec<Member> {
        let mut nodes = cluster();
        for n in &mut nodes {
            n.kubernetes = Some(version.into());
        }
        nodes
    }

    #[test]
    fn one_kubernetes_minor_up_or_any_patch_rolls_and_the_initialiser_goes_first() {
        let b = Digest::repeated('b');
        let policy = Rollout::default();
        let mut nodes = on_kubernetes("1.32.10");
        // cp-2 initialised the cluster: it upgrades first (`kubeadm upgrade apply`), whatever
        // the names' order.
        nodes[1].initialises = true;
        for to in ["1.33.0", "1.32.11", "1.32.9", "1.32.10"] {
            let d = decide(&policy, Some(&b), Some(to), &open(), &nodes);
            assert_eq!(
                (d.state, d.start.clone()),
                (State::Rolling, vec!["cp-2".to_owned()]),
                "to {to}: {}",
                d.reason
            );
        }
        // Half-way through a minor upgrade: the rest follow.
        nodes[1].image = Some(b.clone());
        nodes[1].kubernetes = Some("1.33.0".into());
        let d = decide(&policy, Some(&b), Some("1.33.0"), &open(), &nodes);
        assert_eq!(d.start, vec!["cp-1".to_owned()]);
        // A node of an image that carries no Kubernetes is not held to the rule.
        let mut tiny = cluster();
        tiny[0].kubernetes = None;
        let d = decide(&policy, Some(&b), Some("1.40.0"), &open(), &tiny);
        assert_eq!(d.state, State::Rolling);
    }

    #[test]
    fn two_minors_up_or_a_minor_down_is_refused_before_any_swap_with_what_to_do() {
        let b = Digest::repeated('b');
        let policy = Rollout::default();
        let nodes = on_kubernetes("1.32.10");
        let d = decide(&policy, Some(&b), Some("1.34.1"), &open(), &nodes);
        assert_eq!(d.state, State::Refused);
        assert!(d.start.is_empty());
        assert!(
            d.reason.contains("1.34.1")
                && d.reason.contains("1.32.10")
                && d.reason.contains("cp-1")
                && d.reason.contains("one minor at a time")
                && d.reason.contains("Kubernetes 1.33 first"),
            "{}",
            d.reason
        );
        let d = decide(&policy, Some(&b), Some("v1.31.14"), &open(), &nodes);
        assert_eq!(d.state, State::Refused);
        assert!(
            d.reason.contains("cannot downgrade a minor") && d.reason.contains("1.32 or newer"),
            "{}",
            d.reason
        );
        // One node left behind on an older minor holds the whole rollout.
        let mut mixed = on_kubernetes("1.33.0");
        mixed[3].kubernetes = Some("1.32.10".into());
        let d = decide(&policy, Some(&b), Some("1.34.0"), &open(), &mixed);
        assert_eq!(d.state, State::Refused);
        assert!(d.reason.contains("w-2"), "{}", d.reason);
        // A swap in flight (the channel moved under it) still shows as rolling, with the reason.
        mixed[0].swapping = true;
        let d = decide(&policy, Some(&b), Some("1.35.0"), &open(), &mixed);
        assert_eq!(d.state, State::Rolling);
        assert!(
            d.start.is_empty() && d.reason.contains("refused"),
            "{}",
            d.reason
        );
        let d = decide(&policy, Some(&b), Some("latest"), &open(), &nodes);
        assert_eq!(d.state, State::Refused);
        assert!(d.reason.contains("not X.Y.Z"), "{}", d.reason);
        assert_eq!(State::Refused.as_str(), "refused");
    }
}
