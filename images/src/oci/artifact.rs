//! The OCI artifact of a node image: an image manifest with Slipway's artifact type, the
//! node-image manifest as its config, the VHDX as its one layer, and annotations naming the
//! image. The same image always gives the same manifest bytes (no timestamps), so its digest
//! (what signatures name) is known as soon as the image is built.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Manifest;

/// OCI image manifest media type.
pub const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Our artifact type.
pub const ARTIFACT_TYPE: &str = "application/vnd.slipway.node-image.v1";
/// Media type of the config blob: the node-image manifest (JSON).
pub const CONFIG_TYPE: &str = "application/vnd.slipway.node-image.config.v1+json";
/// Media type of the VHDX layer (stored as is: see the README for why not compressed).
pub const VHDX_TYPE: &str = "application/vnd.slipway.node-image.vhdx.v1";
/// cosign's simple-signing layer.
pub const SIMPLE_SIGNING_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a cosign signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The annotation naming the signing key's id beside a signature. Not trusted (anyone can
/// write it): it only lets a refusal say which key signed, e.g. after a key rotation.
pub const KEY_ID_ANNOTATION: &str = "org.slipway.key-id";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Artifact type (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`IMAGE_MANIFEST`].
    pub media_type: String,
    /// [`ARTIFACT_TYPE`] for node images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `sha256:HEX` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ImageManifest {
    /// The artifact for a node image whose manifest JSON is `manifest_json` (exact bytes of
    /// NAME-VERSION.manifest.json) and whose VHDX has `vhdx_size` bytes.
    pub fn node_image(manifest: &Manifest, manifest_json: &[u8], vhdx_size: u64) -> ImageManifest {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.title".into(),
            manifest.name.clone(),
        );
        annotations.insert(
            "org.opencontainers.image.version".into(),
            manifest.version.clone(),
        );
        annotations.insert("org.slipway.image.os".into(), manifest.os.to_string());
        annotations.insert("org.slipway.image.arch".into(), manifest.arch.clone());
        annotations.insert(
            "org.slipway.image.kubernetes".into(),
            manifest.kubernetes.clone().unwrap_or_else(|| "none".into()),
        );
        let mut layer_annotations = BTreeMap::new();
        layer_annotations.insert(
            "org.opencontainers.image.title".into(),
            manifest.disk.file.clone(),
        );
        ImageManifest {
            schema_version: 2,
            media_type: IMAGE_MANIFEST.into(),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: Descriptor {
                media_type: CONFIG_TYPE.into(),
                digest: digest_of(manifest_json),
                size: manifest_json.len() as u64,
                artifact_type: None,
                annotations: BTreeMap::new(),
            },
            layers: vec![Descriptor {
                media_type: VHDX_TYPE.into(),
                digest: format!("sha256:{}", manifest.disk.sha256),
                size: vhdx_size,
                artifact_type: None,
                annotations: layer_annotations,
            }],
            annotations,
        }
    }

    /// The canonical bytes (compact JSON, fields in declaration order).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The cosign signature manifest for the simple-signing `payload` with `signature` (base64) by
/// the key `key_id`: the config cosign writes and one layer carrying the signature (and the key
/// id) as annotations.
pub fn signature_manifest(
    payload: &[u8],
    signature: &str,
    key_id: &str,
) -> (ImageManifest, Vec<u8>) {
    let config = format!(
        "{{\"architecture\":\"\",\"config\":{{}},\"created\":\"0001-01-01T00:00:00Z\",\
         \"history\":[{{\"created\":\"0001-01-01T00:00:00Z\"}}],\"os\":\"\",\
         \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{}\"]}}}}",
        digest_of(payload)
    )
    .into_bytes();
    let mut annotations = BTreeMap::new();
    annotations.insert(SIGNATURE_ANNOTATION.to_owned(), signature.to_owned());
    annotations.insert(KEY_ID_ANNOTATION.to_owned(), key_id.to_owned());
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: IMAGE_MANIFEST.into(),
        artifact_type: None,
        config: Descriptor {
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            digest: digest_of(&config),
            size: config.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: SIMPLE_SIGNING_TYPE.into(),
            digest: digest_of(payload),
            size: payload.len() as u64,
            artifact_type: None,
            annotations,
        }],
        annotations: BTreeMap::new(),
    };
    (manifest, config)
}

/// The tag cosign stores the signature of `digest` under: `sha256-HEX.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}
