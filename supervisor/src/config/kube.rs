//! `[clusters.kube]` in host.toml: the cluster runs a Kubernetes API server that slipwayd talks
//! to, with an admin identity it mints from the cluster CA in its state directory. Without the
//! table slipwayd never calls the API: a swap drains nothing and a node's beacon alone says
//! whether it is healthy. With it, before a node's VM stops for a swap slipwayd cordons the
//! node and drains it through the Eviction API (PodDisruptionBudgets honoured), and uncordons
//! it once the swap ends (only if slipwayd cordoned it); a node counts healthy only when the
//! API also says it is Ready. Every key has a default, so an empty table is enough:
//!
//! ```toml
//! [clusters.kube]
//! api = "https://10.44.0.10:6443"   # default: https:// and the cluster's control-plane-endpoint
//! drain-deadline = "5m"             # how long evictions are retried (PDB refusals) before on-deadline acts
//! on-deadline = "roll-back"         # or "force": delete the pods still there (bypasses PDBs)
//! empty-dir = "refuse"              # pods with emptyDir data: "refuse" the drain, or "evict" them
//! unmanaged = "refuse"              # pods no controller manages: "refuse" the drain, or "evict" them
//! ready-gate = true                 # a node is healthy only when its Node's Ready condition is True
//! ```
//!
//! DaemonSet pods and static (mirror) pods are always left on the node, as `kubectl drain
//! --ignore-daemonsets` does. A refused drain, or one that reaches its deadline with
//! `on-deadline = "roll-back"`, ends the swap without touching the VM (a surge's replacement
//! is dropped) and pauses the rollouts until an operator resumes them.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::rollout::parse_duration;
use crate::kube::drain::{DrainPolicy, PodPolicy};

/// The drain deadline when `drain-deadline` is not given.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(5 * 60);
/// The shortest drain deadline: one round of evictions and a look at what is left.
const MIN_DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// What a drain that reaches its deadline with pods still on the node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDeadline {
    /// The swap fails before the VM is touched; the node is uncordoned and runs on.
    #[default]
    RollBack,
    /// The pods still there are deleted (bypassing their PodDisruptionBudgets) and the swap
    /// goes on.
    Force,
}

impl std::fmt::Display for OnDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnDeadline::RollBack => "roll-back",
            OnDeadline::Force => "force",
        })
    }
}

/// A validated `[clusters.kube]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kube {
    /// `HOST:PORT` of the API server slipwayd talks to (over HTTPS, verified against the
    /// cluster CA).
    pub endpoint: String,
    /// How long a drain retries evictions before [`Kube::on_deadline`] acts.
    pub drain_deadline: Duration,
    /// What a drain that reaches its deadline does.
    pub on_deadline: OnDeadline,
    /// Which pods refuse a drain.
    pub drain: DrainPolicy,
    /// A node is healthy only when the API says its Ready condition is True.
    pub ready_gate: bool,
}

impl Kube {
    /// The table's defaults for a cluster whose control-plane endpoint is `endpoint`.
    pub fn defaults(endpoint: &str) -> Kube {
        Kube {
            endpoint: endpoint.to_owned(),
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            on_deadline: OnDeadline::default(),
            drain: DrainPolicy::default(),
            ready_gate: true,
        }
    }

    /// `https://ENDPOINT`, for messages.
    pub fn url(&self) -> String {
        format!("https://{}", self.endpoint)
    }
}

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    api: Option<Spanned<String>>,
    drain_deadline: Option<Spanned<String>>,
    on_deadline: Option<OnDeadline>,
    empty_dir: Option<PodPolicy>,
    unmanaged: Option<PodPolicy>,
    ready_gate: Option<bool>,
}

impl Raw {
    /// The table, for a cluster whose control-plane endpoint is `endpoint` (validated
    /// already), or the span and message of the first bad key.
    pub(super) fn validate(self, endpoint: &str) -> Result<Kube, (Range<usize>, String)> {
        let mut kube = Kube::defaults(endpoint);
        if let Some(api) = &self.api {
            kube.endpoint = api_endpoint(api.get_ref()).map_err(|why| (api.span(), why))?;
        }
        if let Some(d) = &self.drain_deadline {
            let deadline = parse_duration(d.get_ref())
                .map_err(|why| (d.span(), format!("drain-deadline: {why}")))?;
            if deadline < MIN_DRAIN_DEADLINE {
                return Err((
                    d.span(),
                    format!(
                        "drain-deadline {:?}: at least {} s",
                        d.get_ref(),
                        MIN_DRAIN_DEADLINE.as_secs()
                    ),
                ));
            }
            kube.drain_deadline = deadline;
        }
        if let Some(on) = self.on_deadline {
            kube.on_deadline = on;
        }
        if let Some(p) = self.empty_dir {
            kube.drain.empty_dir = p;
        }
        if let Some(p) = self.unmanaged {
            kube.drain.unmanaged = p;
        }
        if let Some(gate) = self.ready_gate {
            kube.ready_gate = gate;
        }
        Ok(kube)
    }
}

/// `HOST:PORT` of `https://HOST[:PORT][/]` (port 443 when none is given).
fn api_endpoint(url: &str) -> Result<String, String> {
    let expected = || {
        format!(
            "api {url:?}: expected https://HOST:PORT (the API server, e.g. \"https://10.44.0.10:6443\"; no path)"
        )
    };
    let authority = url
        .strip_prefix("https://")
        .map(|a| a.strip_suffix('/').unwrap_or(a))
        .ok_or_else(expected)?;
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@', ' '])
        || !authority.is_ascii()
    {
        return Err(expected());
    }
    // A port after the host (an IPv6 host is bracketed: its colons are not a port's).
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']')) => {
            (h, Some(p))
        }
        _ => (authority, None),
    };
    if host.is_empty() || (host.starts_with('[') && !host.ends_with(']')) {
        return Err(expected());
    }
    match port {
        None => Ok(format!("{host}:443")),
        Some(p) if p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(authority.to_owned()),
        Some(_) => Err(expected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_an_https_authority_without_a_path() {
        assert_eq!(
            api_endpoint("https://10.44.0.10:6443"),
            Ok("10.44.0.10:6443".into())
        );
        assert_eq!(
            api_endpoint("https://api.lab.example/"),
            Ok("api.lab.example:443".into())
        );
        assert_eq!(
            api_endpoint("https://[fd00::10]:6443"),
            Ok("[fd00::10]:6443".into())
        );
        for bad in [
            "http://10.44.0.10:6443",
            "10.44.0.10:6443",
            "https://",
            "https://10.44.0.10:6443/api",
            "https://10.44.0.10:0",
            "https://10.44.0.10:99999",
            "https://user@10.44.0.10:6443",
            "https://[fd00::10:6443",
        ] {
            assert!(api_endpoint(bad).is_err(), "{bad}");
        }
    }
}
