//! Draining a node before it stops: kubectl's rules for which pods go, decided by a pure
//! function ([`classify`]), then evictions through the Eviction API until every evicted pod
//! is gone or the deadline passes ([`drain`]). The drain never cordons: the caller cordons
//! first and records that it did, so that it uncordons only what it cordoned.
//!
//! The rules, as kubectl's drain (`k8s.io/kubectl/pkg/drain`) applies them, in its order:
//! a DaemonSet's pod is skipped (its controller ignores cordons and would start it again;
//! kubectl's `--ignore-daemonsets`), a mirror pod is skipped (the kubelet runs it from a file:
//! the API cannot delete it), a pod with an emptyDir volume and a pod with no controller follow
//! the [`DrainPolicy`] (kubectl refuses both unless `--delete-emptydir-data` and `--force`).
//! A finished pod (Succeeded or Failed) always goes. A refusal refuses the whole drain before
//! anything is evicted, as kubectl does. One difference: kubectl fetches a pod's DaemonSet
//! and refuses an orphan (its DaemonSet deleted) without `--force`; this drain skips it
//! like any DaemonSet pod.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::Error;
use super::client::{Client, Evicted};
use super::model::{Pod, PodRef};

/// The first wait between rounds of evictions and checks (a PodDisruptionBudget's 429 is
/// retried after it); doubled after each round without progress.
pub const RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between rounds.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// What to do with a kind of pod that a drain would lose data or service with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodPolicy {
    /// Refuse to drain the node (kubectl's default).
    #[default]
    Refuse,
    /// Evict it anyway (through the Eviction API, so PodDisruptionBudgets still hold).
    Evict,
}

/// How a drain treats pods whose eviction loses something (the `[drain]` of host.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DrainPolicy {
    /// Pods with an emptyDir volume: its data is lost (kubectl's `--delete-emptydir-data`).
    pub empty_dir: PodPolicy,
    /// Pods no controller manages: nothing starts them again (kubectl's `--force`).
    pub unmanaged: PodPolicy,
}

/// Why a pod stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A DaemonSet's pod.
    DaemonSet,
    /// A static pod's mirror.
    Mirror,
}

/// Why a pod refuses the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It has emptyDir data and the policy refuses.
    EmptyDir,
    /// No controller manages it and the policy refuses.
    Unmanaged,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::EmptyDir => "has emptyDir data (drain policy empty-dir = \"refuse\")",
            Refusal::Unmanaged => "has no controller (drain policy unmanaged = \"refuse\")",
        })
    }
}

/// What a drain does with one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Evict it.
    Evict,
    /// Leave it.
    Skip(Skip),
    /// Refuse the drain.
    Refuse(Refusal),
}

/// What a drain does with `pod` under `policy` (kubectl's filters, in kubectl's order).
pub fn classify(pod: &Pod, policy: &DrainPolicy) -> Disposition {
    if pod.finished() {
        // kubectl's DaemonSet, emptyDir and controller filters all let a finished pod go;
        // only the mirror filter does not.
        return if pod.is_mirror() {
            Disposition::Skip(Skip::Mirror)
        } else {
            Disposition::Evict
        };
    }
    if pod.controller().is_some_and(|c| c.kind == "DaemonSet") {
        return Disposition::Skip(Skip::DaemonSet);
    }
    if pod.is_mirror() {
        return Disposition::Skip(Skip::Mirror);
    }
    if pod.has_empty_dir() && policy.empty_dir == PodPolicy::Refuse {
        return Disposition::Refuse(Refusal::EmptyDir);
    }
    if pod.controller().is_none() && policy.unmanaged == PodPolicy::Refuse {
        return Disposition::Refuse(Refusal::Unmanaged);
    }
    Disposition::Evict
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// Pods evicted and gone.
    pub evicted: Vec<PodRef>,
    /// Pods left on the node, and why.
    pub skipped: Vec<(PodRef, Skip)>,
}

/// Why a pod still stands at the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holdout {
    /// Its eviction is refused by a PodDisruptionBudget (the API server's message).
    DisruptionBudget(String),
    /// Its eviction was accepted and it is still terminating.
    Terminating,
    /// The last request about it got no answer, or a server error (retried until the
    /// deadline: an API server behind a control-plane endpoint can be briefly away).
    ApiError(String),
}

/// How a drain ended. `DeadlinePassed` and `Refused` leave the choice to the caller's policy:
/// roll the swap back (uncordon what it cordoned), or force ([`force`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every pod that had to go is gone.
    Drained(Drained),
    /// The policy refuses these pods; nothing was evicted.
    Refused(Vec<(PodRef, Refusal)>),
    /// The deadline passed with these pods still on the node.
    DeadlinePassed {
        /// What was done before the deadline.
        done: Drained,
        /// The pods still there.
        holdouts: Vec<(PodRef, Holdout)>,
    },
}

impl fmt::Display for DrainOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainOutcome::Drained(d) => write!(
                f,
                "drained: {} pods evicted, {} left (DaemonSet or mirror pods)",
                d.evicted.len(),
                d.skipped.len()
            ),
            DrainOutcome::Refused(pods) => {
                f.write_str("drain refused, nothing evicted:")?;
                for (pod, why) in pods {
                    write!(f, " pod {pod} {why};")?;
                }
                Ok(())
            }
            DrainOutcome::DeadlinePassed { done, holdouts } => {
                write!(
                    f,
                    "drain deadline passed ({} pods evicted):",
                    done.evicted.len()
                )?;
                for (pod, why) in holdouts {
                    match why {
                        Holdout::DisruptionBudget(m) => {
                            write!(f, " pod {pod} blocked by a PodDisruptionBudget ({m});")?
                        }
                        Holdout::Terminating => write!(f, " pod {pod} still terminating;")?,
                        Holdout::ApiError(m) => write!(f, " pod {pod}: {m};")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Where one pod of a drain is.
enum Progress {
    /// To be evicted; why the last attempt did not.
    Evicting(Option<Holdout>),
    /// Evicted; waiting until the pod is gone.
    Terminating,
    /// Gone after its eviction.
    Evicted,
    /// Gone before its eviction was accepted.
    Vanished,
}

/// One pod's next step (`uid`: the pod's as listed): `Ok(None)` when it stays where it is.
fn step(
    client: &Client,
    pod: &PodRef,
    uid: &str,
    state: &Progress,
) -> Result<Option<Progress>, Error> {
    Ok(Some(match state {
        Progress::Evicting(_) => match client.evict(pod)? {
            Evicted::Accepted => {
                tracing::info!(%pod, "evicted");
                Progress::Terminating
            }
            Evicted::Blocked { message } => {
                tracing::debug!(%pod, %message, "eviction refused for now");
                Progress::Evicting(Some(Holdout::DisruptionBudget(message)))
            }
            Evicted::Gone => Progress::Vanished,
        },
        // The uid tells a replacement under the same name (a StatefulSet's) from the pod.
        Progress::Terminating => match client.pod(pod)? {
            Some(p) if p.metadata.uid == uid => return Ok(None),
            _ => Progress::Evicted,
        },
        Progress::Evicted | Progress::Vanished => return Ok(None),
    }))
}

/// Errors worth retrying until the deadline: no answer, or a server error.
pub fn transient(error: &Error) -> bool {
    match error {
        Error::Request { .. } => true,
        Error::Api { code, .. } => *code >= 500,
        _ => false,
    }
}

/// Drains `node` under `policy`: lists its pods, refuses (evicting nothing) when the policy
/// refuses one, otherwise evicts every pod [`classify`] says to, retrying refusals by a
/// PodDisruptionBudget with backoff, and waits until each evicted pod is gone (or replaced
/// by a pod of another uid). Returns when the node is drained or at `deadline`, whichever
/// comes first. Requests that get no answer or a server error are retried until the
/// deadline too; an error on listing the pods, or a client error (4xx other than 404 and
/// 429), ends the drain with `Err` (nothing more is evicted). The node should be cordoned
/// first ([`Client::cordon`]).
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the executor drains with drain_until, to cancel")
)]
pub fn drain(
    client: &Client,
    node: &str,
    policy: &DrainPolicy,
    deadline: Instant,
) -> Result<DrainOutcome, Error> {
    drain_until(client, node, policy, deadline, &AtomicBool::new(false))
}

/// [`drain`], which also ends as at its deadline once `cancel` is set (checked between rounds
/// of evictions: within [`RETRY_MAX`] and a round's requests).
#[tracing::instrument(skip(client, policy, deadline, cancel), err)]
pub fn drain_until(
    client: &Client,
    node: &str,
    policy: &DrainPolicy,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<DrainOutcome, Error> {
    let mut skipped = Vec::new();
    let mut refused = Vec::new();
    let mut pods = Vec::new();
    for pod in client.pods_on_node(node)? {
        match classify(&pod, policy) {
            Disposition::Evict => {
                let uid = pod.metadata.uid.clone();
                pods.push((pod.key(), uid, Progress::Evicting(None)));
            }
            Disposition::Skip(why) => skipped.push((pod.key(), why)),
            Disposition::Refuse(why) => refused.push((pod.key(), why)),
        }
    }
    if !refused.is_empty() {
        return Ok(DrainOutcome::Refused(refused));
    }
    let mut wait = RETRY_FIRST;
    loop {
        let mut progress = false;
        for (pod, uid, state) in &mut pods {
            match step(client, pod, uid, state) {
                Ok(Some(next)) => {
                    // A refusal again is no progress; anything else is.
                    progress |= !matches!(
                        (&*state, &next),
                        (Progress::Evicting(_), Progress::Evicting(_))
                    );
                    *state = next;
                }
                Ok(None) => {}
                Err(e) if transient(&e) => {
                    tracing::warn!(%pod, error = %e, "retrying");
                    if let Progress::Evicting(why) = state {
                        *why = Some(Holdout::ApiError(e.to_string()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let finished = |s: &Progress| matches!(s, Progress::Evicted | Progress::Vanished);
        let evicted = || {
            pods.iter()
                .filter(|(_, _, s)| matches!(s, Progress::Evicted))
                .map(|(p, _, _)| p.clone())
                .collect()
        };
        if pods.iter().all(|(_, _, s)| finished(s)) {
            return Ok(DrainOutcome::Drained(Drained {
                evicted: evicted(),
                skipped,
            }));
        }
        let now = Instant::now();
        if now >= deadline || cancel.load(Ordering::SeqCst) {
            let holdouts = pods
                .iter()
                .filter_map(|(pod, _, s)| match s {
                    Progress::Evicting(why) => Some((
                        pod.clone(),
                        why.clone()
                            .unwrap_or_else(|| Holdout::ApiError("not tried".into())),
                    )),
                    Progress::Terminating => Some((pod.clone(), Holdout::Terminating)),
                    Progress::Evicted | Progress::Vanished => None,
                })
                .collect();
            return Ok(DrainOutcome::DeadlinePassed {
                done: Drained {
                    evicted: evicted(),
                    skipped,
                },
                holdouts,
            });
        }
        if progress {
            wait = RETRY_FIRST;
        }
        std::thread::sleep(jitter(wait).min(deadline - now));
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Deletes `pods` (bypassing PodDisruptionBudgets, with each pod's own grace period), for a
/// caller whose policy at a drain's deadline is to force, and waits until they are gone or
/// `deadline` passes. Returns the pods still there.
#[tracing::instrument(skip(client, deadline), err)]
pub fn force(client: &Client, pods: &[PodRef], deadline: Instant) -> Result<Vec<PodRef>, Error> {
    let mut waiting = Vec::new();
    for pod in pods {
        if let Some(p) = client.pod(pod)? {
            client.delete_pod(pod, None)?;
            tracing::warn!(%pod, "pod deleted (forced drain)");
            waiting.push((pod.clone(), p.metadata.uid));
        }
    }
    let mut wait = RETRY_FIRST;
    loop {
        let mut still = Vec::new();
        for (pod, uid) in waiting {
            if client.pod(&pod)?.is_some_and(|p| p.metadata.uid == uid) {
                still.push((pod, uid));
            }
        }
        waiting = still;
        let now = Instant::now();
        if waiting.is_empty() || now >= deadline {
            return Ok(waiting.into_iter().map(|(p, _)| p).collect());
        }
        std::thread::sleep(jitter(wait).min(deadline - now));
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// `wait` less up to a quarter, at random, so that hosts draining at once spread out.
pub fn jitter(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    // Without randomness the wait is just not spread.
    let _ = getrandom::fill(&mut byte);
    wait - wait / 4 * u32::from(byte[0]) / 255
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kube::model::{ObjectMeta, OwnerReference, PodSpec, PodStatus, Volume};

    fn pod(owner: Option<&str>, mirror: bool, empty_dir: bool, phase: &str) -> Pod {
        let mut metadata = ObjectMeta {
            name: "p".into(),
            namespace: "ns".into(),
            ..ObjectMeta::default()
        };
        if let Some(kind) = owner {
            metadata.owner_references.push(OwnerReference {
                kind: kind.into(),
                name: "owner".into(),
                controller: Some(true),
            });
        }
        if mirror {
            metadata
                .annotations
                .insert(crate::kube::model::MIRROR_POD_ANNOTATION.into(), "x".into());
        }
        let volumes = if empty_dir {
            vec![Volume {
                name: "scratch".into(),
                empty_dir: Some(serde_json::json!({})),
            }]
        } else {
            Vec::new()
        };
        Pod {
            metadata,
            spec: PodSpec {
                node_name: "n".into(),
                volumes,
            },
            status: PodStatus {
                phase: phase.into(),
            },
        }
    }

    #[test]
    fn kubectls_rules_decide_which_pods_go() {
        let strict = DrainPolicy::default();
        let lax = DrainPolicy {
            empty_dir: PodPolicy::Evict,
            unmanaged: PodPolicy::Evict,
        };
        use Disposition::*;
        let cases = [
            // (owner, mirror, emptyDir, phase) → strict, lax
            ((Some("ReplicaSet"), false, false, "Running"), Evict, Evict),
            (
                (Some("DaemonSet"), false, false, "Running"),
                Skip(self::Skip::DaemonSet),
                Skip(self::Skip::DaemonSet),
            ),
            // A DaemonSet's pod with emptyDir is still only skipped: the filter comes first.
            (
                (Some("DaemonSet"), false, true, "Running"),
                Skip(self::Skip::DaemonSet),
                Skip(self::Skip::DaemonSet),
            ),
            (
                (Some("Node"), true, false, "Running"),
                Skip(self::Skip::Mirror),
                Skip(self::Skip::Mirror),
            ),
            (
                (None, true, true, "Running"),
                Skip(self::Skip::Mirror),
                Skip(self::Skip::Mirror),
            ),
            (
                (Some("ReplicaSet"), false, true, "Running"),
                Refuse(Refusal::EmptyDir),
                Evict,
            ),
            (
                (None, false, false, "Running"),
                Refuse(Refusal::Unmanaged),
                Evict,
            ),
            (
                (None, false, true, "Pending"),
                Refuse(Refusal::EmptyDir),
                Evict,
            ),
            // Finished pods always go, whatever they own or hold.
            ((None, false, true, "Succeeded"), Evict, Evict),
            ((Some("DaemonSet"), false, false, "Failed"), Evict, Evict),
            (
                (None, true, false, "Succeeded"),
                Skip(self::Skip::Mirror),
                Skip(self::Skip::Mirror),
            ),
        ];
        for ((owner, mirror, empty_dir, phase), want_strict, want_lax) in cases {
            let p = pod(owner, mirror, empty_dir, phase);
            let case = format!("{owner:?} mirror={mirror} emptyDir={empty_dir} {phase}");
            assert_eq!(classify(&p, &strict), want_strict, "{case}");
            assert_eq!(classify(&p, &lax), want_lax, "{case}");
        }
        // An owner that is not the controller does not count.
        let mut p = pod(Some("ReplicaSet"), false, false, "Running");
        p.metadata.owner_references[0].controller = None;
        assert_eq!(classify(&p, &strict), Refuse(Refusal::Unmanaged));
    }

    #[test]
    fn the_policy_reads_from_toml_and_refuses_by_default() {
        let p: DrainPolicy = toml::from_str("empty-dir = \"evict\"").unwrap();
        assert_eq!(p.empty_dir, PodPolicy::Evict);
        assert_eq!(p.unmanaged, PodPolicy::Refuse);
        assert!(toml::from_str::<DrainPolicy>("unmanaged = \"delete\"").is_err());
        assert!(toml::from_str::<DrainPolicy>("force = true").is_err());
    }

    #[test]
    fn jitter_shortens_by_at_most_a_quarter() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(400));
            assert!(j >= Duration::from_millis(300) && j <= Duration::from_millis(400));
        }
    }
}
