//! The channels as this host knows them, one per node OS (`[source] channel` for Linux nodes,
//! `windows-channel` for Windows ones): the last image each named that passed every check (the
//! target its OS's new nodes boot), the one before it, and how fresh that knowledge is. Pulls
//! run on the blocking pool (the `images` crate is synchronous, shared with the builder), one
//! channel after the other in one task (they share the store and its channel state), and report
//! back as an event per channel; the loop never waits on the network.
//!
//! A channel names one image of one OS: an image whose manifest's `os` is not its channel's is
//! refused (the pull already expects the OS; the manifest is checked again here), so a Linux
//! image never becomes a Windows node's target nor the other way round.
//!
//! Last-known-good: nothing here ever forgets a verified target because a later read failed.
//! A network or registry error makes the channel `stale`; an answer that fails a check
//! (signature, digest, rollback, another repository) makes it `refused`; an expired index makes
//! it `expired`. In each case the target stays, and nodes keep (re)starting on the images their
//! records name. The target and the previous one are persisted, so a host that reboots while
//! the registry is down still has them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use images::oci::channel::ChannelError;
use images::oci::{self, Reference};
use images::sign::PublicKey;
use images::store::{Store, StoredImage};
use serde::{Deserialize, Serialize};

use crate::config::{self, NodeOs};
use crate::model::Digest;
use crate::persist;

/// The persisted channel state (`STATE/channel` for the Linux channel, as before there were
/// two; `STATE/channel-windows`).
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

/// What the host knows of one OS's channel.
pub struct Channel {
    path: PathBuf,
    /// The OS whose nodes follow it.
    pub os: NodeOs,
    /// Its name (`[source] channel` or `windows-channel`).
    pub name: String,
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

/// The file the state of `os`'s channel is persisted in.
fn record_path(state_dir: &Path, os: NodeOs) -> PathBuf {
    match os {
        NodeOs::Linux => state_dir.join("channel"),
        NodeOs::Windows => state_dir.join("channel-windows"),
    }
}

/// Why `image` cannot be the target of `os`'s channel `name`: its manifest is another OS's.
pub fn os_mismatch(os: NodeOs, name: &str, image: &StoredImage) -> Option<String> {
    let image_os = image.manifest.os.name();
    (image_os != os.name()).then(|| {
        format!(
            "the channel {name} named {} {} ({}), a {image_os} image: the {os} nodes' channel must \
             name {os} images (promote a {os} image to {name}); nothing boots it",
            image.manifest.name, image.manifest.version, image.digest
        )
    })
}

/// Why node `node` must not boot `image`: its manifest is another OS's than the node's.
pub fn wrong_os(node: &config::Node, image: &StoredImage) -> Option<String> {
    let image_os = image.manifest.os.name();
    (image_os != node.os.name()).then(|| {
        format!(
            "its image {} {} ({}) is a {image_os} image and node {} runs {} (os in host.toml): refused, never booted (a node changes OS only as a new node: remove it from host.toml, `slipwayd purge` it, then add it back)",
            image.manifest.name, image.manifest.version, image.digest, node.name, node.os
        )
    })
}

impl Channel {
    /// The state of `os`'s channel `name` persisted in `state_dir`, its target read from
    /// `store` (a target the store lost reads as none; the next pull fetches it again; one of
    /// another OS reads as none too, refused).
    pub fn load(
        state_dir: &Path,
        os: NodeOs,
        name: &str,
        store: &Store,
    ) -> anyhow::Result<Channel> {
        let path = record_path(state_dir, os);
        let record: Record = persist::read(&path, RECORD_KIND, RECORD_VERSION)?.unwrap_or_default();
        let mut target = match &record.target {
            Some(digest) => store.get(digest.as_ref())?,
            None => None,
        };
        let mut freshness = Freshness::Unknown;
        let mut reason = String::new();
        if let Some(why) = target.as_ref().and_then(|t| os_mismatch(os, name, t)) {
            target = None;
            freshness = Freshness::Refused;
            reason = why;
        }
        Ok(Channel {
            path,
            os,
            name: name.to_owned(),
            target,
            previous: record.previous,
            freshness,
            reason,
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
                if let Some(why) = os_mismatch(self.os, &self.name, &image) {
                    self.freshness = Freshness::Refused;
                    self.reason = why;
                    return Ok(false);
                }
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

/// The channels a host follows: the Linux nodes' always, the Windows nodes' when
/// `[source] windows-channel` is given.
pub struct Channels {
    /// `[source] channel`.
    pub linux: Channel,
    /// `[source] windows-channel`.
    pub windows: Option<Channel>,
}

impl Channels {
    /// The channels `source` names, their state read from `state_dir` (see [`Channel::load`]).
    pub fn load(
        state_dir: &Path,
        source: &config::Source,
        store: &Store,
    ) -> anyhow::Result<Channels> {
        let windows = match &source.windows_channel {
            Some(name) => Some(Channel::load(state_dir, NodeOs::Windows, name, store)?),
            None => None,
        };
        Ok(Channels {
            linux: Channel::load(state_dir, NodeOs::Linux, &source.channel, store)?,
            windows,
        })
    }

    /// Follows an edited `[source]`: channels renamed, the Windows one taken up (its state read
    /// back) or dropped (its state file stays, for when it comes back).
    pub fn configure(
        &mut self,
        state_dir: &Path,
        source: &config::Source,
        store: &Store,
    ) -> anyhow::Result<()> {
        self.linux.name.clone_from(&source.channel);
        match (&source.windows_channel, &mut self.windows) {
            (None, windows) => *windows = None,
            (Some(name), Some(windows)) => windows.name.clone_from(name),
            (Some(name), windows @ None) => {
                *windows = Some(Channel::load(state_dir, NodeOs::Windows, name, store)?);
            }
        }
        Ok(())
    }

    /// The channel `os`'s nodes follow, if the host has one.
    pub fn get(&self, os: NodeOs) -> Option<&Channel> {
        match os {
            NodeOs::Linux => Some(&self.linux),
            NodeOs::Windows => self.windows.as_ref(),
        }
    }

    /// The channel `os`'s nodes follow, to change.
    pub fn get_mut(&mut self, os: NodeOs) -> Option<&mut Channel> {
        match os {
            NodeOs::Linux => Some(&mut self.linux),
            NodeOs::Windows => self.windows.as_mut(),
        }
    }

    /// Every channel followed, Linux first.
    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        std::iter::once(&self.linux).chain(self.windows.as_ref())
    }

    /// The verified target of every channel that has one, by OS.
    pub fn targets(&self) -> BTreeMap<NodeOs, Digest> {
        self.iter()
            .filter_map(|c| Some((c.os, c.target_digest()?)))
            .collect()
    }

    /// The images every channel keeps alive in the store.
    pub fn keeps(&self) -> impl Iterator<Item = Digest> + '_ {
        self.iter().flat_map(Channel::keeps)
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

/// Removes from the store every image that neither a node record nor a channel keeps, then
/// pulls the image each of `channels` (an OS and its channel's name) names and verifies it,
/// one after the other: how each ended. Blocking: runs on the blocking pool.
pub fn collect_and_pull(
    source: &config::Source,
    state_dir: &Path,
    keep: &BTreeSet<Digest>,
    channels: &[(NodeOs, String)],
    now: u64,
) -> Vec<(NodeOs, Outcome)> {
    let root = state_dir.join("store");
    let keep: BTreeSet<String> = keep.iter().map(ToString::to_string).collect();
    match Store::open(&root).and_then(|store| store.collect_garbage(&keep)) {
        Ok(removed) => {
            for digest in removed {
                tracing::info!(%digest, "removed from the store: no node, channel target or previous target names it");
            }
        }
        Err(e) => tracing::warn!("store garbage collection failed: {e}"),
    }
    channels
        .iter()
        .map(|(os, name)| {
            let outcome = Store::open(&root)
                .map_err(anyhow::Error::from)
                .and_then(|store| pull(source, &store, *os, name, now));
            (*os, outcome)
        })
        .collect()
}

/// The image `os`'s channel `name` names, pulled into the store and verified.
fn pull(source: &config::Source, store: &Store, os: NodeOs, name: &str, now: u64) -> Outcome {
    let keys = source
        .keys
        .iter()
        .map(|k| PublicKey::read(k))
        .collect::<Result<Vec<_>, _>>()?;
    let reference: Reference = source.reference.parse().map_err(anyhow::Error::msg)?;
    let mut repo = oci::open(&reference, false, source.plain_http)?;
    // Node VMs are x86_64 (OVMF x64, Hyper-V Generation 2), and each channel's OS is its
    // nodes': a channel naming another image is refused before anything is fetched.
    let expect = oci::channel::Expect {
        name: None,
        os: Some(os.name().into()),
        arch: Some("x86_64".into()),
    };
    let consumer = oci::channel::Consumer {
        trust: oci::signature::Trust::keys(&keys),
        expect: &expect,
        now,
    };
    let image = store
        .pull_channel(repo.as_mut(), &reference, name, &consumer, &mut |_| {})
        .with_context(|| {
            format!(
                "the image channel {name} of {} (the {os} nodes') could not be verified",
                source.reference
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
        let mut channel = Channel::load(dir.path(), NodeOs::Linux, "stable", &store).unwrap();
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
        let again = Channel::load(dir.path(), NodeOs::Linux, "stable", &store).unwrap();
        assert_eq!(
            again.previous,
            Some(digest('a')),
            "a failed pull rewrites nothing"
        );
    }
}
