//! Cosign signatures of OCI manifests, bound to the repository they live in.
//!
//! A signature is a cosign simple-signing payload naming the manifest digest
//! (`critical.image.docker-manifest-digest`) and the repository
//! (`critical.identity.docker-reference`, a [`RepositoryName`]), stored as cosign stores it:
//! a manifest under the tag `sha256-DIGEST.sig`. A consumer accepts a signature only when it
//! names the digest it pulls *and* the repository it pulls from, so a signature copied from a
//! staging repository into production is refused even though its key is trusted in both.
//!
//! Signatures made before a push (`slipway sign`, `build --key`) are kept beside the image as
//! `NAME-VERSION.sig.json` ([`LocalSignature`]); signed with `--repository`, they name the
//! repository the image will be pushed to, and a push without the key publishes them as they
//! are (after checking they name the image and the push's repository).

use std::path::PathBuf;

use super::artifact::{
    IMAGE_MANIFEST, ImageManifest, KEY_ID_ANNOTATION, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_TYPE,
    digest_of, signature_manifest, signature_tag,
};
use super::transfer::LocalImage;
use super::{Error, Reference, Repository, RepositoryName, get_small_blob};
use crate::sign::{PrivateKey, PublicKey, SimpleSigning};

/// The `docker-reference` of a signature made without naming a repository: `local:NAME`. It can
/// never equal a [`RepositoryName`] (those hold a `/`), so such a signature is good for
/// `slipway verify` and refused everywhere else.
pub const UNBOUND_PREFIX: &str = "local:";

/// What a consumer trusts: the keys, and the repository the signatures must name.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// Signatures by these keys are accepted.
    pub keys: &'a [PublicKey],
    /// The repository signatures must name. `None`: the repository pulled from. Set it to read
    /// from a mirror, or from a layout moved away from the path it was signed for.
    pub signed_for: Option<&'a RepositoryName>,
}

impl<'a> Trust<'a> {
    /// Trusts `keys` for signatures naming the repository pulled from.
    pub fn keys(keys: &'a [PublicKey]) -> Trust<'a> {
        Trust {
            keys,
            signed_for: None,
        }
    }

    /// The repository that signatures of what is pulled through `reference` must name.
    pub fn repository(&self, reference: &Reference) -> Result<RepositoryName, Error> {
        match self.signed_for {
            Some(name) => Ok(name.clone()),
            None => RepositoryName::of(reference),
        }
    }
}

/// Stores the signature `signature` (base64) of `payload` by key `key_id` for manifest
/// `digest` in `repo`, under cosign's tag `sha256-HEX.sig`.
pub fn publish(
    repo: &mut dyn Repository,
    digest: &str,
    payload: &[u8],
    signature: &str,
    key_id: &str,
) -> Result<(), Error> {
    let (manifest, config) = signature_manifest(payload, signature, key_id);
    repo.put_bytes(&manifest.config, &config)?;
    repo.put_bytes(&manifest.layers[0], payload)?;
    repo.put_manifest(
        &signature_tag(digest),
        &manifest.to_bytes(),
        IMAGE_MANIFEST,
        None,
    )?;
    Ok(())
}

/// Signs manifest `digest` for the repository `reference` points into, with `key`.
pub fn sign(
    repo: &mut dyn Repository,
    reference: &Reference,
    digest: &str,
    key: &PrivateKey,
) -> Result<(), Error> {
    let repository = RepositoryName::of(reference)?;
    let payload = SimpleSigning::new(repository.as_str(), digest).to_bytes();
    publish(
        repo,
        digest,
        &payload,
        &key.sign(&payload),
        &key.public().key_id(),
    )
}

/// Why one stored signature was not accepted.
enum Refusal {
    /// It names another repository.
    OtherRepository(String),
    /// No trusted key verifies it; the key id it claims, if any.
    UntrustedKey(Option<String>),
    /// Anything else.
    Malformed(String),
}

/// Checks that manifest `digest`, pulled through `reference`, has a cosign signature naming it
/// and the repository `trust` expects, by one of `trust`'s keys; returns the key's id.
pub fn verify(
    repo: &mut dyn Repository,
    reference: &Reference,
    digest: &str,
    trust: Trust<'_>,
) -> Result<String, Error> {
    let expected = trust.repository(reference)?;
    let refuse = |why: String| Error::VerifySignature {
        reference: reference.to_string(),
        digest: digest.to_owned(),
        why,
    };
    let Some(bytes) = repo.get_manifest(&signature_tag(digest))? else {
        return Err(refuse("no signature is stored for it".into()));
    };
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::ParseDocument {
            what: "signature manifest",
            why: e.to_string(),
        })?;
    let mut refusals = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_TYPE)
    {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        let payload = match get_small_blob(repo, layer, "signature payload") {
            Ok(payload) => payload,
            Err(e @ Error::Transfer { .. }) => return Err(e),
            Err(e) => {
                refusals.push(Refusal::Malformed(e.to_string()));
                continue;
            }
        };
        let parsed = match SimpleSigning::parse(&payload) {
            Ok(parsed) => parsed,
            Err(e) => {
                refusals.push(Refusal::Malformed(e.to_string()));
                continue;
            }
        };
        if parsed.critical.image.docker_manifest_digest != digest {
            refusals.push(Refusal::Malformed(format!(
                "a signature for {}",
                parsed.critical.image.docker_manifest_digest
            )));
            continue;
        }
        if parsed.critical.identity.docker_reference != expected.as_str() {
            refusals.push(Refusal::OtherRepository(
                parsed.critical.identity.docker_reference,
            ));
            continue;
        }
        if let Some(key) = trust
            .keys
            .iter()
            .find(|k| k.verify(&payload, signature).is_ok())
        {
            return Ok(key.key_id());
        }
        let claimed = layer.annotations.get(KEY_ID_ANNOTATION).cloned();
        match claimed {
            Some(id) if trust.keys.iter().any(|k| k.key_id() == id) => {
                refusals.push(Refusal::Malformed(format!(
                    "the signature by key {id} does not match its payload: altered"
                )));
            }
            claimed => refusals.push(Refusal::UntrustedKey(claimed)),
        }
    }
    Err(refusal(refusals, reference, digest, &expected))
}

/// The error for a signature manifest none of whose signatures was accepted: another
/// repository first (the replay it is), then untrusted keys (maybe a rotation), then the rest.
fn refusal(
    refusals: Vec<Refusal>,
    reference: &Reference,
    digest: &str,
    expected: &RepositoryName,
) -> Error {
    if let Some(signed_for) = refusals.iter().find_map(|r| match r {
        Refusal::OtherRepository(name) => Some(name.clone()),
        _ => None,
    }) {
        return Error::RefuseRepository {
            reference: reference.to_string(),
            digest: digest.to_owned(),
            signed_for,
            expected: expected.to_string(),
        };
    }
    if !refusals.is_empty()
        && refusals
            .iter()
            .all(|r| matches!(r, Refusal::UntrustedKey(_)))
    {
        let mut key_ids: Vec<String> = refusals
            .into_iter()
            .filter_map(|r| match r {
                Refusal::UntrustedKey(id) => id,
                _ => None,
            })
            .collect();
        key_ids.sort();
        key_ids.dedup();
        return Error::RefuseKey {
            reference: reference.to_string(),
            digest: digest.to_owned(),
            key_ids,
        };
    }
    let mut why: Vec<String> = refusals
        .into_iter()
        .map(|r| match r {
            Refusal::Malformed(why) => why,
            Refusal::UntrustedKey(id) => format!(
                "a signature by an untrusted key (key id {})",
                id.as_deref().unwrap_or("unknown")
            ),
            Refusal::OtherRepository(name) => format!("a signature for {name}"),
        })
        .collect();
    if why.is_empty() {
        why.push("the signature manifest holds no cosign signature".into());
    }
    Error::VerifySignature {
        reference: reference.to_string(),
        digest: digest.to_owned(),
        why: why.join("; "),
    }
}

/// A signature made before the push, as `slipway sign` and `build --key` write it beside the
/// image: the cosign payload for the artifact digest and its signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalSignature {
    /// The artifact manifest digest signed.
    pub digest: String,
    /// The simple-signing payload, as text (published byte for byte).
    pub payload: String,
    /// base64 DER signature.
    pub signature: String,
    /// The signing key's id.
    pub key_id: String,
}

/// Where the local signature of `image` lives: `NAME-VERSION.sig.json`.
pub fn local_path(image: &LocalImage) -> PathBuf {
    image.manifest_path.with_file_name(format!(
        "{}-{}.sig.json",
        image.manifest.name, image.manifest.version
    ))
}

/// Signs `image` for `repository` (where it will be pushed) and writes its signature file.
/// Without a repository the signature names `local:NAME`: good for `slipway verify`, refused by
/// a keyless push and by every pull.
pub fn sign_local(
    image: &LocalImage,
    key: &PrivateKey,
    repository: Option<&RepositoryName>,
) -> Result<PathBuf, Error> {
    image.verify_vhdx()?;
    let digest = digest_of(&image.artifact().to_bytes());
    let identity = repository.map_or_else(
        || format!("{UNBOUND_PREFIX}{}", image.manifest.name),
        RepositoryName::to_string,
    );
    let payload = SimpleSigning::new(&identity, &digest).to_bytes();
    let signature = LocalSignature {
        digest,
        payload: String::from_utf8_lossy(&payload).into_owned(),
        signature: key.sign(&payload),
        key_id: key.public().key_id(),
    };
    let path = local_path(image);
    let text = serde_json::to_vec_pretty(&signature).unwrap_or_default();
    crate::atomic::write(&path, &text, 0o644).map_err(|source| Error::WriteLocal {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Reads the local signature of `image`, if it has one.
pub fn read_local(image: &LocalImage) -> Result<Option<LocalSignature>, Error> {
    let path = local_path(image);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::ReadLocal { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::ParseDocument {
            what: "signature file",
            why: e.to_string(),
        })
}

impl LocalSignature {
    /// Checks that this signature of `image` can be published in `repository`: its payload
    /// names the image's artifact digest and that repository. (Whether the key is trusted is
    /// for the consumers to say: a push needs no key.)
    pub fn check_for(
        &self,
        image: &LocalImage,
        repository: &RepositoryName,
    ) -> Result<SimpleSigning, Error> {
        let refuse = |why: String| Error::MatchLocalSignature {
            path: local_path(image),
            why,
        };
        let payload =
            SimpleSigning::parse(self.payload.as_bytes()).map_err(|e| refuse(e.to_string()))?;
        let digest = digest_of(&image.artifact().to_bytes());
        if payload.critical.image.docker_manifest_digest != digest || self.digest != digest {
            return Err(refuse(format!(
                "it signs artifact {}, the image is {digest}: the manifest or the VHDX changed \
                 after signing",
                payload.critical.image.docker_manifest_digest
            )));
        }
        let named = &payload.critical.identity.docker_reference;
        if named.starts_with(UNBOUND_PREFIX) {
            return Err(refuse(format!(
                "it names no repository (signed without --repository): sign it for \
                 {repository} (slipway sign IMAGE --key KEY --repository {repository}) or push \
                 with --key"
            )));
        }
        if named != repository.as_str() {
            return Err(refuse(format!(
                "it signs the image for repository {named}, not {repository} where it is pushed: \
                 sign it for {repository} (slipway sign IMAGE --key KEY --repository \
                 {repository}) or push with --key"
            )));
        }
        Ok(payload)
    }
}

/// Checks a local image: the VHDX against the manifest, the signature against the artifact
/// digest and `key`. Returns the verified payload (the digest and repository it names).
pub fn verify_local(image: &LocalImage, key: &PublicKey) -> Result<SimpleSigning, Error> {
    let path = local_path(image);
    let signature = read_local(image)?.ok_or_else(|| Error::ReadLocal {
        path: path.clone(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let digest = digest_of(&image.artifact().to_bytes());
    let refuse = |why: String| Error::VerifySignature {
        reference: image.manifest_path.display().to_string(),
        digest: digest.clone(),
        why,
    };
    let payload =
        SimpleSigning::parse(signature.payload.as_bytes()).map_err(|e| refuse(e.to_string()))?;
    if payload.critical.image.docker_manifest_digest != digest {
        return Err(refuse(format!(
            "the signature is for {}: the manifest or the VHDX changed after signing",
            payload.critical.image.docker_manifest_digest
        )));
    }
    key.verify(signature.payload.as_bytes(), &signature.signature)
        .map_err(|e| refuse(e.to_string()))?;
    image.verify_vhdx()?;
    Ok(payload)
}
