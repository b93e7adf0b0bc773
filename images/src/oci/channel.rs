//! Channels: a signed release index per channel ("stable" points at image X, digest D), with a
//! version that only grows and an expiry, stored in the same repository as the images (an OCI
//! artifact under tag `channel-NAME`, signed in cosign's layout like the images).
//!
//! What a consumer refuses, and how (the guarantees TUF's timestamp and targets roles give,
//! without TUF's metadata tree, which does not map onto a registry's tags):
//! - an index not signed by a trusted key (unknown key): [`resolve`] verifies the signature,
//!   and says which key signed when it is not trusted (a key rotation the host missed);
//! - an index from another repository (a staging index copied into production): the index
//!   names its repository, and so does its signature; both must be the one pulled from;
//! - an index older than one already seen (rollback): the consumer keeps the highest version it
//!   accepted per repository and channel ([`Seen`], persisted atomically) and refuses a lower
//!   one, or the same version with different content;
//! - an index past its expiry (freeze: a mirror replaying a stale but validly signed index);
//! - an image the index does not name (mix-and-match): pulls through a channel fetch the image
//!   by the digest the index names, refuse any other, and refuse an image whose manifest has
//!   another name, version, os or architecture than the index says; a consumer may also say
//!   which name, os and architecture it takes ([`Expect`]).
//!
//! Format rule: this build writes `slipway.channel.v2`. A `slipway.channel.v1` index (which
//! names neither its repository nor the image's os and architecture) is read by [`promote`]
//! only, for its version, so the first v2 index continues it; consumers refuse it.
//!
//! Key rotation: [`promote`] continues the version of the current index when it verifies under
//! the new key or one of the previous keys it is given ([`Release::previous_keys`]); it never
//! starts again from 1 over an index it cannot read. A host that trusts the new key follows;
//! one that trusts only the retired key refuses the new index and says the channel may have
//! rotated its release key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::artifact::{IMAGE_MANIFEST, ImageManifest, digest_of};
use super::signature::{self, Trust};
use super::transfer;
use super::{Error, Reference, Repository, RepositoryName, Tag, check_digest, get_small_blob};
use crate::manifest::Manifest;
use crate::sign::{PrivateKey, PublicKey};

/// Schema of a channel index.
pub const SCHEMA: &str = "slipway.channel.v2";
/// The schema before indexes named their repository (read for its version only).
pub const SCHEMA_V1: &str = "slipway.channel.v1";
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
    /// The repository the index was promoted in (a [`RepositoryName`]).
    pub repository: String,
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
    /// The image's operating system (`linux`, `windows`).
    pub os: String,
    /// The image's architecture (`x86_64`).
    pub arch: String,
    /// Artifact manifest digest.
    pub digest: String,
}

/// A `slipway.channel.v1` index: only its version is used.
#[derive(Deserialize)]
struct IndexV1 {
    channel: String,
    version: u64,
}

/// Just the schema, to know how to read the rest.
#[derive(Deserialize)]
struct Probe {
    schema: String,
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
    /// The index names another repository: copied from there.
    #[error(
        "channel {channel}'s index was promoted in repository {named}, not {expected} where it \
         is pulled from: an index copied from another repository is refused"
    )]
    MatchRepository {
        /// Channel.
        channel: String,
        /// The repository the index names.
        named: String,
        /// The repository expected.
        expected: String,
    },
    /// An index of an older format.
    #[error(
        "channel {channel}'s index is {found}, which names neither its repository nor the \
         image's os and architecture: refusing it (promote the channel again with this slipway)"
    )]
    RefuseSchema {
        /// Channel.
        channel: String,
        /// Its schema.
        found: String,
    },
    /// The index is signed, for this repository, by no key the consumer trusts.
    #[error(
        "channel {channel} version {} is signed by a key this host does not trust (key id {}): \
         no signature by a trusted key; the channel may have rotated its release key: add the \
         new public key to the trusted keys",
        .version.map_or_else(|| "?".to_owned(), |v| v.to_string()),
        super::key_list(.key_ids)
    )]
    RefuseUntrustedKey {
        /// Channel.
        channel: String,
        /// The version the index claims (unverified), when it could be read.
        version: Option<u64>,
        /// The key ids its signatures claim (unverified).
        key_ids: Vec<String>,
    },
    /// A promotion cannot read the current index with the keys it has, so cannot continue its
    /// version.
    #[error(
        "channel {channel} version {} is signed by key id {}, which is neither the release key \
         nor a previous key given: to move the channel to a new release key, give the retired \
         public key as a previous key (the version must continue: deleting the index would \
         restart it at 1 and every host that saw it would refuse the channel)",
        .version.map_or_else(|| "?".to_owned(), |v| v.to_string()),
        super::key_list(.key_ids)
    )]
    ContinueVersion {
        /// Channel.
        channel: String,
        /// The version the current index claims (unverified).
        version: Option<u64>,
        /// The key ids its signatures claim (unverified).
        key_ids: Vec<String>,
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
    /// The index names an image this consumer does not take.
    #[error(
        "channel {channel} names an image with {what} {named}; this host takes {wanted}: refusing it"
    )]
    RefuseTarget {
        /// Channel.
        channel: String,
        /// `name`, `os` or `arch`.
        what: &'static str,
        /// What the index names.
        named: String,
        /// What the consumer takes.
        wanted: String,
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
    /// The image's manifest disagrees with the index.
    #[error(
        "channel {channel} names an image with {what} {named}, but its manifest says {found}: \
         refusing it"
    )]
    MatchManifest {
        /// Channel.
        channel: String,
        /// `name`, `version`, `os` or `arch`.
        what: &'static str,
        /// What the index says.
        named: String,
        /// What the image's manifest says.
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

/// An index as read.
enum Found {
    /// A current index, verified.
    Current(Index),
    /// A `slipway.channel.v1` index, verified: its version.
    Legacy(u64),
}

/// An index read and verified: what it is, its manifest digest, the key that signed it.
struct Read {
    found: Found,
    digest: String,
    key_id: String,
}

/// The index manifest's config (the index JSON), checked to be a channel index.
fn read_config(
    repo: &mut dyn Repository,
    reference: &Reference,
    bytes: &[u8],
) -> Result<Vec<u8>, Error> {
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| Error::ParseDocument {
            what: "channel manifest",
            why: e.to_string(),
        })?;
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(Error::MatchArtifact {
            reference: reference.to_string(),
            found: manifest.artifact_type,
        });
    }
    get_small_blob(repo, &manifest.config, "channel index")
}

/// The version an index whose signature was refused claims, for the message (never trusted).
fn claimed_version(repo: &mut dyn Repository, reference: &Reference, bytes: &[u8]) -> Option<u64> {
    let config = read_config(repo, reference, bytes).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&config).ok()?;
    value.get("version")?.as_u64()
}

/// Reads and verifies the channel's index (signature and format; see [`resolve`] for the rest).
fn read_index(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    trust: Trust<'_>,
) -> Result<Option<Read>, ChannelError> {
    let tag = channel_tag(channel)?;
    let Some(bytes) = repo.get_manifest(tag.as_str())? else {
        return Ok(None);
    };
    let digest = digest_of(&bytes);
    let key_id = match signature::verify(repo, &reference.with_tag(tag), &digest, trust) {
        Ok(key_id) => key_id,
        Err(Error::RefuseKey { key_ids, .. }) => {
            return Err(ChannelError::RefuseUntrustedKey {
                channel: channel.to_owned(),
                version: claimed_version(repo, reference, &bytes),
                key_ids,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let config = read_config(repo, reference, &bytes)?;
    let parse = |e: serde_json::Error| Error::ParseDocument {
        what: "channel index",
        why: e.to_string(),
    };
    let probe: Probe = serde_json::from_slice(&config).map_err(parse)?;
    let (found, named_channel) = match probe.schema.as_str() {
        SCHEMA => {
            let index: Index = serde_json::from_slice(&config).map_err(parse)?;
            check_digest(&index.image.digest)?;
            let named = index.channel.clone();
            (Found::Current(index), named)
        }
        SCHEMA_V1 => {
            let index: IndexV1 = serde_json::from_slice(&config).map_err(parse)?;
            (Found::Legacy(index.version), index.channel)
        }
        other => {
            return Err(Error::ParseDocument {
                what: "channel index",
                why: format!("schema {other:?}"),
            }
            .into());
        }
    };
    if named_channel != channel {
        return Err(ChannelError::MatchChannel {
            asked: channel.to_owned(),
            found: named_channel,
        });
    }
    Ok(Some(Read {
        found,
        digest,
        key_id,
    }))
}

/// Who moves a channel, and how long the new index lasts.
pub struct Release<'a> {
    /// The release key: signs the new index.
    pub key: &'a PrivateKey,
    /// Keys that may have signed the current index besides `key` (the retired key, when the
    /// channel moves to a new one): the new version continues from an index they verify.
    pub previous_keys: &'a [PublicKey],
    /// Unix time now.
    pub now: u64,
    /// Seconds the new index is valid.
    pub valid_for: u64,
}

/// What a promotion did.
#[derive(Debug, Clone)]
pub struct Promoted {
    /// The new index.
    pub index: Index,
    /// When the previous index was signed by another key than the release key: that key's id
    /// (the channel moved to a new release key).
    pub rotated_from: Option<String>,
}

/// Points `channel` at the image under `reference`'s tag: a new index naming the repository
/// and the image (name, version, os, architecture, digest), one version higher than the
/// current index (which must verify under the release key or a previous key), valid for
/// `release.valid_for` seconds, signed with the release key.
pub fn promote(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    release: &Release<'_>,
) -> Result<Promoted, ChannelError> {
    let repository = RepositoryName::of(reference)?;
    let (digest, art) = transfer::read_artifact(repo, reference, reference.tag().as_str())?;
    let (_, manifest) = transfer::read_config(repo, &art)?;
    let public = release.key.public();
    let mut keys = vec![public.clone()];
    keys.extend(release.previous_keys.iter().cloned());
    let current = match read_index(repo, reference, channel, Trust::keys(&keys)) {
        Ok(current) => current,
        Err(ChannelError::RefuseUntrustedKey {
            channel,
            version,
            key_ids,
        }) => {
            return Err(ChannelError::ContinueVersion {
                channel,
                version,
                key_ids,
            });
        }
        Err(e) => return Err(e),
    };
    let (version, rotated_from) = match current {
        None => (1, None),
        Some(Read { found, key_id, .. }) => {
            let previous = match found {
                Found::Current(index) => index.version,
                Found::Legacy(version) => version,
            };
            let next = previous
                .checked_add(1)
                .ok_or_else(|| Error::ParseDocument {
                    what: "channel index",
                    why: format!("version {previous} cannot grow"),
                })?;
            (next, (key_id != public.key_id()).then_some(key_id))
        }
    };
    let index = Index {
        schema: SCHEMA.into(),
        channel: channel.into(),
        repository: repository.to_string(),
        version,
        expires: release.now.saturating_add(release.valid_for),
        image: Target {
            name: manifest.name,
            version: manifest.version,
            os: manifest.os.to_string(),
            arch: manifest.arch,
            digest,
        },
    };
    publish(repo, reference, &index, release.key)?;
    Ok(Promoted {
        index,
        rotated_from,
    })
}

/// Writes `index` as its channel's index in `reference`'s repository, signed with `key`, as it
/// is: nothing checks its version against the current one ([`promote`] is how a channel moves).
pub fn publish(
    repo: &mut dyn Repository,
    reference: &Reference,
    index: &Index,
    key: &PrivateKey,
) -> Result<String, ChannelError> {
    let tag = channel_tag(&index.channel)?;
    let config = serde_json::to_vec(index).unwrap_or_default();
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
    signature::sign(repo, &reference.with_tag(tag), &manifest_digest, key)?;
    Ok(manifest_digest)
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

/// The images a consumer takes: `None` takes any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Image name.
    pub name: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Architecture.
    pub arch: Option<String>,
}

impl Expect {
    /// Checks the image `index` names against what is expected.
    pub fn check(&self, index: &Index) -> Result<(), ChannelError> {
        let target = &index.image;
        for (what, wanted, named) in [
            ("name", &self.name, &target.name),
            ("os", &self.os, &target.os),
            ("arch", &self.arch, &target.arch),
        ] {
            if let Some(wanted) = wanted
                && wanted != named
            {
                return Err(ChannelError::RefuseTarget {
                    channel: index.channel.clone(),
                    what,
                    named: named.clone(),
                    wanted: wanted.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Who follows a channel: what it trusts, which images it takes, and its clock.
#[derive(Debug, Clone, Copy)]
pub struct Consumer<'a> {
    /// Keys, and the repository signatures must name.
    pub trust: Trust<'a>,
    /// The images it takes.
    pub expect: &'a Expect,
    /// Unix time now.
    pub now: u64,
}

/// Resolves `channel` in `reference`'s repository: the verified, current, unexpired index that
/// names this repository and an image `consumer` takes. `seen` is updated (the caller persists
/// it once the pull succeeded).
pub fn resolve(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    consumer: &Consumer<'_>,
    seen: &mut Seen,
) -> Result<Index, ChannelError> {
    let repository = consumer.trust.repository(reference)?;
    let Read { found, digest, .. } = read_index(repo, reference, channel, consumer.trust)?
        .ok_or_else(|| ChannelError::FindChannel(channel.to_owned(), repository.to_string()))?;
    let index = match found {
        Found::Current(index) => index,
        Found::Legacy(_) => {
            return Err(ChannelError::RefuseSchema {
                channel: channel.to_owned(),
                found: SCHEMA_V1.into(),
            });
        }
    };
    if index.repository != repository.as_str() {
        return Err(ChannelError::MatchRepository {
            channel: index.channel,
            named: index.repository,
            expected: repository.to_string(),
        });
    }
    consumer.expect.check(&index)?;
    seen.accept(repository.as_str(), &index, &digest, consumer.now)?;
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

/// Checks that the image's manifest has the name, version, os and architecture `index` says.
pub fn check_manifest(index: &Index, manifest: &Manifest) -> Result<(), ChannelError> {
    let target = &index.image;
    let os = manifest.os.to_string();
    for (what, named, found) in [
        ("name", &target.name, &manifest.name),
        ("version", &target.version, &manifest.version),
        ("os", &target.os, &os),
        ("arch", &target.arch, &manifest.arch),
    ] {
        if named != found {
            return Err(ChannelError::MatchManifest {
                channel: index.channel.clone(),
                what,
                named: named.clone(),
                found: found.clone(),
            });
        }
    }
    Ok(())
}

/// Pulls the image `channel` names into `dir`: the index verified and checked against the
/// state in `state` and the clock, then the image fetched by the digest the index names and
/// refused if what arrives has another digest, or a manifest other than the index says (before
/// its VHDX is fetched). The state is written only after the pull succeeded.
pub fn pull(
    repo: &mut dyn Repository,
    reference: &Reference,
    channel: &str,
    consumer: &Consumer<'_>,
    state: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Index, transfer::Pulled), ChannelError> {
    let mut seen = Seen::read(state)?;
    let index = resolve(repo, reference, channel, consumer, &mut seen)?;
    let pulled = pull_named(repo, reference, &index, consumer.trust, dir, progress)?;
    seen.write(state)?;
    Ok((index, pulled))
}

/// Pulls the image `index` (already [`resolve`]d) names into `dir`, refusing what arrives with
/// another digest, or a manifest other than the index says (before its VHDX is fetched). Writes
/// no state: a caller that keeps the image somewhere first (the host store) persists the
/// [`Seen`] `resolve` updated only once the image is kept, so a pull that fails anywhere before
/// leaves the state as it was.
pub fn pull_named(
    repo: &mut dyn Repository,
    reference: &Reference,
    index: &Index,
    trust: Trust<'_>,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<transfer::Pulled, ChannelError> {
    let fetched = transfer::fetch(repo, reference, &index.image.digest, trust)?;
    check_named(index, &fetched.digest)?;
    check_manifest(index, &fetched.manifest)?;
    Ok(transfer::download(repo, fetched, dir, progress)?)
}
