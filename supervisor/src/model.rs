//! The supervisor's vocabulary: names and digests that are valid wherever they exist (checked
//! in every constructor and in `Deserialize`), a node's lifecycle as an enum whose allowed
//! transitions and deadlines are data, and the restart backoff.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A value that is not a valid name or digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a node name.
    #[error(
        "{0:?} is not a node name: 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    InvalidNodeName(String),
    /// Not a digest.
    #[error("{0:?} is not an image digest: expected sha256: and 64 lowercase hex digits")]
    InvalidDigest(String),
    /// Not a node state.
    #[error("{0:?} is not a node state: expected one of {names}", names = NodeState::NAMES.join(", "))]
    UnknownNodeState(String),
}

/// A node's name: a DNS label (1 to 63 of `a-z`, `0-9`, `-`, not starting or ending with `-`).
/// It names the VM, the Kubernetes node and a directory, so it is safe in a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// `name`, checked.
    pub fn new(name: impl Into<String>) -> Result<NodeName, Error> {
        let name = name.into();
        let label = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let ok = (1..=63).contains(&name.len())
            && name.bytes().all(|b| label(b) || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(NodeName(name))
        } else {
            Err(Error::InvalidNodeName(name))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An image digest: `sha256:` and 64 lowercase hex digits (safe in a path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

#[cfg(test)]
impl Digest {
    /// `sha256:` and `hex` 64 times: a valid digest for tests (`hex` one of 0-9a-f).
    pub(crate) fn repeated(hex: char) -> Digest {
        Digest(format!("sha256:{}", hex.to_string().repeat(64)))
    }
}

impl Digest {
    /// `digest`, checked.
    pub fn new(digest: impl Into<String>) -> Result<Digest, Error> {
        let digest = digest.into();
        if images::oci::check_digest(&digest).is_ok() {
            Ok(Digest(digest))
        } else {
            Err(Error::InvalidDigest(digest))
        }
    }

    /// The digest, `sha256:HEX`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
}

/// Display, AsRef<str>, FromStr and the serde conversions of a string newtype.
macro_rules! string_newtype {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<$name, Error> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(s: String) -> Result<$name, Error> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

string_newtype!(NodeName);
string_newtype!(Digest);

/// Where a node is in its life, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Configured, not booted: no verified image yet.
    Waiting,
    /// Its VM was started (or found running); no ready beacon yet.
    Starting,
    /// Its beacon says ready: its image's root, its own documents, its endpoint reachable.
    Ready,
    /// Its beacon says it cannot reach its cluster's endpoint or the host.
    Unreachable,
    /// Its beacon shows another root or other documents than it was started with.
    Mismatch,
    /// No beacon within its deadline.
    Silent,
    /// Its VM stopped; it is started again after a backoff.
    Exited,
    /// Its VM stopped [`CRASHLOOP_AFTER`] times or more without a ready beacon: it is
    /// still started again, at the backoff's longer delays.
    Crashloop,
    /// Its VM cannot be started, or runs but is not running its guest (paused, internal error).
    Failed,
    /// A rolling swap moves it to another image (or back): its VM is powering down, stopped,
    /// or getting its new OS disk; the swap's step says which.
    Swapping,
    /// No longer configured: its VM is powering down.
    Stopping,
    /// No longer configured, its VM stopped; its disks and record stay until a purge.
    Removed,
}

use NodeState::{
    Crashloop, Exited, Failed, Mismatch, Ready, Removed, Silent, Starting, Stopping, Swapping,
    Unreachable, Waiting,
};

impl NodeState {
    /// Every state, in declaration order.
    pub const ALL: [NodeState; 12] = [
        Waiting,
        Starting,
        Ready,
        Unreachable,
        Mismatch,
        Silent,
        Exited,
        Crashloop,
        Failed,
        Swapping,
        Stopping,
        Removed,
    ];

    /// The names, as [`NodeState::as_str`] gives them, in declaration order.
    pub const NAMES: [&'static str; 12] = [
        "waiting",
        "starting",
        "ready",
        "unreachable",
        "mismatch",
        "silent",
        "exited",
        "crashloop",
        "failed",
        "swapping",
        "stopping",
        "removed",
    ];

    /// The name shown in status, metrics and D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting => "waiting",
            Starting => "starting",
            Ready => "ready",
            Unreachable => "unreachable",
            Mismatch => "mismatch",
            Silent => "silent",
            Exited => "exited",
            Crashloop => "crashloop",
            Failed => "failed",
            Swapping => "swapping",
            Stopping => "stopping",
            Removed => "removed",
        }
    }

    /// The states this one may become (besides itself: a state may always be set again with
    /// a new reason). Why each is allowed:
    /// - a node whose VM runs (starting, ready, unreachable, mismatch, silent, crashloop) is
    ///   judged by each beacon, goes silent past its deadline, exits when its QEMU goes, fails
    ///   when its guest stops running, and is stopped when it leaves the config;
    /// - a node without a running VM (waiting, exited, crashloop, failed) is started (or waits
    ///   for an image, or fails to start);
    /// - any node may be found removed: unconfigured and not running (a VM can die as it
    ///   leaves the config); a removed node may be configured again and start;
    /// - waiting is also where a node slipwayd has just met starts (after a restart of
    ///   slipwayd), so it may be stopped (its VM runs but it is no longer configured);
    /// - a failed node's beacon is believed (its guest runs after all), but an exited node
    ///   becomes ready only through starting: a beacon heard after its QEMU went is stale;
    /// - a configured node may be taken by a rolling swap (swapping), and leaves it booting
    ///   (starting), or as its VM is found (exited, failed), or when it leaves the config.
    pub fn next(self) -> &'static [NodeState] {
        match self {
            Waiting => &[Starting, Exited, Failed, Swapping, Stopping, Removed],
            Starting => &[
                Ready,
                Unreachable,
                Mismatch,
                Silent,
                Exited,
                Crashloop,
                Failed,
                Swapping,
                Stopping,
                Removed,
            ],
            Ready => &[
                Starting,
                Unreachable,
                Mismatch,
                Silent,
                Exited,
                Crashloop,
                Failed,
                Swapping,
                Stopping,
                Removed,
            ],
            Unreachable => &[
                Starting, Ready, Mismatch, Silent, Exited, Crashloop, Failed, Swapping, Stopping,
                Removed,
            ],
            Mismatch => &[
                Starting,
                Ready,
                Unreachable,
                Silent,
                Exited,
                Crashloop,
                Failed,
                Swapping,
                Stopping,
                Removed,
            ],
            Silent => &[
                Starting,
                Ready,
                Unreachable,
                Mismatch,
                Exited,
                Crashloop,
                Failed,
                Swapping,
                Stopping,
                Removed,
            ],
            Exited => &[Starting, Waiting, Crashloop, Failed, Swapping, Removed],
            // Shown from the crash count, so it stays while the VM is restarted, until a
            // ready beacon (or the node is removed).
            Crashloop => &[
                Starting,
                Ready,
                Unreachable,
                Mismatch,
                Silent,
                Waiting,
                Failed,
                Swapping,
                Stopping,
                Removed,
            ],
            Failed => &[
                Starting,
                Ready,
                Unreachable,
                Mismatch,
                Waiting,
                Exited,
                Crashloop,
                Swapping,
                Stopping,
                Removed,
            ],
            Swapping => &[
                Starting,
                Ready,
                Unreachable,
                Mismatch,
                Silent,
                Exited,
                Crashloop,
                Failed,
                Stopping,
                Removed,
            ],
            // Configured again while stopping: it is ours again.
            Stopping => &[Starting, Waiting, Exited, Failed, Removed],
            Removed => &[Starting, Waiting, Failed],
        }
    }

    /// Whether this state may become `next` (itself always).
    pub fn may_become(self, next: NodeState) -> bool {
        self == next || self.next().contains(&next)
    }

    /// Whether the node counts as up (serving its cluster).
    pub fn is_up(self) -> bool {
        self == Ready
    }

    /// Whether the node is leaving (no longer configured).
    pub fn is_leaving(self) -> bool {
        matches!(self, Stopping | Removed)
    }

    /// How long the node may stay in this state without a beacon before it is silent: the
    /// boot deadline while starting, the silence between beacons once heard, none otherwise.
    pub fn deadline(self, d: &Deadlines) -> Option<Duration> {
        match self {
            Starting => Some(d.boot),
            Ready | Unreachable | Mismatch => Some(d.silence),
            Waiting | Silent | Exited | Crashloop | Failed | Swapping | Stopping | Removed => None,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = Error;

    fn from_str(s: &str) -> Result<NodeState, Error> {
        NodeState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| Error::UnknownNodeState(s.to_owned()))
    }
}

/// The deadlines of a node's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From a VM's start to its first beacon (TCG boots take about 15 s each; several share
    /// two cores).
    pub boot: Duration,
    /// Between two beacons once heard (they come every 5 s).
    pub silence: Duration,
    /// For an ACPI power-down, before QEMU is told to quit.
    pub powerdown: Duration,
    /// For QEMU to quit when told, before it is killed.
    pub quit: Duration,
    /// For a killed QEMU to be gone.
    pub kill: Duration,
}

impl Default for Deadlines {
    fn default() -> Deadlines {
        Deadlines {
            boot: Duration::from_secs(300),
            silence: Duration::from_secs(20),
            powerdown: Duration::from_secs(30),
            quit: Duration::from_secs(10),
            kill: Duration::from_secs(5),
        }
    }
}

/// Failed starts (or exits) within a boot deadline, without a ready beacon between them,
/// before a node is shown as [`NodeState::Crashloop`].
pub const CRASHLOOP_AFTER: u32 = 3;

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay, before jitter.
    pub max: Duration,
}

impl Default for Backoff {
    /// Restarts of a VM that stopped: 5 s, doubling, at most 5 min.
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

/// Lowest jitter factor.
const JITTER_LOW: f64 = 0.8;
/// Width of the jitter factor's range: factors are in [0.8, 1.2).
const JITTER_SPAN: f64 = 0.4;

impl Backoff {
    /// The delay after `failures` consecutive failures (none after 0): `base·2^(failures-1)`
    /// capped at `max`, times a factor in [0.8, 1.2) made from `jitter` in [0, 1) (see
    /// [`jitter`]; out of range values are clamped, NaN is 0.5). Pure: tests pass `jitter`.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let Some(doublings) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        let exact = 2u32
            .checked_pow(doublings)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max));
        let jitter = if jitter.is_nan() {
            0.5
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let factor = JITTER_LOW + JITTER_SPAN * jitter;
        Duration::try_from_secs_f64(exact.as_secs_f64() * factor).unwrap_or(exact)
    }
}

/// A random value in [0, 1) for [`Backoff::delay`], from the OS (0.5, no jitter, if the OS
/// gives none).
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / 4_294_967_296.0,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn node_names_are_dns_labels_everywhere() {
        for good in ["cp-1", "a", "0", "worker-12", &"a".repeat(63)] {
            let name = NodeName::new(good).unwrap();
            assert_eq!(name.as_str(), good);
            assert_eq!(name.to_string(), good);
            assert_eq!(good.parse::<NodeName>().unwrap(), name);
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(serde_json::from_str::<NodeName>(&json).unwrap(), name);
        }
        for bad in [
            "",
            "-cp",
            "cp-",
            "Cp-1",
            "cp_1",
            "cp.1",
            "../etc",
            "cp 1",
            "ñ",
            &"a".repeat(64),
        ] {
            assert_eq!(
                NodeName::new(bad),
                Err(Error::InvalidNodeName(bad.into())),
                "{bad:?}"
            );
            let json = serde_json::to_string(bad).unwrap();
            let e = serde_json::from_str::<NodeName>(&json).unwrap_err();
            assert!(e.to_string().contains("is not a node name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn digests_are_sha256_and_lowercase_hex_everywhere() {
        let hex = "0123456789abcdef".repeat(4);
        let good = format!("sha256:{hex}");
        let digest: Digest = good.parse().unwrap();
        assert_eq!(digest.hex(), hex);
        assert_eq!(digest.as_ref(), good);
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{good}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        for bad in [
            hex.clone(),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha512:{hex}"),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}/..", &hex[3..]),
        ] {
            assert!(Digest::new(bad.clone()).is_err(), "{bad:?}");
            let json = serde_json::to_string(&bad).unwrap();
            assert!(serde_json::from_str::<Digest>(&json).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_are_their_lowercase_names_in_text_and_json() {
        assert_eq!(NodeState::ALL.len(), NodeState::NAMES.len());
        for (state, name) in NodeState::ALL.into_iter().zip(NodeState::NAMES) {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(name.parse::<NodeState>().unwrap(), state);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<NodeState>(&format!("\"{name}\"")).unwrap(),
                state
            );
        }
        assert_eq!(NodeState::Crashloop.as_str(), "crashloop");
        let e = "Ready".parse::<NodeState>().unwrap_err();
        assert!(e.to_string().contains("ready, unreachable"), "{e}");
        assert!(serde_json::from_str::<NodeState>("\"crash-loop\"").is_err());
    }

    /// The states reachable from `from` through allowed transitions.
    fn reachable(from: NodeState) -> BTreeSet<NodeState> {
        let mut seen = BTreeSet::from([from]);
        let mut todo = vec![from];
        while let Some(state) = todo.pop() {
            for next in state.next() {
                if seen.insert(*next) {
                    todo.push(*next);
                }
            }
        }
        seen
    }

    #[test]
    fn the_transition_table_is_consistent() {
        let all: BTreeSet<NodeState> = NodeState::ALL.into_iter().collect();
        for state in NodeState::ALL {
            let next = state.next();
            assert!(!next.contains(&state), "{state} lists itself");
            let unique: BTreeSet<_> = next.iter().collect();
            assert_eq!(unique.len(), next.len(), "{state} lists a state twice");
            assert!(state.may_become(state), "{state} may be set again");
            // Every node can leave the config, and come back to ready from anywhere.
            assert!(state.may_become(Removed), "{state} cannot become removed");
            assert!(reachable(state).contains(&Ready), "{state} never recovers");
        }
        // Whatever a state is, a node slipwayd has just met can get there.
        assert_eq!(reachable(Waiting), all);
        // A node removed and configured again starts; a stop reaches removed.
        assert!(Removed.may_become(Starting));
        assert!(Stopping.may_become(Removed));
        // Only a node with a VM is stopped; only a beacon makes it ready.
        for state in [Waiting, Exited, Removed, Stopping] {
            assert!(
                !state.may_become(Ready),
                "{state} became ready without a beacon"
            );
        }
        for state in [Exited, Removed] {
            assert!(!state.may_become(Stopping), "{state} has no VM to stop");
        }
        // Whatever a node with a VM was doing, its VM may exit, once or for the third time.
        for state in [Starting, Ready, Unreachable, Mismatch, Silent, Failed] {
            assert!(state.may_become(Exited), "{state} cannot exit");
            assert!(state.may_become(Crashloop), "{state} cannot crash-loop");
        }
        // Crashloop is never where a node without a VM, or one leaving, goes.
        for state in [Waiting, Removed, Stopping] {
            assert!(!state.may_become(Crashloop), "{state}");
        }
    }

    #[test]
    fn up_and_leaving_partition_as_documented() {
        let up: Vec<NodeState> = NodeState::ALL.into_iter().filter(|s| s.is_up()).collect();
        assert_eq!(up, [Ready]);
        let leaving: Vec<NodeState> = NodeState::ALL
            .into_iter()
            .filter(|s| s.is_leaving())
            .collect();
        assert_eq!(leaving, [Stopping, Removed]);
    }

    #[test]
    fn deadlines_apply_to_nodes_whose_vm_should_speak() {
        let d = Deadlines::default();
        assert_eq!(d.boot, Duration::from_secs(300));
        assert_eq!(d.silence, Duration::from_secs(20));
        assert_eq!(
            (d.powerdown, d.quit, d.kill),
            (
                Duration::from_secs(30),
                Duration::from_secs(10),
                Duration::from_secs(5)
            )
        );
        for state in NodeState::ALL {
            let expected = match state {
                Starting => Some(d.boot),
                Ready | Unreachable | Mismatch => Some(d.silence),
                _ => None,
            };
            assert_eq!(state.deadline(&d), expected, "{state}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_bounded_jitter() {
        let b = Backoff::default();
        let secs = |failures, jitter| b.delay(failures, jitter).as_secs_f64();
        assert_eq!(b.delay(0, 0.7), Duration::ZERO, "no failure, no wait");
        // jitter 0.5 is the factor 1.0.
        let plain: Vec<f64> = (1..=8).map(|n| secs(n, 0.5)).collect();
        assert_eq!(plain, [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]);
        assert!((secs(1, 0.0) - 4.0).abs() < 1e-9, "factor 0.8 at jitter 0");
        assert!(secs(1, 0.999_999) < 6.0 && secs(1, 0.999_999) > 5.99);
        assert_eq!(b.delay(u32::MAX, 0.5), b.max, "no overflow");
        assert_eq!(b.delay(40, 0.5), b.max, "2^39 * 5 s overflows u32 doubling");
        assert_eq!(b.delay(3, f64::NAN), Duration::from_secs(20));
        assert!((secs(3, -3.0) - 16.0).abs() < 1e-9, "clamped to 0");
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        assert!(huge.delay(1, 0.99) >= Duration::from_secs(u64::MAX / 2));
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let values: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(values.iter().all(|j| (0.0..1.0).contains(j)));
        let distinct: BTreeSet<u64> = values.iter().map(|j| j.to_bits()).collect();
        assert!(distinct.len() > 1, "random values: {values:?}");
    }
}
