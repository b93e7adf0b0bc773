//! One node's image swap as a state machine, the rollout journal that makes each of its steps
//! durable, and the plan that picks which node swaps next.
//!
//! An in-place swap goes
//!
//! ```text
//! planned → drained → stopping → stopped → disks-switched → booting → verifying → committed
//!              │          │          │             │            │          │
//!              └──────────┴──────────┴─────────────┴────────────┴──────────┴→ rolling-back
//!                                                         → booting-previous → rolled-back
//! ```
//!
//! (a failure before the VM is touched, in planned or drained, goes straight to rolled-back).
//!
//! A surge swap (a worker whose state need not survive) boots a replacement beside the node
//! first, and touches the node only once the replacement is healthy:
//!
//! ```text
//! planned → disks-switched → booting → verifying → drained → stopping → stopped → committed
//!                 │             │          │          │          │          │
//!                 └─────────────┴──────────┴──────────┴──────────┴──────────┴→ rolling-back
//!                                                         → booting-previous → rolled-back
//! ```
//!
//! Here disks-switched makes the replacement's own disks (a new generation of the node's run
//! directory, a fresh state disk, a MAC and a pool address of its own), booting and verifying
//! are the replacement's, and drained, stopping and stopped the old VM's. The handover, in
//! stopped, rewrites the node's record in one write: from then on the replacement is the
//! node (its generation, address and MAC). A rollback stops the replacement, deletes its
//! disks, sets the record back if the handover was made, and makes sure the old VM runs.
//!
//! Each step is written to the journal before its side effect runs, and every side effect is
//! idempotent, so a supervisor killed anywhere runs the step again on its next start: a stop
//! of a stopped VM is nothing, the OS overlay of an image is made only if missing, a VM is
//! started only when none runs on the node's disks, and the state disk is never made again
//! once it exists.

pub mod journal;
pub mod plan;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::Digest;

/// The reason a swap ends with when an operator aborts its rollout (its image is then not
/// marked failed on the host: the abort is the cluster's).
pub const ABORTED: &str = "aborted by an operator";
/// How the reason of a swap whose node left host.toml (or lost its record) begins: it ends
/// without marking its image failed.
pub const ABANDONED: &str = "abandoned";
/// How the reason of a swap that lost its fleet slot begins: it ends (or rolls back) without
/// marking its image failed.
pub const FENCED: &str = "fenced";

/// Where a swap is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Chosen to move; nothing touched yet.
    Planned,
    /// Drained of its workloads: with `[clusters.kube]`, cordoned and drained through the
    /// cluster's API server (nothing to do without it).
    Drained,
    /// Its VM is being powered down.
    Stopping,
    /// Its VM is gone.
    Stopped,
    /// It has an OS overlay over the new image; the previous overlay and image are kept.
    DisksSwitched,
    /// Its VM is being started on the new image.
    Booting,
    /// Its VM runs the new image: waiting for a healthy beacon with the new root hash, then
    /// for the soak.
    Verifying,
    /// It runs the new image for good; the previous overlay is dropped.
    Committed,
    /// The new image failed: its VM is being stopped and its record set back.
    RollingBack,
    /// Its VM is being started on the previous image again.
    BootingPrevious,
    /// It is back on the previous image; the new image is marked failed on this host.
    RolledBack,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 11] = [
        Step::Planned,
        Step::Drained,
        Step::Stopping,
        Step::Stopped,
        Step::DisksSwitched,
        Step::Booting,
        Step::Verifying,
        Step::Committed,
        Step::RollingBack,
        Step::BootingPrevious,
        Step::RolledBack,
    ];

    /// Its name in status, logs and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Planned => "planned",
            Step::Drained => "drained",
            Step::Stopping => "stopping",
            Step::Stopped => "stopped",
            Step::DisksSwitched => "disks-switched",
            Step::Booting => "booting",
            Step::Verifying => "verifying",
            Step::Committed => "committed",
            Step::RollingBack => "rolling-back",
            Step::BootingPrevious => "booting-previous",
            Step::RolledBack => "rolled-back",
        }
    }

    /// Whether the swap has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Step::Committed | Step::RolledBack)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what the step is for.
    Done,
    /// It could not (the reason goes in the swap).
    Failed,
}

/// The step after `step` given how its work ended; None for a final step. A failure once the
/// VM may have been touched rolls back; one before (planned, drained) ends the swap with
/// nothing changed. A rollback that cannot stop the VM tries again; a previous image that does
/// not come back either still ends the swap (the node is then supervised like any other, its
/// record naming the previous image).
pub fn next(step: Step, outcome: Outcome) -> Option<Step> {
    use Outcome::{Done, Failed};
    Some(match (step, outcome) {
        (Step::Planned, Done) => Step::Drained,
        (Step::Drained, Done) => Step::Stopping,
        (Step::Planned | Step::Drained, Failed) => Step::RolledBack,
        (Step::Stopping, Done) => Step::Stopped,
        (Step::Stopped, Done) => Step::DisksSwitched,
        (Step::DisksSwitched, Done) => Step::Booting,
        (Step::Booting, Done) => Step::Verifying,
        (Step::Verifying, Done) => Step::Committed,
        (
            Step::Stopping | Step::Stopped | Step::DisksSwitched | Step::Booting | Step::Verifying,
            Failed,
        ) => Step::RollingBack,
        (Step::RollingBack, Done) => Step::BootingPrevious,
        (Step::RollingBack, Failed) => Step::RollingBack,
        (Step::BootingPrevious, Done | Failed) => Step::RolledBack,
        (Step::Committed | Step::RolledBack, _) => return None,
    })
}

/// The step after `step` of a surge swap given how its work ended; None for a final step (see
/// the module's second diagram). Only a failure in planned, before anything was made, ends
/// the swap at once; every later one rolls back (the rollback deletes the replacement).
pub fn next_surge(step: Step, outcome: Outcome) -> Option<Step> {
    use Outcome::{Done, Failed};
    Some(match (step, outcome) {
        (Step::Planned, Done) => Step::DisksSwitched,
        (Step::Planned, Failed) => Step::RolledBack,
        (Step::DisksSwitched, Done) => Step::Booting,
        (Step::Booting, Done) => Step::Verifying,
        (Step::Verifying, Done) => Step::Drained,
        (Step::Drained, Done) => Step::Stopping,
        (Step::Stopping, Done) => Step::Stopped,
        (Step::Stopped, Done) => Step::Committed,
        (
            Step::DisksSwitched
            | Step::Booting
            | Step::Verifying
            | Step::Drained
            | Step::Stopping
            | Step::Stopped,
            Failed,
        ) => Step::RollingBack,
        (Step::RollingBack, Done) => Step::BootingPrevious,
        (Step::RollingBack, Failed) => Step::RollingBack,
        (Step::BootingPrevious, Done | Failed) => Step::RolledBack,
        (Step::Committed | Step::RolledBack, _) => return None,
    })
}

/// A surge swap's replacement: the node's next generation, with its own run directory, state
/// disk, hostname, MAC and address (see [`crate::records::run_dir`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// Its generation (past any leftover generation directory).
    pub generation: u32,
    /// The node's generation before the handover: its old VM's run directory, and what a
    /// rollback sets back.
    pub previous_generation: u32,
    /// Its address, taken from the pool while both VMs run; the node's from the handover on
    /// (the previous one goes back to the pool).
    pub address: Ipv4Addr,
    /// Its MAC address.
    pub mac: String,
    /// The node's address before the handover (a rollback sets it back).
    pub previous_address: Ipv4Addr,
    /// The node's MAC before the handover.
    pub previous_mac: String,
}

/// The key a surge's replacement VM is tracked by while its swap runs: `NAME/next` (never a
/// node name: those are DNS labels).
pub fn replacement_key(node: &str) -> String {
    format!("{node}/next")
}

/// The node whose replacement `key` is, if it is a replacement's key.
pub fn replaced(key: &str) -> Option<&str> {
    key.strip_suffix("/next")
}

/// One node's swap, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swap {
    /// The node.
    pub node: String,
    /// Its cluster.
    pub cluster: String,
    /// The image it ran.
    pub from: Digest,
    /// The image it moves to.
    pub to: Digest,
    /// Where the swap is.
    pub step: Step,
    /// When it was planned (Unix seconds).
    pub started: i64,
    /// When `step` was entered (Unix seconds).
    pub since: i64,
    /// When its boot on the new image (or the previous one) began: the boot deadline counts
    /// from here (Unix seconds; 0 before booting).
    pub booted: i64,
    /// Its last healthy beacon on the old image (Unix seconds, fractional; 0: none heard).
    pub last_healthy: f64,
    /// Its first healthy beacon on the new image (Unix seconds, fractional; 0: none yet).
    pub first_healthy: f64,
    /// When its boot deadline was started again, once, because a restarted supervisor found
    /// it verifying (Unix seconds; 0: never). A supervisor that keeps restarting gets no more.
    #[serde(default)]
    pub extended: i64,
    /// Why it rolls back, or how it ended.
    pub reason: String,
    /// The node id its state disk held before the swap (empty: not known): the new image must
    /// report the same one.
    #[serde(default)]
    pub node_id: String,
    /// It failed for a reason of the host's, not the image's (a disk, a seed, QEMU's start):
    /// the image is not marked failed, and rollouts pause until an operator resumes them.
    #[serde(default)]
    pub host_failure: bool,
    /// A surge swap's replacement (None: the swap is in place; not written then, so an older
    /// slipwayd reads the journal of in-place swaps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge: Option<Replacement>,
    /// The Kubernetes node this swap cordoned, or may have: written before the cordon request
    /// is sent (a crash between the two leaves a name slipwayd may not have cordoned, and an
    /// uncordon of a schedulable node changes nothing), cleared once it is uncordoned, or at
    /// once when the node was cordoned already by someone else. Empty: nothing to uncordon
    /// (not written then, so journals without it read alike).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cordoned: String,
    /// When its drain began (Unix seconds; 0: not yet), written with `cordoned`: the drain
    /// deadline counts from here, not from the step's start (a step held by the fleet lock
    /// must not eat the drain's time, nor a restart give it more).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drain_since: i64,
}

/// Whether `value` is 0 (not written then).
fn is_zero(value: &i64) -> bool {
    *value == 0
}

impl Swap {
    /// A swap of `node` from `from` to `to`, planned at `now`.
    pub fn plan(node: &str, cluster: &str, from: Digest, to: Digest, now: i64) -> Swap {
        Swap {
            node: node.to_owned(),
            cluster: cluster.to_owned(),
            from,
            to,
            step: Step::Planned,
            started: now,
            since: now,
            booted: 0,
            last_healthy: 0.0,
            first_healthy: 0.0,
            extended: 0,
            reason: String::new(),
            node_id: String::new(),
            host_failure: false,
            surge: None,
            cordoned: String::new(),
            drain_since: 0,
        }
    }

    /// The step after the current one given `outcome` (in place or surge).
    pub fn next(&self, outcome: Outcome) -> Option<Step> {
        if self.surge.is_some() {
            next_surge(self.step, outcome)
        } else {
            next(self.step, outcome)
        }
    }

    /// Whether it still moves towards its new image (it neither ended nor rolls back): an
    /// abort or a failure of its image elsewhere sends it back.
    pub fn moving(&self) -> bool {
        !self.step.is_final() && !matches!(self.step, Step::RollingBack | Step::BootingPrevious)
    }

    /// Sends a moving swap back at `now` for `reason` (see [`Swap::moving`]): rolled back at
    /// once when nothing was touched yet, else rolling back. False when it was not moving.
    pub fn send_back(&mut self, reason: &str, now: i64) -> bool {
        if !self.moving() {
            return false;
        }
        if let Some(step) = self.next(Outcome::Failed) {
            self.step = step;
        }
        self.since = now;
        reason.clone_into(&mut self.reason);
        true
    }

    /// Whether it ended without its image being to blame (an abort, an abandoned node, a
    /// host failure).
    pub fn blameless(&self) -> bool {
        self.reason == ABORTED
            || self.reason.starts_with(ABANDONED)
            || self.reason.starts_with(FENCED)
            || self.host_failure
    }

    /// Moves on after `outcome` at `now`; false when the swap had ended.
    pub fn advance(&mut self, outcome: Outcome, now: i64) -> bool {
        match self.next(outcome) {
            Some(step) => {
                self.step = step;
                self.since = now;
                true
            }
            None => false,
        }
    }

    /// The image the VM this step watches should run: the new one from disks-switched to
    /// verifying (a surge's replacement) and at committed, the previous one otherwise.
    pub fn image(&self) -> &Digest {
        match self.step {
            Step::DisksSwitched | Step::Booting | Step::Verifying | Step::Committed => &self.to,
            _ => &self.from,
        }
    }

    /// When the boot deadline counts from, for a supervisor that began to watch this step at
    /// `watched`: the boot, or, once, the restart of a supervisor that found the node
    /// verifying (more than a few seconds after the boot began). Returns it, and whether the
    /// extension is taken now (to be journaled).
    pub fn deadline_start(&self, watched: i64) -> (i64, bool) {
        if self.extended > 0 {
            (self.booted.max(self.extended), false)
        } else if watched > self.booted + 5 {
            (watched, true)
        } else {
            (self.booted, false)
        }
    }

    /// The node's downtime: its last healthy beacon on the old image to its first on the new
    /// (None until both are known). Zero for a surge whose replacement was healthy before
    /// the old VM's last healthy beacon, as it should be.
    pub fn downtime(&self) -> Option<f64> {
        (self.last_healthy > 0.0 && self.first_healthy > 0.0)
            .then_some((self.first_healthy - self.last_healthy).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps a swap walks by `next` when nothing fails.
    fn forward(next: fn(Step, Outcome) -> Option<Step>) -> Vec<Step> {
        let mut step = Step::Planned;
        let mut walked = vec![step];
        while let Some(s) = next(step, Outcome::Done) {
            step = s;
            walked.push(step);
        }
        walked
    }

    #[test]
    fn a_swap_that_never_fails_walks_every_forward_step_to_committed() {
        assert_eq!(forward(next), Step::ALL[..8].to_vec());
    }

    #[test]
    fn a_failure_rolls_back_once_the_vm_was_touched_and_ends_at_rolled_back() {
        for step in Step::ALL.into_iter().filter(|s| !s.is_final()) {
            let mut s = next(step, Outcome::Failed).unwrap();
            let touched = !matches!(step, Step::Planned | Step::Drained);
            if touched && step != Step::BootingPrevious {
                assert_eq!(s, Step::RollingBack, "from {step}");
            }
            // Whatever fails afterwards, the rollback ends.
            let mut hops = 0;
            while !s.is_final() {
                s = next(s, Outcome::Done).unwrap();
                hops += 1;
                assert!(hops < 4, "from {step}");
            }
            assert_eq!(s, Step::RolledBack, "from {step}");
        }
        assert_eq!(next(Step::Committed, Outcome::Failed), None);
        assert_eq!(next(Step::RolledBack, Outcome::Done), None);
    }

    #[test]
    fn a_surge_verifies_its_replacement_before_the_old_vm_is_touched() {
        let walked = forward(next_surge);
        let verified = walked.iter().position(|s| *s == Step::Verifying).unwrap();
        let stopping = walked.iter().position(|s| *s == Step::Stopping).unwrap();
        assert!(verified < stopping, "{walked:?}");
        assert_eq!(walked.last(), Some(&Step::Committed));
        assert_eq!(walked.len(), 8, "every forward step once: {walked:?}");
        // Only planned ends at once; any later failure drops the replacement first.
        assert_eq!(
            next_surge(Step::Planned, Outcome::Failed),
            Some(Step::RolledBack)
        );
        for step in &walked[1..walked.len() - 1] {
            assert_eq!(
                next_surge(*step, Outcome::Failed),
                Some(Step::RollingBack),
                "{step}"
            );
        }
        // An abort sends a moving swap back by its own machine, and leaves one rolling back.
        let (a, b) = (Digest::repeated('a'), Digest::repeated('b'));
        let mut swap = Swap::plan("w-1", "lab", a.clone(), b.clone(), 100);
        swap.surge = Some(Replacement {
            generation: 1,
            previous_generation: 0,
            address: "10.44.0.20".parse().unwrap(),
            mac: "52:54:00:00:00:02".into(),
            previous_address: "10.44.0.11".parse().unwrap(),
            previous_mac: "52:54:00:00:00:01".into(),
        });
        swap.step = Step::Drained;
        assert!(swap.send_back(ABORTED, 120));
        assert_eq!(
            (swap.step, swap.reason.as_str()),
            (Step::RollingBack, ABORTED)
        );
        assert!(!swap.send_back("again", 130), "already rolling back");
        assert_eq!(swap.reason, ABORTED);
        // In place, drained is before the VM is touched: back at once.
        let mut in_place = Swap::plan("w-2", "lab", a, b, 100);
        in_place.step = Step::Drained;
        assert!(in_place.send_back(ABORTED, 120));
        assert_eq!(in_place.step, Step::RolledBack);
        // A replacement healthy before the old VM's last beacon: no downtime.
        swap.last_healthy = 50.0;
        swap.first_healthy = 40.0;
        assert_eq!(swap.downtime(), Some(0.0));
        assert_eq!(replaced(&replacement_key("w-1")), Some("w-1"));
        assert_eq!(replaced("w-1"), None);
    }

    #[test]
    fn a_cordon_is_journaled_only_when_there_is_one_and_an_older_journal_reads_without_it() {
        let (a, b) = (Digest::repeated('a'), Digest::repeated('b'));
        let mut swap = Swap::plan("w-1", "lab", a, b, 100);
        let json = serde_json::to_value(&swap).unwrap();
        assert!(
            json.get("cordoned").is_none(),
            "not written when empty: {json}"
        );
        // A swap an older slipwayd journaled (no such field) reads as nothing cordoned.
        let old: Swap = serde_json::from_value(json).unwrap();
        assert_eq!(old.cordoned, "");
        assert_eq!(old, swap);
        swap.cordoned = "w-1-g2".into();
        let json = serde_json::to_value(&swap).unwrap();
        assert_eq!(json["cordoned"], "w-1-g2");
        assert_eq!(serde_json::from_value::<Swap>(json).unwrap(), swap);
    }

    #[test]
    fn the_image_a_node_runs_follows_the_step() {
        let (a, b) = (Digest::repeated('a'), Digest::repeated('b'));
        let mut swap = Swap::plan("w-1", "lab", a.clone(), b.clone(), 100);
        let mut seen = vec![(swap.step, swap.image().clone())];
        while swap.advance(Outcome::Done, 101) {
            seen.push((swap.step, swap.image().clone()));
        }
        let on_new: Vec<Step> = seen
            .iter()
            .filter(|(_, i)| *i == b)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(
            on_new,
            [
                Step::DisksSwitched,
                Step::Booting,
                Step::Verifying,
                Step::Committed
            ]
        );
        // A restarted supervisor gives the boot deadline one fresh start, no more.
        swap.booted = 1000;
        assert_eq!(
            swap.deadline_start(1002),
            (1000, false),
            "the same supervisor"
        );
        assert_eq!(
            swap.deadline_start(1100),
            (1100, true),
            "restarted: extended once"
        );
        swap.extended = 1100;
        assert_eq!(
            swap.deadline_start(1200),
            (1100, false),
            "restarted again: no more"
        );
        swap.step = Step::RollingBack;
        assert_eq!(swap.image(), &a, "a rollback restores the previous image");
        swap.last_healthy = 10.0;
        swap.first_healthy = 32.5;
        assert_eq!(swap.downtime(), Some(22.5));
    }
}
