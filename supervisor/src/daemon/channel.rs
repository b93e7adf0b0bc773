//! The channel as this host knows it: the last image the channel named that passed every check
//! (the target new nodes boot), the one before it, and how fresh that knowledge is. Pulls run
//! on the blocking pool (the `images` crate is synchronous, shared with the builder) and report
//! back as an event; the loop never waits on the network.
//!
//! Last-known-good: nothing here ever forgets a verified target because a later read failed.
//! A network or registry error makes the channel `stale`; an answer that fails a check
//! (signature, digest, rollback, another repository) makes it `refused`; an expired index makes
//! it `expired`. In each case the target stays, and nodes keep (re)starting on the images their
//! records name. The target and the previous one are persisted, so a host that reboots while
//! the registry is down still has them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use images::oci::channel::ChannelError;
use images::oci::{self, Reference};
use images::sign::PublicKey;
use images::store::{Store, StoredImage};
use serde::{Deserialize, Serialize};

use crate::config;
use crate::model::Digest;
use crate::persist;

/// The persisted channel state (`STATE/channel`).
const RECORD_KIND: &str = "channel";
const RECORD_VERSION: u32 = 1;

/// How fresh the channel's target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Not read since slipwayd started.
    Unknown,
    /// Read and verified on the last pull.
    Fresh,
    /// The last read failed on the network, the registry or the disk: nothing was refused.
    Stale,
    /// The last answer failed a check.
    Refused,
    /// The channel's index expired: no new image until a fresh one is promoted.
    Expired,
}

impl Freshness {
    /// Its name in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Unknown => "unknown",
            Freshness::Fresh => "fresh",
            Freshness::Stale => "stale",
            Freshness::Refused => "refused",
            Freshness::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    target: Option<Digest>,
    previous: Option<Digest>,
    /// Unix seconds of the last successful read.
    verified: i64,
}

/// What the host knows of its channel.
pub struct Channel {
    path: PathBuf,
    /// The verified image new nodes boot.
    pub target: Option<StoredImage>,
    /// The target before it (kept in the store for a rollback).
    pub previous: Option<Digest>,
    /// How fresh `target` is.
    pub freshness: Freshness,
    /// Why it is not fresh.
    pub reason: String,
    /// Unix seconds of the last successful read (0: never).
    pub verified: i64,
    /// Whether a pull runs.
    pub pulling: bool,
}

/// How a pull ended.
pub type Outcome = Result<StoredImage, anyhow::Error>;

impl Channel {
    /// The channel state persisted in `state_dir`, its target read from `store` (a target the
    /// store lost reads as none; the next pull fetches it again).
    pub fn load(state_dir: &Path, store: &Store) -> anyhow::Result<Channel> {
        let path = state_dir.join("channel");
        let record: Record = persist::read(&path, RECORD_KIND, RECORD_VERSION)?.unwrap_or_default();
        let target = match &record.target {
            Some(digest) => store.get(digest.as_ref())?,
            None => None,
        };
        Ok(Channel {
            path,
            target,
            previous: record.previous,
            freshness: Freshness::Unknown,
            reason: String::new(),
            verified: record.verified,
            pulling: false,
        })
    }

    /// The target's digest.
    pub fn target_digest(&self) -> Option<Digest> {
        self.target
            .as_ref()
            .and_then(|image| image.digest.parse().ok())
    }

    /// Takes the end of a pull. Returns whether the target changed.
    pub fn pulled(&mut self, outcome: Outcome, now: i64) -> anyhow::Result<bool> {
        self.pulling = false;
        match outcome {
            Ok(image) => {
                let changed = self.target.as_ref().map(|t| &t.digest) != Some(&image.digest);
                if changed {
                    self.previous = self.target_digest();
                }
                self.target = Some(image);
                self.freshness = Freshness::Fresh;
                self.reason.clear();
                self.verified = now;
                let record = Record {
                    target: self.target_digest(),
                    previous: self.previous.clone(),
                    verified: now,
                };
                persist::write(&self.path, RECORD_KIND, RECORD_VERSION, &record)?;
                Ok(changed)
            }
            Err(e) => {
                self.freshness = classify(&e);
                self.reason = format!("{e:#}");
                Ok(false)
            }
        }
    }

    /// The images the channel keeps alive in the store.
    pub fn keeps(&self) -> impl Iterator<Item = Digest> {
        self.target_digest()
            .into_iter()
            .chain(self.previous.clone())
    }
}

/// What a failed pull means: an I/O error anywhere in its causes (network, registry gone, a
/// disk) is `stale`; an expired index is `expired`; anything else failed a check: `refused`.
pub fn classify(error: &anyhow::Error) -> Freshness {
    for cause in error.chain() {
        if let Some(ChannelError::RefuseExpired { .. }) = cause.downcast_ref::<ChannelError>() {
            return Freshness::Expired;
        }
    }
    if error
        .chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some())
    {
        return Freshness::Stale;
    }
    Freshness::Refused
}

/// Removes from the store every image that neither a node record nor the channel keeps, then
/// pulls the image the channel names and verifies it. Blocking: runs on the blocking pool.
pub fn collect_and_pull(
    source: &config::Source,
    state_dir: &Path,
    keep: &BTreeSet<Digest>,
    now: u64,
) -> Outcome {
    let store = Store::open(&state_dir.join("store"))?;
    let keep: BTreeSet<String> = keep.iter().map(ToString::to_string).collect();
    match store.collect_garbage(&keep) {
        Ok(removed) => {
            for digest in removed {
                tracing::info!(%digest, "removed from the store: no node, channel target or previous target names it");
            }
        }
        Err(e) => tracing::warn!("store garbage collection failed: {e}"),
    }
    pull(source, &store, now)
}

/// The image the channel names, pulled into the store and verified.
fn pull(source: &config::Source, store: &Store, now: u64) -> Outcome {
    let keys = source
        .keys
        .iter()
        .map(|k| PublicKey::read(k))
        .collect::<Result<Vec<_>, _>>()?;
    let reference: Reference = source.reference.parse().map_err(anyhow::Error::msg)?;
    let mut repo = oci::open(&reference, false, source.plain_http)?;
    // The QEMU driver boots x86_64 Linux node VMs (OVMF x64): a channel naming another image
    // is refused before anything is fetched.
    let expect = oci::channel::Expect {
        name: None,
        os: Some("linux".into()),
        arch: Some("x86_64".into()),
    };
    let consumer = oci::channel::Consumer {
        trust: oci::signature::Trust::keys(&keys),
        expect: &expect,
        now,
    };
    let image = store
        .pull_channel(
            repo.as_mut(),
            &reference,
            &source.channel,
            &consumer,
            &mut |_| {},
        )
        .with_context(|| {
            format!(
                "the image channel {} of {} could not be verified",
                source.channel, source.reference
            )
        })?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_io_error_is_stale_an_expired_index_expired_and_a_failed_check_refused() {
        let io = anyhow::Error::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
        .context("cannot fetch the index");
        assert_eq!(classify(&io), Freshness::Stale);
        let expired = anyhow::Error::from(ChannelError::RefuseExpired {
            channel: "stable".into(),
            version: 3,
            expires: 10,
            now: 20,
        })
        .context("the image channel stable could not be verified");
        assert_eq!(classify(&expired), Freshness::Expired);
        let rollback = anyhow::Error::from(ChannelError::RefuseRollback {
            channel: "stable".into(),
            found: 2,
            seen: 3,
        });
        assert_eq!(classify(&rollback), Freshness::Refused);
    }

    #[test]
    fn a_failed_pull_keeps_what_was_verified_and_a_restart_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let digest = Digest::repeated;
        let record = Record {
            target: Some(digest('b')),
            previous: Some(digest('a')),
            verified: 300,
        };
        persist::write(
            &dir.path().join("channel"),
            RECORD_KIND,
            RECORD_VERSION,
            &record,
        )
        .unwrap();
        let mut channel = Channel::load(dir.path(), &store).unwrap();
        assert_eq!(channel.freshness, Freshness::Unknown);
        assert_eq!(channel.previous, Some(digest('a')));
        assert_eq!(channel.verified, 300);
        // The store lacks b: it reads as no target, and the next pull fetches it again.
        assert!(channel.target.is_none());
        let io = anyhow::Error::from(std::io::Error::other("registry gone"));
        assert!(!channel.pulled(Err(io), 400).unwrap());
        assert_eq!(channel.freshness, Freshness::Stale);
        assert_eq!(channel.verified, 300, "a failed read is no verification");
        assert!(
            channel.reason.contains("registry gone"),
            "{}",
            channel.reason
        );
        let again = Channel::load(dir.path(), &store).unwrap();
        assert_eq!(
            again.previous,
            Some(digest('a')),
            "a failed pull rewrites nothing"
        );
    }
}
