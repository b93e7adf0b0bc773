//! The rollout journal (`STATE/rollout`, a [`crate::persist`] record of kind `rollout`): the
//! swaps in flight with their steps, the images that failed on this host, the clusters whose
//! rollout an operator aborted, and whether rollouts are paused. It is written before every
//! side effect of a swap, so what it says is what the supervisor was doing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Step, Swap};
use crate::model::Digest;
use crate::persist;

/// The record kind.
pub const KIND: &str = "rollout";
/// The payload version written.
pub const VERSION: u32 = 1;

/// Why an image is not rolled further on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The node whose swap failed (empty for an abort).
    pub node: String,
    /// Why.
    pub reason: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// The journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// No new swap starts while set (swaps in flight finish).
    pub paused: bool,
    /// Why: an operator, or a host failure (which node, what failed).
    #[serde(default)]
    pub pause_reason: String,
    /// Swaps in flight, by node.
    pub swaps: BTreeMap<String, Swap>,
    /// The last finished swap of each node (shown by status).
    pub last: BTreeMap<String, Swap>,
    /// Images whose swap failed on this host: never rolled again here.
    pub failed: BTreeMap<Digest, Failure>,
    /// Clusters whose rollout of an image an operator aborted, with the image.
    pub aborted: BTreeMap<String, Digest>,
}

/// Where the journal of a host lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("rollout")
}

impl Journal {
    /// Reads the journal (an empty one when there is none yet).
    pub fn load(state_dir: &Path) -> Result<Journal, persist::Error> {
        Ok(persist::read(&path(state_dir), KIND, VERSION)?.unwrap_or_default())
    }

    /// Writes the journal, durably, before the caller acts on it.
    pub fn save(&self, state_dir: &Path) -> Result<(), persist::Error> {
        persist::write(&path(state_dir), KIND, VERSION, self)?;
        #[cfg(debug_assertions)]
        die_at_step_for_tests(self);
        Ok(())
    }

    /// The addresses surges in flight hold, their replacements' and their nodes' previous ones
    /// (a handover may be written before its swap commits, and a rollback gives the previous
    /// one back): no new node is given one.
    pub fn reserved(&self) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
        self.swaps
            .values()
            .filter_map(|s| s.surge.as_ref())
            .flat_map(|r| [r.address, r.previous_address])
            .collect()
    }

    /// Every image a swap in flight may need (its old one and its new one).
    pub fn images(&self) -> impl Iterator<Item = &Digest> {
        self.swaps.values().flat_map(|s| [&s.from, &s.to])
    }

    /// Moves a finished swap of `node` from the swaps in flight to the last ones. A rolled-back
    /// one marks its image failed (in the same write), unless the image is not to blame (see
    /// [`Swap::blameless`]); one that failed for the host's reasons pauses the rollouts.
    pub fn finish(&mut self, node: &str) {
        let Some(swap) = self.swaps.remove(node) else {
            return;
        };
        if swap.step == Step::RolledBack && swap.host_failure {
            self.pause_for_host(&swap);
        }
        if swap.step == Step::RolledBack && !swap.blameless() {
            self.fail_image(&swap);
        }
        self.last.insert(node.to_owned(), swap);
    }

    /// Marks `swap`'s new image failed on this host (once), and sends every other swap to it
    /// that has not committed back: nothing else gets an image that failed here.
    pub fn fail_image(&mut self, swap: &Swap) {
        if !self.failed.contains_key(&swap.to) {
            self.failed.insert(
                swap.to.clone(),
                Failure {
                    node: swap.node.clone(),
                    reason: swap.reason.clone(),
                    at: swap.since,
                },
            );
        }
        let why = format!("its image failed on {}: {}", swap.node, swap.reason);
        for other in self
            .swaps
            .values_mut()
            .filter(|o| o.node != swap.node && o.to == swap.to)
        {
            other.send_back(&why, swap.since);
        }
    }

    /// Pauses rollouts after `swap` failed for the host's reasons.
    pub fn pause_for_host(&mut self, swap: &Swap) {
        self.paused = true;
        self.pause_reason = format!(
            "a host failure on {}: {} (fix the host, then `slipwayd rollout resume`)",
            swap.node, swap.reason
        );
    }
}

/// Test hook, compiled into debug builds only: with `SLIPWAYD_DIE_AT_STEP=STEP` (or
/// `NODE:STEP`) in the environment, the process kills itself with SIGKILL (aborts, on
/// Windows) right after the journal first records a swap (of NODE) entering STEP, as a crash
/// there would. The crash-matrix test walks every step with it.
#[cfg(debug_assertions)]
fn die_at_step_for_tests(journal: &Journal) {
    let Ok(at) = std::env::var("SLIPWAYD_DIE_AT_STEP") else {
        return;
    };
    let (node, step) = at.split_once(':').unwrap_or(("", &at));
    if journal
        .swaps
        .values()
        .any(|s| s.step.as_str() == step && (node.is_empty() || s.node == node))
    {
        tracing::warn!(%step, "SLIPWAYD_DIE_AT_STEP: killing this slipwayd with SIGKILL");
        #[cfg(unix)]
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        // No `kill` there: end at once, without unwinding or cleanup, as a crash would.
        #[cfg(not(unix))]
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swap::Outcome;

    #[test]
    fn the_journal_survives_a_round_trip_and_a_rollback_marks_its_image_failed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Journal::load(dir.path()).unwrap(), Journal::default());
        let (a, b) = (Digest::repeated('a'), Digest::repeated('b'));
        let mut journal = Journal::default();
        let mut swap = Swap::plan("cp-1", "lab", a.clone(), b.clone(), 100);
        swap.advance(Outcome::Done, 101);
        journal.swaps.insert("cp-1".into(), swap.clone());
        journal.save(dir.path()).unwrap();
        assert_eq!(Journal::load(dir.path()).unwrap(), journal);
        assert!(journal.images().any(|d| *d == a) && journal.images().any(|d| *d == b));

        swap.step = Step::RolledBack;
        swap.reason = "no healthy beacon".into();
        journal.swaps.insert("cp-1".into(), swap);
        journal.finish("cp-1");
        assert!(journal.swaps.is_empty());
        assert_eq!(journal.failed[&b].node, "cp-1");
        assert!(!journal.failed.contains_key(&a));
        // An aborted swap does not mark its image failed: the abort was one cluster's.
        let mut aborted = Swap::plan("w-1", "lab", b.clone(), a.clone(), 200);
        aborted.step = Step::RolledBack;
        aborted.reason = crate::swap::ABORTED.into();
        journal.swaps.insert("w-1".into(), aborted);
        journal.finish("w-1");
        assert!(!journal.failed.contains_key(&a) && journal.last.contains_key("w-1"));
        // Nor does a failure of the host's: it pauses the rollouts instead.
        let mut host = Swap::plan("w-2", "lab", b.clone(), a.clone(), 300);
        host.step = Step::RolledBack;
        host.reason = "cannot start its VM: qemu-img failed".into();
        host.host_failure = true;
        journal.swaps.insert("w-2".into(), host);
        journal.finish("w-2");
        assert!(!journal.failed.contains_key(&a) && journal.paused);
        assert!(
            journal.pause_reason.contains("w-2"),
            "{}",
            journal.pause_reason
        );
        // A failed image sends the other swaps to it back, committed ones aside.
        let c = Digest::repeated('c');
        let mut verifying = Swap::plan("w-3", "other", a.clone(), c.clone(), 400);
        verifying.step = Step::Verifying;
        let mut done = Swap::plan("w-4", "other", a.clone(), c.clone(), 400);
        done.step = Step::Committed;
        journal.swaps.insert("w-3".into(), verifying);
        journal.swaps.insert("w-4".into(), done);
        let mut failing = Swap::plan("w-5", "lab", a.clone(), c.clone(), 500);
        failing.step = Step::RollingBack;
        failing.reason = "no healthy beacon".into();
        journal.fail_image(&failing);
        assert_eq!(journal.swaps["w-3"].step, Step::RollingBack);
        assert!(journal.swaps["w-3"].reason.contains("failed on w-5"));
        assert_eq!(journal.swaps["w-4"].step, Step::Committed);
        assert_eq!(journal.failed[&c].node, "w-5");
        // A damaged journal is refused, never read as empty.
        journal.save(dir.path()).unwrap();
        let file = path(dir.path());
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        assert!(Journal::load(dir.path()).is_err());
    }
}
