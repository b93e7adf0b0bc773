//! Whether a host may take a slot: a pure function of what the store holds.

use std::collections::BTreeSet;
use std::fmt;

use super::{ClusterView, Holder};

/// Why a slot was not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Taking it would put more nodes down than max-unavailable allows.
    Budget {
        /// The nodes already counted against the budget.
        unavailable: BTreeSet<String>,
        /// The budget.
        max_unavailable: u32,
    },
    /// The node is a control plane and another control plane is down, swapping or unreported:
    /// control planes go one at a time across hosts (their etcd members keep quorum).
    ControlPlane {
        /// The other control planes counted down.
        down: BTreeSet<String>,
    },
    /// The node already holds a slot under someone else's lease (a previous run of this host
    /// whose lease has not expired yet, or another host): wait for it to go.
    HeldElsewhere(Holder),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Budget {
                unavailable,
                max_unavailable,
            } => {
                let down: Vec<&str> = unavailable.iter().map(String::as_str).collect();
                write!(
                    f,
                    "{} down, swapping or unreported (max-unavailable {max_unavailable})",
                    down.join(", ")
                )
            }
            Refusal::ControlPlane { down } => {
                let down: Vec<&str> = down.iter().map(String::as_str).collect();
                write!(
                    f,
                    "control plane {} is down, swapping or unreported: control planes go one at a time",
                    down.join(", ")
                )
            }
            Refusal::HeldElsewhere(h) => write!(
                f,
                "node {} already holds slot {} for host {} since {} (until its lease expires)",
                h.node, h.index, h.host, h.since
            ),
        }
    }
}

/// What [`decide`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Take the slot with this number.
    Take(u32),
    /// Do not take one now.
    Refuse(Refusal),
}

/// Whether `node` may take a slot under `max_unavailable`, and which: only if the nodes
/// counted against the budget ([`ClusterView::unavailable`]), with `node` itself, are at most
/// max-unavailable. Slots are numbered `0..max_unavailable`; a slot numbered beyond (a host
/// with a larger budget in its config) still counts its node.
pub fn decide(view: &ClusterView, node: &str, max_unavailable: u32) -> Verdict {
    if let Some(holder) = view.slots.values().find(|h| h.node == node) {
        return Verdict::Refuse(Refusal::HeldElsewhere(holder.clone()));
    }
    let unavailable = view.unavailable();
    if view.control_planes.contains(node) {
        let down: BTreeSet<String> = unavailable
            .iter()
            .filter(|n| *n != node && view.control_planes.contains(*n))
            .cloned()
            .collect();
        if !down.is_empty() {
            return Verdict::Refuse(Refusal::ControlPlane { down });
        }
    }
    let mut after = unavailable.clone();
    after.insert(node.to_owned());
    let within = u32::try_from(after.len()).is_ok_and(|n| n <= max_unavailable);
    let free = (0..max_unavailable).find(|i| !view.slots.contains_key(i));
    match free {
        Some(index) if within => Verdict::Take(index),
        _ => Verdict::Refuse(Refusal::Budget {
            unavailable,
            max_unavailable,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Health, NodeStatus};
    use super::*;

    fn status(host: &str, health: Health) -> NodeStatus {
        NodeStatus {
            host: host.into(),
            health,
            since: 0,
            image: String::new(),
            control_plane: false,
        }
    }

    fn holder(index: u32, host: &str, node: &str) -> Holder {
        Holder {
            index,
            host: host.into(),
            node: node.into(),
            since: 0,
        }
    }

    /// Three hosts, one node each, all ready.
    fn healthy() -> ClusterView {
        let mut view = ClusterView::default();
        for (host, node) in [("h1", "n1"), ("h2", "n2"), ("h3", "n3")] {
            view.members.insert(node.into(), host.into());
            view.statuses
                .insert(node.into(), status(host, Health::Ready));
        }
        view
    }

    #[test]
    fn a_free_slot_within_budget_is_taken() {
        assert_eq!(decide(&healthy(), "n1", 1), Verdict::Take(0));
    }

    #[test]
    fn a_held_slot_uses_the_budget() {
        let mut view = healthy();
        view.slots.insert(0, holder(0, "h2", "n2"));
        assert!(matches!(
            decide(&view, "n1", 1),
            Verdict::Refuse(Refusal::Budget { .. })
        ));
        assert_eq!(decide(&view, "n1", 2), Verdict::Take(1));
    }

    #[test]
    fn a_node_not_ready_counts_whoever_held_its_slot() {
        let mut view = healthy();
        view.statuses
            .insert("n2".into(), status("h2", Health::NotReady));
        let Verdict::Refuse(Refusal::Budget { unavailable, .. }) = decide(&view, "n1", 1) else {
            panic!("a not-ready node must spend the budget");
        };
        assert_eq!(unavailable, BTreeSet::from(["n2".to_owned()]));
    }

    #[test]
    fn a_node_nobody_vouches_for_counts_as_down() {
        // h2 died mid-swap: its slot and its status went with its lease; n2 is still a member.
        let mut view = healthy();
        view.statuses.remove("n2");
        assert!(matches!(decide(&view, "n1", 1), Verdict::Refuse(_)));
        assert_eq!(decide(&view, "n1", 2), Verdict::Take(0));
    }

    #[test]
    fn a_node_already_down_may_take_a_slot_for_itself() {
        // Its own unavailability is not added twice: n1 not ready, budget 1, it may swap.
        let mut view = healthy();
        view.statuses
            .insert("n1".into(), status("h1", Health::NotReady));
        assert_eq!(decide(&view, "n1", 1), Verdict::Take(0));
    }

    #[test]
    fn a_node_holding_a_slot_under_another_lease_waits() {
        let mut view = healthy();
        view.slots.insert(0, holder(0, "h1", "n1"));
        assert!(matches!(
            decide(&view, "n1", 3),
            Verdict::Refuse(Refusal::HeldElsewhere(_))
        ));
    }

    #[test]
    fn slots_beyond_the_budget_still_count() {
        let mut view = healthy();
        view.slots.insert(4, holder(4, "h2", "n2"));
        assert!(matches!(decide(&view, "n1", 1), Verdict::Refuse(_)));
    }

    #[test]
    fn control_planes_go_one_at_a_time_whatever_the_budget() {
        // n1 and n2 are control planes on two hosts; n2's host died mid-swap (no status).
        let mut view = healthy();
        view.control_planes
            .extend(["n1".to_owned(), "n2".to_owned()]);
        view.statuses.remove("n2");
        let Verdict::Refuse(Refusal::ControlPlane { down }) = decide(&view, "n1", 3) else {
            panic!("a second control plane must not go down");
        };
        assert_eq!(down, BTreeSet::from(["n2".to_owned()]));
        // A worker may, within the budget.
        assert_eq!(decide(&view, "n3", 3), Verdict::Take(0));
        // A control plane holding a slot blocks the other as well.
        let mut view = healthy();
        view.control_planes
            .extend(["n1".to_owned(), "n2".to_owned()]);
        view.slots.insert(0, holder(0, "h2", "n2"));
        assert!(matches!(
            decide(&view, "n1", 3),
            Verdict::Refuse(Refusal::ControlPlane { .. })
        ));
    }
}
