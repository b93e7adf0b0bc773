//! What to do, as a pure function of what is wanted (the host config) and what is seen (the VMs
//! found in the state directory, running or not). No side effects here: the supervision loop
//! (`run`) carries the actions out and rebuilds this view on every pass, so a restart of
//! slipwayd changes nothing.

use std::collections::{BTreeMap, BTreeSet};

/// What is seen of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Its QEMU runs.
    Running,
    /// It has a directory (disks) but no QEMU.
    Stopped,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Boot the node (it is wanted and not running).
    Start(String),
    /// Nothing: wanted and running.
    Keep(String),
    /// Stop the VM: no longer wanted. Its state disk stays until an explicit purge.
    Stop(String),
}

/// The actions that bring `observed` to `wanted`, in a stable order (stops first, so a renamed
/// node never runs twice).
pub fn decide(wanted: &BTreeSet<String>, observed: &BTreeMap<String, Observed>) -> Vec<Action> {
    let mut actions = Vec::new();
    for (name, state) in observed {
        if !wanted.contains(name) && *state == Observed::Running {
            actions.push(Action::Stop(name.clone()));
        }
    }
    for name in wanted {
        match observed.get(name) {
            Some(Observed::Running) => actions.push(Action::Keep(name.clone())),
            Some(Observed::Stopped) | None => actions.push(Action::Start(name.clone())),
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn seen(states: &[(&str, Observed)]) -> BTreeMap<String, Observed> {
        states.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
    }

    #[test]
    fn a_fresh_host_starts_every_node() {
        let actions = decide(&set(&["cp-1", "worker-1"]), &BTreeMap::new());
        assert_eq!(
            actions,
            [
                Action::Start("cp-1".into()),
                Action::Start("worker-1".into())
            ]
        );
    }

    #[test]
    fn running_nodes_are_left_alone_and_stopped_ones_started() {
        let actions = decide(
            &set(&["cp-1", "worker-1"]),
            &seen(&[("cp-1", Observed::Running), ("worker-1", Observed::Stopped)]),
        );
        assert_eq!(
            actions,
            [
                Action::Keep("cp-1".into()),
                Action::Start("worker-1".into())
            ]
        );
    }

    #[test]
    fn a_removed_node_is_stopped_first_and_a_stopped_leftover_is_ignored() {
        let actions = decide(
            &set(&["cp-1"]),
            &seen(&[
                ("cp-1", Observed::Running),
                ("worker-9", Observed::Running),
                ("old", Observed::Stopped),
            ]),
        );
        assert_eq!(
            actions,
            [Action::Stop("worker-9".into()), Action::Keep("cp-1".into())]
        );
    }

    #[test]
    fn deciding_twice_on_the_result_changes_nothing() {
        let wanted = set(&["cp-1", "worker-1"]);
        let after = seen(&[("cp-1", Observed::Running), ("worker-1", Observed::Running)]);
        let actions = decide(&wanted, &after);
        assert!(
            actions.iter().all(|a| matches!(a, Action::Keep(_))),
            "{actions:?}"
        );
    }
}
