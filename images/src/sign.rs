//! Signing keys and signatures, in the forms cosign uses: ECDSA P-256 with SHA-256, public keys
//! as PEM SubjectPublicKeyInfo (`cosign verify --key` reads them), private keys as PKCS#8 PEM
//! (encrypted with scrypt + AES-256-CBC when a passphrase is given; `cosign import-key-pair`
//! reads the unencrypted form), signatures as base64 of the DER encoding, over a cosign
//! "simple signing" payload that names the signed OCI manifest digest.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use pkcs8::spki::{DecodePublicKey, EncodePublicKey};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::oci::artifact::hex;

/// The `type` cosign writes in a simple-signing payload.
pub const COSIGN_TYPE: &str = "cosign container image signature";

/// Errors of keys and signatures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Randomness was not available.
    #[error("cannot get random bytes for a new key")]
    MakeKey(#[source] getrandom::Error),
    /// A key file could not be read.
    #[error("cannot read key {path}")]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file could not be written.
    #[error("cannot write key {path}")]
    WriteKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A private key is not a P-256 PKCS#8 key, or the passphrase is wrong.
    #[error(
        "{path} is not a P-256 private key in PKCS#8 PEM form{}",
        if *.encrypted { ", or the passphrase is wrong" } else { "" }
    )]
    DecodePrivateKey {
        /// The file.
        path: PathBuf,
        /// Whether it is encrypted.
        encrypted: bool,
    },
    /// An encrypted key and no passphrase.
    #[error("{0} is encrypted: give its passphrase")]
    NeedPassphrase(PathBuf),
    /// A public key is not a P-256 SubjectPublicKeyInfo PEM.
    #[error("{0} is not a P-256 public key in PEM (SubjectPublicKeyInfo) form")]
    DecodePublicKey(PathBuf),
    /// Encoding a key failed.
    #[error("cannot encode the key")]
    EncodeKey,
    /// A signature is not base64 DER ECDSA.
    #[error("the signature is not a base64 DER ECDSA signature")]
    DecodeSignature,
    /// The signature does not verify with the key.
    #[error(
        "the signature does not match the payload with key {key_id}: signed by another key, or altered"
    )]
    VerifySignature {
        /// The key's id (sha256 of its DER public key).
        key_id: String,
    },
    /// The payload is not a cosign simple-signing payload.
    #[error("the signed payload is not a cosign simple-signing document: {0}")]
    ParsePayload(String),
}

/// A private signing key.
pub struct PrivateKey(SigningKey);

/// A public verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Result<PrivateKey, Error> {
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::fill(bytes.as_mut()).map_err(Error::MakeKey)?;
            // Out-of-range scalars (probability ~2^-32) are drawn again.
            if let Ok(key) = SigningKey::from_slice(bytes.as_ref()) {
                return Ok(PrivateKey(key));
            }
        }
    }

    /// PKCS#8 PEM, encrypted when `passphrase` is given.
    pub fn to_pem(&self, passphrase: Option<&[u8]>) -> Result<Zeroizing<String>, Error> {
        match passphrase {
            Some(p) => self.0.to_pkcs8_encrypted_pem(p, LineEnding::LF),
            None => self.0.to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(|_| Error::EncodeKey)
    }

    /// Reads a PKCS#8 PEM key (encrypted keys need `passphrase`).
    pub fn read(path: &Path, passphrase: Option<&[u8]>) -> Result<PrivateKey, Error> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| Error::ReadKey {
                    path: path.to_owned(),
                    source,
                })?,
            );
        let encrypted = text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----");
        let key = if encrypted {
            let p = passphrase.ok_or_else(|| Error::NeedPassphrase(path.to_owned()))?;
            SigningKey::from_pkcs8_encrypted_pem(&text, p)
        } else {
            SigningKey::from_pkcs8_pem(&text)
        };
        key.map(PrivateKey).map_err(|_| Error::DecodePrivateKey {
            path: path.to_owned(),
            encrypted,
        })
    }

    /// Writes the key to `path` (mode 0600, atomically) and its public key to `path.pub`.
    pub fn write(&self, path: &Path, passphrase: Option<&[u8]>) -> Result<PathBuf, Error> {
        let pem = self.to_pem(passphrase)?;
        crate::atomic::write(path, pem.as_bytes(), 0o600).map_err(|source| Error::WriteKey {
            path: path.to_owned(),
            source,
        })?;
        let public_path = PathBuf::from(format!("{}.pub", path.display()));
        let public = self.public().to_pem()?;
        crate::atomic::write(&public_path, public.as_bytes(), 0o644).map_err(|source| {
            Error::WriteKey {
                path: public_path.clone(),
                source,
            }
        })?;
        Ok(public_path)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// Signs `payload`: base64 of the DER ECDSA-SHA256 signature, as cosign stores it.
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: Signature = self.0.sign(payload);
        BASE64.encode(signature.to_der().as_bytes())
    }
}

impl PublicKey {
    /// PEM SubjectPublicKeyInfo.
    pub fn to_pem(&self) -> Result<String, Error> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| Error::EncodeKey)
    }

    /// Reads a PEM public key.
    pub fn read(path: &Path) -> Result<PublicKey, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadKey {
            path: path.to_owned(),
            source,
        })?;
        PublicKey::from_pem(&text).ok_or_else(|| Error::DecodePublicKey(path.to_owned()))
    }

    /// Parses a PEM public key.
    pub fn from_pem(text: &str) -> Option<PublicKey> {
        VerifyingKey::from_public_key_pem(text).ok().map(PublicKey)
    }

    /// sha256 of the DER public key, lowercase hex: how errors and indexes name a key.
    pub fn key_id(&self) -> String {
        let der = self
            .0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        hex(&Sha256::digest(der))
    }

    /// Checks a base64 DER signature over `payload`.
    pub fn verify(&self, payload: &[u8], signature_b64: &str) -> Result<(), Error> {
        let der = BASE64
            .decode(signature_b64.trim())
            .map_err(|_| Error::DecodeSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| Error::DecodeSignature)?;
        self.0
            .verify(payload, &signature)
            .map_err(|_| Error::VerifySignature {
                key_id: self.key_id(),
            })
    }
}

/// A cosign simple-signing payload: "this repository's manifest with this digest is signed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigning {
    /// What is asserted.
    pub critical: Critical,
    /// Free-form extras (cosign writes `null`).
    pub optional: Option<serde_json::Value>,
}

/// The asserted part of [`SimpleSigning`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    /// The repository.
    pub identity: Identity,
    /// The manifest.
    pub image: ImageDigest,
    /// Always [`COSIGN_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The repository, e.g. `registry.example/nodes/linux-node`.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDigest {
    /// `sha256:...` of the signed manifest.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl SimpleSigning {
    /// The payload for `manifest_digest` in `repository`.
    pub fn new(repository: &str, manifest_digest: &str) -> SimpleSigning {
        SimpleSigning {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_owned(),
                },
                image: ImageDigest {
                    docker_manifest_digest: manifest_digest.to_owned(),
                },
                kind: COSIGN_TYPE.to_owned(),
            },
            optional: None,
        }
    }

    /// The payload bytes (compact JSON, field order as cosign writes it).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a payload.
    pub fn parse(bytes: &[u8]) -> Result<SimpleSigning, Error> {
        let payload: SimpleSigning =
            serde_json::from_slice(bytes).map_err(|e| Error::ParsePayload(e.to_string()))?;
        if payload.critical.kind != COSIGN_TYPE {
            return Err(Error::ParsePayload(format!(
                "type is {:?}",
                payload.critical.kind
            )));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_encrypted_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.key");
        let key = PrivateKey::generate().unwrap();
        let public_path = key.write(&path, Some(b"correct horse")).unwrap();
        // Windows has no mode bits: the key file inherits its directory's ACL.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "private keys are 0600");
        }
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        );

        assert!(matches!(
            PrivateKey::read(&path, None),
            Err(Error::NeedPassphrase(_))
        ));
        assert!(matches!(
            PrivateKey::read(&path, Some(b"wrong")),
            Err(Error::DecodePrivateKey {
                encrypted: true,
                ..
            })
        ));
        let key = PrivateKey::read(&path, Some(b"correct horse")).unwrap();
        let public = PublicKey::read(&public_path).unwrap();
        assert_eq!(public, key.public());

        let payload =
            SimpleSigning::new("oci/nodes", &format!("sha256:{}", "a".repeat(64))).to_bytes();
        let signature = key.sign(&payload);
        public.verify(&payload, &signature).unwrap();
        let mut altered = payload.clone();
        altered[10] ^= 1;
        assert!(matches!(
            public.verify(&altered, &signature),
            Err(Error::VerifySignature { .. })
        ));
        let other = PrivateKey::generate().unwrap().public();
        assert!(matches!(
            other.verify(&payload, &signature),
            Err(Error::VerifySignature { .. })
        ));
        assert!(matches!(
            public.verify(&payload, "not base64!"),
            Err(Error::DecodeSignature)
        ));
    }

    #[test]
    fn the_payload_is_cosigns_simple_signing_form() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let payload = SimpleSigning::new("localhost:5000/nodes/tiny", &digest);
        let text = String::from_utf8(payload.to_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"localhost:5000/nodes/tiny\"}},\
                 \"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image \
                 signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(SimpleSigning::parse(text.as_bytes()).unwrap(), payload);
        assert!(SimpleSigning::parse(br#"{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"y"},"type":"other"},"optional":null}"#).is_err());
    }
}
