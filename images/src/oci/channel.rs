//! Channels: a signed release index per channel ("stable" points at image X, digest D), with a
//! version that only grows and an expiry, stored in the same repository as the images (an OCI
//! artifact under tag `channel-NAME`, signed in cosign's layout like the images).
//!
//! What a consumer refuses, and how (the guarantees TUF's timestamp and targets roles give,
//! without TUF's metadata tree, which does not map onto a registry's tags):
//! - an index not signed by a trusted key (unknown key): [`resolve`] verifies the signature;
//! - an index older than one already seen (rollback): the consumer keeps the highest version it
//!   accepted per repository and channel ([`Seen`], persisted atomically) and refuses a lower
//!   one, or the same version with different content;
//! - an index past its expiry (freeze: a mirror replaying a stale but validly signed index);
//! - an image the index does not name (mix-and-match): pulls through a channel fetch the image
//!   by the digest the index names and refuse any other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::artifact::{IMAGE_MANIFEST, ImageManifest, digest_of};
use super::transfer::{self, verify_signature};
use super::{Error, MAX_MANIFEST, Reference, Repository, Tag, check_digest};
use crate::sign::{PrivateKey, PublicKey};

/// Schema of a channel index.
pub const SCHEMA: &str = "slipway.channel.v1";
/// Artifact type of a channel index.
pub const ARTIFACT_TYPE: &str = "application/vnd.slipway.channel.v1";
/// Media type of its config blob (the index JSON).
pub const CONFIG_TYPE: &str = "application/vnd.slipway.channel.index.v1+json";

/// A channel's release index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The channel's name.
    pub channel: String,
    /// Grows by one with every promotion.
    pub version: u64,
    /// Unix time after which the index must not be trusted.
    pub expires: u64,
    /// The image the channel points at.
    pub image: Target,
}

/// What a channel points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// Artifact manifest digest.
    pub digest: String,
}

/// Errors of channels.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Fetching or verifying failed.
    #[error(transparent)]
    Oci(#[from] Error),
    /// No such channel.
    #[error("channel {0} does not exist in {1}")]
    FindChannel(String, String),
    /// The index names another channel.
    #[error("the index under channel {asked} is for channel {found}: refusing it")]
    MatchChannel {
        /// Asked for.
        asked: String,
        /// Found.
        found: String,
    },
    /// Rollback.
    #[error(
        "channel {channel} index version {found} is older than version {seen} already seen: \
         refusing a rollback"
    )]
    RefuseRollback {
        /// Channel.
        channel: String,
        /// Version offered.
        found: u64,
        /// Highest version seen.
        seen: u64,
    },
    /// Same version, other content.
    #[error(
        "channel {channel} index version {version} differs from the one seen before: refusing it"
    )]
    RefuseRewrite {
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
    },
    /// Freeze.
    #[error(
        "channel {channel} index version {version} expired at {expires} (now {now}): refusing a stale index"
    )]
    RefuseExpired {
        /// Channel.
        channel: String,
        /// Version.
        version: u64,
        /// Expiry.
        expires: u64,
        /// Now.
        now: u64,
    },
    /// Mix-and-match.
    #[error("image {found} is not what channel {channel} names ({named}): refusing it")]
    MatchImage {
        /// Channel.
        channel: String,
        /// Digest the channel names.
        named: String,
        /// Digest offered.
        found: String,
    },
    /// The state file.
    #[error("cannot keep the channel state in {path}")]
    KeepState {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bad channel name.
    #[error("{0}")]
    ParseName(String),
}

/// The tag a channel's index lives under.
pub fn channel_tag(channel: &str) -> Result<Tag, ChannelError> {
    Tag::new(&format!("channel-{channel}")).map_err(ChannelError::ParseName)
}

/// Reads and verifies the channel's index (signature only; see [`Seen::accept`]).
fn read_index(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    keys: &[PublicKey],
) -> Result<Option<(Index, String)>, ChannelError> {
    let tag = channel_tag(channel)?;
    let Some(bytes) = repo.get_manifest(tag.as_str())? else {
        return Ok(None);
    };
    let digest = digest_of(&bytes);
    verify_signature(repo, &reference.with_tag(tag), &digest, keys)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::ParseDocument {
            what: "channel manifest",
            why: e.to_string(),
        })?;
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
        || manifest.config.size > MAX_MANIFEST
    {
        return Err(Error::MatchArtifact {
            reference: reference.to_string(),
            found: manifest.artifact_type,
        }
        .into());
    }
    let mut config = Vec::new();
    repo.get_blob(&manifest.config.digest, manifest.config.size, &mut config)?;
    if digest_of(&config) != manifest.config.digest {
        return Err(Error::VerifyBlob {
            digest: manifest.config.digest,
            actual: digest_of(&config),
            size: config.len() as u64,
        }
        .into());
    }
    let index: Index = serde_json::from_slice(&config).map_err(|e| Error::ParseDocument {
        what: "channel index",
        why: e.to_string(),
    })?;
    if index.schema != SCHEMA {
        return Err(Error::ParseDocument {
            what: "channel index",
            why: format!("schema {:?}", index.schema),
        }
        .into());
    }
    if index.channel != channel {
        return Err(ChannelError::MatchChannel {
            asked: channel.to_owned(),
            found: index.channel,
        });
    }
    check_digest(&index.image.digest)?;
    Ok(Some((index, digest)))
}

/// Points `channel` at the image under `reference`'s tag: a new index (version one higher than
/// the current one, valid for `valid_for` seconds), signed with `key`.
pub fn promote(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    key: &PrivateKey,
    now: u64,
    valid_for: u64,
) -> Result<Index, ChannelError> {
    let tag = channel_tag(channel)?;
    let bytes = repo
        .get_manifest(reference.tag().as_str())?
        .ok_or_else(|| Error::FindTag(reference.to_string()))?;
    let digest = digest_of(&bytes);
    let image: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::ParseDocument {
            what: "artifact manifest",
            why: e.to_string(),
        })?;
    let annotation = |k: &str| image.annotations.get(k).cloned().unwrap_or_default();
    let current = read_index(repo, reference, channel, &[key.public()])?;
    let index = Index {
        schema: SCHEMA.into(),
        channel: channel.into(),
        version: current.map_or(1, |(i, _)| i.version + 1),
        expires: now.saturating_add(valid_for),
        image: Target {
            name: annotation("org.opencontainers.image.title"),
            version: annotation("org.opencontainers.image.version"),
            digest,
        },
    };
    let config = serde_json::to_vec(&index).unwrap_or_default();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: IMAGE_MANIFEST.into(),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: super::artifact::Descriptor {
            media_type: CONFIG_TYPE.into(),
            digest: digest_of(&config),
            size: config.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers: Vec::new(),
        annotations: BTreeMap::new(),
    };
    repo.put_bytes(&manifest.config, &config)?;
    let manifest_digest = repo.put_manifest(
        tag.as_str(),
        &manifest.to_bytes(),
        IMAGE_MANIFEST,
        Some(ARTIFACT_TYPE),
    )?;
    transfer::sign(repo, &reference.with_tag(tag), &manifest_digest, key)?;
    Ok(index)
}

/// What a consumer has accepted: the highest index version (and its digest) per repository and
/// channel. Kept in a JSON file, replaced atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// `repository#channel` → (version, index manifest digest).
    pub channels: BTreeMap<String, (u64, String)>,
}

impl Seen {
    /// Reads the state at `path` (empty when absent).
    pub fn read(path: &Path) -> Result<Seen, ChannelError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ChannelError::KeepState {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Seen::default()),
            Err(source) => Err(ChannelError::KeepState {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the state to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::atomic::write(path, &bytes, 0o644).map_err(|source| ChannelError::KeepState {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks `index` (with manifest `digest`) against what was seen and the clock, and
    /// records it.
    pub fn accept(
        &mut self,
        repository: &str,
        index: &Index,
        digest: &str,
        now: u64,
    ) -> Result<(), ChannelError> {
        let key = format!("{repository}#{}", index.channel);
        if let Some((seen, seen_digest)) = self.channels.get(&key) {
            if index.version < *seen {
                return Err(ChannelError::RefuseRollback {
                    channel: index.channel.clone(),
                    found: index.version,
                    seen: *seen,
                });
            }
            if index.version == *seen && digest != seen_digest {
                return Err(ChannelError::RefuseRewrite {
                    channel: index.channel.clone(),
                    version: index.version,
                });
            }
        }
        if now >= index.expires {
            return Err(ChannelError::RefuseExpired {
                channel: index.channel.clone(),
                version: index.version,
                expires: index.expires,
                now,
            });
        }
        self.channels
            .insert(key, (index.version, digest.to_owned()));
        Ok(())
    }
}

/// Resolves `channel` in `reference`'s repository: the verified, current, unexpired index.
/// `seen` is updated (the caller persists it once the pull succeeded).
pub fn resolve(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    keys: &[PublicKey],
    seen: &mut Seen,
    now: u64,
) -> Result<Index, ChannelError> {
    let (index, digest) = read_index(repo, reference, channel, keys)?.ok_or_else(|| {
        ChannelError::FindChannel(channel.to_owned(), reference.repository_name())
    })?;
    seen.accept(&reference.repository_name(), &index, &digest, now)?;
    Ok(index)
}

/// Checks that `digest` is the image `index` names.
pub fn check_named(index: &Index, digest: &str) -> Result<(), ChannelError> {
    if index.image.digest == digest {
        Ok(())
    } else {
        Err(ChannelError::MatchImage {
            channel: index.channel.clone(),
            named: index.image.digest.clone(),
            found: digest.to_owned(),
        })
    }
}

/// Pulls the image `channel` names into `dir`: the index verified and checked against `seen`
/// and the clock, then the image fetched by the digest the index names (and refused if what
/// arrives has another). `seen` is written to `state` only after the pull succeeded.
pub fn pull(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    consumer: &Consumer<'_>,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Index, transfer::Pulled), ChannelError> {
    let mut seen = Seen::read(consumer.state)?;
    let index = resolve(
        repo,
        reference,
        channel,
        consumer.keys,
        &mut seen,
        consumer.now,
    )?;
    let pulled = transfer::pull_named(
        repo,
        reference,
        &index.image.digest,
        dir,
        consumer.keys,
        progress,
    )?;
    check_named(&index, &pulled.digest)?;
    seen.write(consumer.state)?;
    Ok((index, pulled))
}

/// Who pulls through a channel: the keys it trusts, where it keeps what it has seen, and its
/// clock.
#[derive(Debug, Clone, Copy)]
pub struct Consumer<'a> {
    /// Trusted keys.
    pub keys: &'a [PublicKey],
    /// The [`Seen`] state file.
    pub state: &'a Path,
    /// Unix time now.
    pub now: u64,
}
