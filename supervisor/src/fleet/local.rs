//! `none`: one host alone. Slots and statuses live in memory; the count is this host's nodes.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    ClusterView, Error, Holder, Holding, NodeReport, NodeStatus, Slot, Slots, Take, Verdict,
    check_name, decide, unix_now,
};

/// Slots in memory for a host alone.
#[derive(Debug)]
pub struct LocalSlots {
    host: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    clusters: BTreeMap<String, ClusterView>,
    /// Stands in for etcd's revision: each slot taken gets a new one.
    revision: i64,
    /// The revision each held slot was taken at, by (cluster, index).
    revisions: BTreeMap<(String, u32), i64>,
}

impl LocalSlots {
    /// Slots for `host`.
    pub fn new(host: &str) -> LocalSlots {
        LocalSlots {
            host: host.to_owned(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (each change is one insert or remove).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slots for LocalSlots {
    fn take(&self, cluster: &str, node: &str, max_unavailable: u32) -> Result<Take, Error> {
        check_name("cluster", cluster)?;
        check_name("node", node)?;
        let mut state = self.state();
        let state = &mut *state;
        let view = state.clusters.entry(cluster.to_owned()).or_default();
        if let Some(h) = view.slots.values().find(|h| h.node == node) {
            let index = h.index;
            let revision = state
                .revisions
                .get(&(cluster.to_owned(), index))
                .copied()
                .unwrap_or(0);
            return Ok(Take::Taken(Slot {
                cluster: cluster.to_owned(),
                node: node.to_owned(),
                index,
                lease: 0,
                revision,
            }));
        }
        match decide(view, node, max_unavailable) {
            Verdict::Refuse(refusal) => Ok(Take::Refused(refusal)),
            Verdict::Take(index) => {
                state.revision += 1;
                view.slots.insert(
                    index,
                    Holder {
                        index,
                        host: self.host.clone(),
                        node: node.to_owned(),
                        since: unix_now(),
                    },
                );
                state
                    .revisions
                    .insert((cluster.to_owned(), index), state.revision);
                Ok(Take::Taken(Slot {
                    cluster: cluster.to_owned(),
                    node: node.to_owned(),
                    index,
                    lease: 0,
                    revision: state.revision,
                }))
            }
        }
    }

    fn check(&self, slot: &Slot) -> Holding {
        let state = self.state();
        let held = state
            .revisions
            .get(&(slot.cluster.clone(), slot.index))
            .is_some_and(|r| *r == slot.revision);
        if held {
            Holding::Held
        } else {
            Holding::Lost {
                reason: format!(
                    "slot {} of cluster {} was released",
                    slot.index, slot.cluster
                ),
            }
        }
    }

    fn release(&self, slot: &Slot) -> Result<(), Error> {
        let mut state = self.state();
        let key = (slot.cluster.clone(), slot.index);
        if state.revisions.get(&key) == Some(&slot.revision) {
            state.revisions.remove(&key);
            if let Some(view) = state.clusters.get_mut(&slot.cluster) {
                view.slots.remove(&slot.index);
            }
        }
        Ok(())
    }

    fn view(&self, cluster: &str) -> Result<ClusterView, Error> {
        Ok(self
            .state()
            .clusters
            .get(cluster)
            .cloned()
            .unwrap_or_default())
    }

    fn publish(&self, cluster: &str, reports: &[NodeReport]) -> Result<(), Error> {
        check_name("cluster", cluster)?;
        let mut state = self.state();
        let view = state.clusters.entry(cluster.to_owned()).or_default();
        for report in reports {
            check_name("node", &report.node)?;
            view.members.insert(report.node.clone(), self.host.clone());
            if report.control_plane {
                view.control_planes.insert(report.node.clone());
            } else {
                view.control_planes.remove(&report.node);
            }
            let since = match view.statuses.get(&report.node) {
                Some(s) if s.health == report.health => s.since,
                _ => unix_now(),
            };
            view.statuses.insert(
                report.node.clone(),
                NodeStatus {
                    host: self.host.clone(),
                    health: report.health,
                    since,
                    image: report.image.clone(),
                    control_plane: report.control_plane,
                },
            );
        }
        Ok(())
    }

    fn retire(&self, cluster: &str, node: &str) -> Result<(), Error> {
        if let Some(view) = self.state().clusters.get_mut(cluster) {
            view.members.remove(node);
            view.control_planes.remove(node);
            view.statuses.remove(node);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Health;
    use super::*;

    fn ready(node: &str) -> NodeReport {
        NodeReport {
            node: node.into(),
            health: Health::Ready,
            image: String::new(),
            control_plane: false,
        }
    }

    #[test]
    fn one_slot_at_a_time_then_the_next() {
        let slots = LocalSlots::new("h1");
        slots.publish("c", &[ready("n1"), ready("n2")]).unwrap();
        let Take::Taken(first) = slots.take("c", "n1", 1).unwrap() else {
            panic!("a free slot must be taken");
        };
        assert!(matches!(
            slots.take("c", "n2", 1).unwrap(),
            Take::Refused(_)
        ));
        // Taking again for the same node gives the same slot (a resumed swap).
        assert_eq!(
            slots.take("c", "n1", 1).unwrap(),
            Take::Taken(first.clone())
        );
        assert!(matches!(slots.check(&first), Holding::Held));
        slots.release(&first).unwrap();
        assert!(matches!(slots.check(&first), Holding::Lost { .. }));
        let Take::Taken(second) = slots.take("c", "n2", 1).unwrap() else {
            panic!("the released slot must be free");
        };
        // The old holder's stale slot does not pass for the new one.
        assert_ne!(first.revision, second.revision);
        assert!(matches!(slots.check(&first), Holding::Lost { .. }));
        assert_eq!(slots.view("c").unwrap().slots[&0].node, "n2");
    }

    #[test]
    fn a_node_down_holds_the_budget_without_a_slot() {
        let slots = LocalSlots::new("h1");
        let down = NodeReport {
            health: Health::Down,
            ..ready("n2")
        };
        slots.publish("c", &[ready("n1"), down]).unwrap();
        assert!(matches!(
            slots.take("c", "n1", 1).unwrap(),
            Take::Refused(_)
        ));
        // Removed from host.toml: it stops counting.
        slots.retire("c", "n2").unwrap();
        assert!(matches!(slots.take("c", "n1", 1).unwrap(), Take::Taken(_)));
    }

    #[test]
    fn backend_none_opens_local_slots() {
        let slots = super::super::open("h1", &crate::config::Fleet::None);
        assert!(matches!(slots.take("c", "n1", 1).unwrap(), Take::Taken(_)));
        assert!(matches!(
            slots.take("c", "n2", 1).unwrap(),
            Take::Refused(_)
        ));
    }

    #[test]
    fn names_that_are_not_labels_are_refused() {
        let slots = LocalSlots::new("h1");
        assert!(matches!(
            slots.take("c", "../x", 1),
            Err(Error::InvalidName { what: "node", .. })
        ));
    }
}
