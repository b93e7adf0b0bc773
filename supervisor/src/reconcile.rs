//! What to do, as a pure function of what is wanted (the host config's nodes), what is
//! recorded (each node's record: the image it runs), what the channel offers (its verified
//! image) and what is seen (the VM directories found, running or not). No side effects here:
//! the daemon carries the actions out and rebuilds this view on every pass, so a restart of
//! slipwayd changes nothing.
//!
//! The image rule: a node that has booted once (its record names an image) always starts on
//! that image, whatever the channel says now; only a rolling swap changes it. A node that never
//! booted takes the channel's verified image.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Digest;

/// What is seen of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Its VM runs.
    Running,
    /// It has a directory (disks) but no VM.
    Stopped,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Boot the node on `image` (it is wanted and not running).
    Start {
        /// The node.
        node: String,
        /// The image it boots: its record's, or the channel's for a node that never booted.
        image: Digest,
    },
    /// Wanted and not running, but there is no image for it yet: the node never booted and
    /// the channel has no verified image.
    Wait {
        /// The node.
        node: String,
    },
    /// Nothing: wanted and running.
    Keep {
        /// The node.
        node: String,
        /// The image its record says it runs (None: a VM started before node records).
        image: Option<Digest>,
    },
    /// Stop the VM: no longer wanted. Its state disk stays until an explicit purge.
    Stop {
        /// The node.
        node: String,
    },
}

/// The actions that bring `observed` to `wanted`, in a stable order (stops first, so a renamed
/// node never runs twice). `images` holds each recorded node's image; `fresh` the image each
/// node would take if it never booted (the channel's verified image, unless it failed on this
/// host or was aborted in the node's cluster).
/// A node in `swapping` gets no action: its swap in the rollout journal owns its VM until the
/// swap ends.
pub fn decide(
    wanted: &BTreeSet<String>,
    images: &BTreeMap<String, Digest>,
    fresh: &BTreeMap<String, Digest>,
    observed: &BTreeMap<String, Observed>,
    swapping: &BTreeSet<String>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (name, state) in observed {
        if swapping.contains(name) {
            continue;
        }
        if !wanted.contains(name) && *state == Observed::Running {
            actions.push(Action::Stop { node: name.clone() });
        }
    }
    for name in wanted.iter().filter(|n| !swapping.contains(*n)) {
        let recorded = images.get(name);
        match observed.get(name) {
            Some(Observed::Running) => actions.push(Action::Keep {
                node: name.clone(),
                image: recorded.cloned(),
            }),
            Some(Observed::Stopped) | None => match recorded.or_else(|| fresh.get(name)) {
                Some(image) => actions.push(Action::Start {
                    node: name.clone(),
                    image: image.clone(),
                }),
                None => actions.push(Action::Wait { node: name.clone() }),
            },
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn seen(states: &[(&str, Observed)]) -> BTreeMap<String, Observed> {
        states.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
    }

    fn digest(c: char) -> Digest {
        Digest::repeated(c)
    }

    /// The image every node of these tests would take if it never booted.
    fn every(image: char) -> BTreeMap<String, Digest> {
        ["cp-1", "worker-1", "worker-2", "worker-9", "old"]
            .iter()
            .map(|n| ((*n).to_owned(), digest(image)))
            .collect()
    }

    fn recorded(nodes: &[(&str, char)]) -> BTreeMap<String, Digest> {
        nodes
            .iter()
            .map(|(n, c)| ((*n).to_owned(), digest(*c)))
            .collect()
    }

    #[test]
    fn a_fresh_host_starts_every_node_on_the_channel_image() {
        let actions = decide(
            &set(&["cp-1", "worker-1"]),
            &BTreeMap::new(),
            &every('a'),
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        assert_eq!(
            actions,
            [
                Action::Start {
                    node: "cp-1".into(),
                    image: digest('a')
                },
                Action::Start {
                    node: "worker-1".into(),
                    image: digest('a')
                }
            ]
        );
    }

    #[test]
    fn a_node_that_booted_restarts_on_its_recorded_image_whatever_the_channel_says() {
        // The channel moved to b; worker-1 exited; cp-1 runs a. Neither moves to b, and a new
        // node takes b.
        let actions = decide(
            &set(&["cp-1", "worker-1", "worker-2"]),
            &recorded(&[("cp-1", 'a'), ("worker-1", 'a')]),
            &every('b'),
            &seen(&[("cp-1", Observed::Running), ("worker-1", Observed::Stopped)]),
            &BTreeSet::new(),
        );
        assert_eq!(
            actions,
            [
                Action::Keep {
                    node: "cp-1".into(),
                    image: Some(digest('a'))
                },
                Action::Start {
                    node: "worker-1".into(),
                    image: digest('a')
                },
                Action::Start {
                    node: "worker-2".into(),
                    image: digest('b')
                },
            ]
        );
    }

    #[test]
    fn without_a_channel_image_recorded_nodes_start_and_only_new_ones_wait() {
        let actions = decide(
            &set(&["cp-1", "worker-9"]),
            &recorded(&[("cp-1", 'a')]),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        assert_eq!(
            actions,
            [
                Action::Start {
                    node: "cp-1".into(),
                    image: digest('a')
                },
                Action::Wait {
                    node: "worker-9".into()
                }
            ]
        );
    }

    #[test]
    fn a_removed_node_is_stopped_first_and_a_stopped_leftover_is_ignored() {
        let actions = decide(
            &set(&["cp-1"]),
            &recorded(&[("cp-1", 'a'), ("worker-9", 'a'), ("old", 'a')]),
            &every('a'),
            &seen(&[
                ("cp-1", Observed::Running),
                ("worker-9", Observed::Running),
                ("old", Observed::Stopped),
            ]),
            &BTreeSet::new(),
        );
        assert_eq!(
            actions,
            [
                Action::Stop {
                    node: "worker-9".into()
                },
                Action::Keep {
                    node: "cp-1".into(),
                    image: Some(digest('a'))
                }
            ]
        );
    }

    #[test]
    fn deciding_twice_on_the_result_changes_nothing() {
        let wanted = set(&["cp-1", "worker-1"]);
        let images = recorded(&[("cp-1", 'a'), ("worker-1", 'a')]);
        let after = seen(&[("cp-1", Observed::Running), ("worker-1", Observed::Running)]);
        let actions = decide(&wanted, &images, &every('b'), &after, &BTreeSet::new());
        assert!(
            actions.iter().all(|a| matches!(a, Action::Keep { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn a_node_a_swap_owns_gets_no_action_running_or_not() {
        // cp-1 is being swapped (its VM stopped for the new disk): no start on its recorded
        // image behind the swap's back, and worker-9, removed but swapping, is not stopped.
        let actions = decide(
            &set(&["cp-1", "worker-1"]),
            &recorded(&[("cp-1", 'a'), ("worker-1", 'a'), ("worker-9", 'a')]),
            &every('b'),
            &seen(&[
                ("cp-1", Observed::Stopped),
                ("worker-1", Observed::Running),
                ("worker-9", Observed::Running),
            ]),
            &set(&["cp-1", "worker-9"]),
        );
        assert_eq!(
            actions,
            [Action::Keep {
                node: "worker-1".into(),
                image: Some(digest('a'))
            }]
        );
    }

    #[test]
    fn a_new_node_takes_the_image_its_own_cluster_may_have_or_waits() {
        // worker-1's cluster may take b; worker-2's aborted b and has no other: it waits.
        let fresh = BTreeMap::from([("worker-1".to_owned(), digest('b'))]);
        let actions = decide(
            &set(&["worker-1", "worker-2"]),
            &BTreeMap::new(),
            &fresh,
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        assert_eq!(
            actions,
            [
                Action::Start {
                    node: "worker-1".into(),
                    image: digest('b')
                },
                Action::Wait {
                    node: "worker-2".into()
                }
            ]
        );
    }
}
