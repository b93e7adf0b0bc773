//! Pushing a built node image (manifest + VHDX) as an OCI artifact with its cosign signature,
//! and pulling one back: signature, digests and manifest checked before the VHDX is fetched,
//! the VHDX checked before it appears in the destination.

use std::path::{Path, PathBuf};

use super::artifact::{
    ARTIFACT_TYPE, CONFIG_TYPE, IMAGE_MANIFEST, ImageManifest, SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_TYPE, VHDX_TYPE, digest_of, signature_manifest, signature_tag,
};
use super::{BlobSink, BlobSource, Error, FileSink, MAX_MANIFEST, Reference, Repository};
use crate::manifest::Manifest;
use crate::sign::{PrivateKey, PublicKey, SimpleSigning};

/// A built image on disk: `NAME-VERSION.manifest.json` and the VHDX it names, beside it.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// Its exact bytes (the artifact's config blob).
    pub manifest_bytes: Vec<u8>,
    /// Parsed.
    pub manifest: Manifest,
    /// The VHDX.
    pub vhdx: PathBuf,
    /// The VHDX's size.
    pub vhdx_size: u64,
}

impl LocalImage {
    /// Opens the image whose manifest or VHDX is `path`.
    pub fn open(path: &Path) -> Result<LocalImage, Error> {
        let name = path.to_string_lossy();
        let manifest_path = match name.strip_suffix(".vhdx") {
            Some(stem) => PathBuf::from(format!("{stem}.manifest.json")),
            None => path.to_owned(),
        };
        let manifest_bytes = std::fs::read(&manifest_path).map_err(|source| Error::ReadLocal {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest =
            Manifest::from_bytes(&manifest_bytes).map_err(|why| Error::ParseDocument {
                what: "node-image manifest",
                why,
            })?;
        check_file_name(&manifest)?;
        let vhdx = manifest_path.with_file_name(&manifest.disk.file);
        let vhdx_size = std::fs::metadata(&vhdx)
            .map_err(|source| Error::ReadLocal {
                path: vhdx.clone(),
                source,
            })?
            .len();
        Ok(LocalImage {
            manifest_path,
            manifest_bytes,
            manifest,
            vhdx,
            vhdx_size,
        })
    }

    /// The OCI manifest of this image.
    pub fn artifact(&self) -> ImageManifest {
        ImageManifest::node_image(&self.manifest, &self.manifest_bytes, self.vhdx_size)
    }

    /// Checks the VHDX against the manifest's size and sha256 (reads it all).
    pub fn verify_vhdx(&self) -> Result<(), Error> {
        let (digest, size) = crate::oci::digest_file(&self.vhdx)?;
        let expected = format!("sha256:{}", self.manifest.disk.sha256);
        if digest != expected || size != self.manifest.disk.file_size {
            return Err(Error::VerifyBlob {
                digest: expected,
                actual: digest,
                size,
            });
        }
        Ok(())
    }
}

/// The manifest's image name, version and file name must be safe as file names and agree.
fn check_file_name(manifest: &Manifest) -> Result<(), Error> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            })
    };
    let expected = format!("{}-{}.vhdx", manifest.name, manifest.version);
    if !safe(&manifest.name) || !safe(&manifest.version) || manifest.disk.file != expected {
        return Err(Error::MatchManifest(format!(
            "name {:?}, version {:?} and file {:?} are not a safe NAME-VERSION.vhdx",
            manifest.name, manifest.version, manifest.disk.file
        )));
    }
    Ok(())
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The artifact manifest's digest.
    pub digest: String,
    /// Whether a signature was pushed with it.
    pub signed: bool,
}

/// Pushes `image` to `repo` under `reference`'s tag, signed with `key` when given.
pub fn push(
    image: &LocalImage,
    repo: &mut dyn Repository,
    reference: &Reference,
    key: Option<&PrivateKey>,
    progress: &mut dyn FnMut(u64),
) -> Result<Pushed, Error> {
    // No separate check of the VHDX against the manifest first: its layer is stored under the
    // manifest's sha256, and both destinations refuse content that does not hash to it.
    let art = image.artifact();
    let bytes = art.to_bytes();
    repo.put_bytes(&art.config, &image.manifest_bytes)?;
    let layer = &art.layers[0];
    repo.put_blob(
        &layer.digest,
        layer.size,
        BlobSource::File(&image.vhdx),
        progress,
    )?;
    let digest = repo.put_manifest(
        reference.tag().as_str(),
        &bytes,
        IMAGE_MANIFEST,
        Some(ARTIFACT_TYPE),
    )?;
    if let Some(key) = key {
        sign(repo, reference, &digest, key)?;
    }
    Ok(Pushed {
        digest,
        signed: key.is_some(),
    })
}

/// Stores a cosign signature of manifest `digest` in `repo` (tag `sha256-HEX.sig`).
pub fn sign(
    repo: &mut dyn Repository,
    reference: &Reference,
    digest: &str,
    key: &PrivateKey,
) -> Result<(), Error> {
    let payload = SimpleSigning::new(&reference.repository_name(), digest).to_bytes();
    let signature = key.sign(&payload);
    let (manifest, config) = signature_manifest(&payload, &signature);
    repo.put_bytes(&manifest.config, &config)?;
    repo.put_bytes(&manifest.layers[0], &payload)?;
    repo.put_manifest(
        &signature_tag(digest),
        &manifest.to_bytes(),
        IMAGE_MANIFEST,
        None,
    )?;
    Ok(())
}

/// What was pulled.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The artifact manifest's digest.
    pub digest: String,
    /// The VHDX in the destination.
    pub vhdx: PathBuf,
    /// The node-image manifest in the destination.
    pub manifest_path: PathBuf,
    /// Parsed.
    pub manifest: Manifest,
    /// The key that signed it.
    pub key_id: String,
}

/// Checks that `digest` has a cosign signature by one of `keys`; returns the key's id.
pub fn verify_signature(
    repo: &mut dyn Repository,
    reference: &Reference,
    digest: &str,
    keys: &[PublicKey],
) -> Result<String, Error> {
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
    let mut failures = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_TYPE)
    {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        if layer.size > MAX_MANIFEST {
            failures.push(format!("a signature payload of {} bytes", layer.size));
            continue;
        }
        let mut payload = Vec::new();
        repo.get_blob(&layer.digest, layer.size, &mut payload)?;
        if digest_of(&payload) != layer.digest {
            failures.push("a payload that does not match its digest".into());
            continue;
        }
        match SimpleSigning::parse(&payload) {
            Ok(p) if p.critical.image.docker_manifest_digest == digest => {}
            Ok(p) => {
                failures.push(format!(
                    "a signature for {}",
                    p.critical.image.docker_manifest_digest
                ));
                continue;
            }
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        }
        for key in keys {
            match key.verify(&payload, signature) {
                Ok(()) => return Ok(key.key_id()),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    if failures.is_empty() {
        failures.push("the signature manifest holds no cosign signature".into());
    }
    Err(refuse(failures.join("; ")))
}

/// Pulls the image `reference` names from `repo` into `dir`, trusting `keys`. Nothing appears
/// in `dir` unless the signature, the manifests and the VHDX all check out.
pub fn pull(
    repo: &mut dyn Repository,
    reference: &Reference,
    dir: &Path,
    keys: &[PublicKey],
    progress: &mut dyn FnMut(u64),
) -> Result<Pulled, Error> {
    pull_named(
        repo,
        reference,
        reference.tag().as_str(),
        dir,
        keys,
        progress,
    )
}

/// As [`pull`], for the manifest named `name` (a tag, or a digest `sha256:...`) in
/// `reference`'s repository.
pub fn pull_named(
    repo: &mut dyn Repository,
    reference: &Reference,
    name: &str,
    dir: &Path,
    keys: &[PublicKey],
    progress: &mut dyn FnMut(u64),
) -> Result<Pulled, Error> {
    let bytes = repo
        .get_manifest(name)?
        .ok_or_else(|| Error::FindTag(format!("{}:{name}", reference.repository_name())))?;
    let digest = digest_of(&bytes);
    // A manifest asked for by digest must have that digest (a mix-and-match server may answer
    // with another, validly signed, image).
    if name.starts_with("sha256:") && digest != name {
        return Err(Error::VerifyBlob {
            digest: name.to_owned(),
            actual: digest,
            size: bytes.len() as u64,
        });
    }
    let art: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| Error::ParseDocument {
        what: "artifact manifest",
        why: e.to_string(),
    })?;
    if art.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
        || art.config.media_type != CONFIG_TYPE
        || art.layers.len() != 1
        || art.layers[0].media_type != VHDX_TYPE
    {
        return Err(Error::MatchArtifact {
            reference: reference.to_string(),
            found: art.artifact_type,
        });
    }
    let key_id = verify_signature(repo, reference, &digest, keys)?;

    if art.config.size > MAX_MANIFEST {
        return Err(Error::LimitSize {
            what: "node-image manifest",
            size: art.config.size,
            limit: MAX_MANIFEST,
        });
    }
    let mut config = Vec::new();
    repo.get_blob(&art.config.digest, art.config.size, &mut config)?;
    if digest_of(&config) != art.config.digest {
        return Err(Error::VerifyBlob {
            digest: art.config.digest.clone(),
            actual: digest_of(&config),
            size: config.len() as u64,
        });
    }
    let manifest = Manifest::from_bytes(&config).map_err(|why| Error::ParseDocument {
        what: "node-image manifest",
        why,
    })?;
    check_file_name(&manifest)?;
    let layer = &art.layers[0];
    if layer.digest != format!("sha256:{}", manifest.disk.sha256)
        || layer.size != manifest.disk.file_size
    {
        return Err(Error::MatchManifest(format!(
            "the VHDX layer is {} ({} bytes), the manifest says sha256:{} ({} bytes)",
            layer.digest, layer.size, manifest.disk.sha256, manifest.disk.file_size
        )));
    }

    std::fs::create_dir_all(dir).map_err(|source| Error::WriteLocal {
        path: dir.to_owned(),
        source,
    })?;
    check_free_space(dir, layer.size)?;
    let vhdx = dir.join(&manifest.disk.file);
    let partial = dir.join(format!(".{}.partial", manifest.disk.file));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::WriteLocal { path, source }
    };
    let mut sink = FileSink::open(&partial).map_err(io(&partial))?;
    if sink.resume_from() > layer.size {
        drop(sink);
        std::fs::remove_file(&partial).map_err(io(&partial))?;
        sink = FileSink::open(&partial).map_err(io(&partial))?;
    }
    progress(sink.resume_from());
    // A network failure keeps the hidden partial file, so the next pull resumes it; anything
    // else (too much data, a refused blob) discards it.
    match repo.get_blob(&layer.digest, layer.size, &mut sink) {
        Ok(()) => {}
        Err(e @ Error::Transfer { .. }) => return Err(e),
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    }
    let (actual, size) = sink.finish().map_err(io(&partial))?;
    if actual != layer.digest || size != layer.size {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::VerifyBlob {
            digest: layer.digest.clone(),
            actual,
            size,
        });
    }
    progress(size);
    crate::atomic::publish(&partial, &vhdx).map_err(io(&vhdx))?;
    let manifest_path = dir.join(format!(
        "{}-{}.manifest.json",
        manifest.name, manifest.version
    ));
    crate::atomic::write(&manifest_path, &config, 0o644).map_err(io(&manifest_path))?;
    Ok(Pulled {
        digest,
        vhdx,
        manifest_path,
        manifest,
        key_id,
    })
}

/// Refuses a pull that cannot fit (with 64 MiB to spare) before any byte is fetched.
fn check_free_space(dir: &Path, needed: u64) -> Result<(), Error> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| Error::ReadLocal {
        path: dir.to_owned(),
        source: e.into(),
    })?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let margin = 64 << 20;
    if free < needed.saturating_add(margin) {
        return Err(Error::LimitSize {
            what: "pull (free space in the destination)",
            size: needed,
            limit: free,
        });
    }
    Ok(())
}

/// A local signature of `image`, as `slipway sign` and `build --key` write it beside the image:
/// the cosign payload for the artifact digest and its signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalSignature {
    /// The artifact manifest digest signed.
    pub digest: String,
    /// The simple-signing payload, as text.
    pub payload: String,
    /// base64 DER signature.
    pub signature: String,
    /// The signing key's id.
    pub key_id: String,
}

/// Where the local signature of `image` lives: `NAME-VERSION.sig.json`.
pub fn local_signature_path(image: &LocalImage) -> PathBuf {
    image.manifest_path.with_file_name(format!(
        "{}-{}.sig.json",
        image.manifest.name, image.manifest.version
    ))
}

/// Signs `image` locally (repository `local/NAME`) and writes its signature file.
pub fn sign_local(image: &LocalImage, key: &PrivateKey) -> Result<PathBuf, Error> {
    image.verify_vhdx()?;
    let digest = digest_of(&image.artifact().to_bytes());
    let payload = SimpleSigning::new(&format!("local/{}", image.manifest.name), &digest).to_bytes();
    let signature = LocalSignature {
        digest,
        payload: String::from_utf8_lossy(&payload).into_owned(),
        signature: key.sign(&payload),
        key_id: key.public().key_id(),
    };
    let path = local_signature_path(image);
    let text = serde_json::to_vec_pretty(&signature).unwrap_or_default();
    crate::atomic::write(&path, &text, 0o644).map_err(|source| Error::WriteLocal {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Checks a local image: the VHDX against the manifest, the signature against the artifact
/// digest and `key`. Returns the artifact digest.
pub fn verify_local(image: &LocalImage, key: &PublicKey) -> Result<String, Error> {
    let path = local_signature_path(image);
    let bytes = std::fs::read(&path).map_err(|source| Error::ReadLocal {
        path: path.clone(),
        source,
    })?;
    let signature: LocalSignature =
        serde_json::from_slice(&bytes).map_err(|e| Error::ParseDocument {
            what: "signature file",
            why: e.to_string(),
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
    Ok(digest)
}
