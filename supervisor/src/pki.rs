//! A cluster's PKI and join secrets, generated once per cluster before any node boots, so every
//! node's kubeadm configuration is known up front: the cluster CA, the etcd CA, the front-proxy
//! CA and the service-account key pair (ECDSA P-256, which kubeadm v1beta4 accepts with
//! `encryptionAlgorithm: ECDSA-P256`) and a bootstrap token for workers. Control-plane nodes
//! get the shared keys in their seeds, so no certificate key (kubeadm's `--upload-certs`,
//! whose upload expires after 2 h) is made any more. Private keys and secrets are written 0600 and
//! never logged ([`Secret`] prints as `<redacted>`). The directory appears whole or not at all.

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use zeroize::Zeroizing;

/// Validity of the CAs: ten years, as kubeadm gives its own.
const CA_VALID_DAYS: i64 = 3650;

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Key or certificate generation failed.
    #[error("cannot generate the {what} of cluster {cluster}")]
    Generate {
        /// What.
        what: &'static str,
        /// The cluster.
        cluster: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// Randomness was not available.
    #[error("cannot get random bytes for the secrets of cluster {0}")]
    Random(String),
    /// Files.
    #[error("cannot {action} {path}")]
    Access {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A secret string: zeroed when dropped, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The secret's text, for the one place that must write it (a node's seed).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The alphabet of bootstrap tokens (kubeadm's `[a-z0-9]`).
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl Secret {
    /// `text` as a bootstrap token, when it has kubeadm's form `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub fn bootstrap_token(text: String) -> Option<Secret> {
        let text = Zeroizing::new(text);
        let valid = text.len() == 23
            && text.bytes().enumerate().all(|(i, b)| {
                if i == 6 {
                    b == b'.'
                } else {
                    TOKEN_ALPHABET.contains(&b)
                }
            });
        valid.then(|| Secret(text))
    }

    /// A bootstrap token's public id (the six characters before the dot): safe to log and to
    /// name its Secret with (`bootstrap-token-ID`).
    pub fn token_id(&self) -> &str {
        self.0.split_once('.').map_or("", |(id, _)| id)
    }

    /// A bootstrap token's secret part (after the dot).
    pub fn token_secret(&self) -> &str {
        self.0.split_once('.').map_or("", |(_, secret)| secret)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    /// Only a bootstrap token (the one kind of [`Secret`] kept in records).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        Secret::bootstrap_token(text).ok_or_else(|| {
            serde::de::Error::custom("not a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16}")
        })
    }
}

/// A fresh random bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`, from the system's randomness.
pub fn new_bootstrap_token(cluster: &str) -> Result<Secret, Error> {
    // Rejection sampling: 252 is the largest multiple of 36 below 256, so every character is
    // equally likely.
    let mut picked = Zeroizing::new(String::with_capacity(23));
    let mut random = Zeroizing::new([0u8; 64]);
    while picked.len() < 23 {
        getrandom::fill(random.as_mut()).map_err(|_| Error::Random(cluster.to_owned()))?;
        for b in random.iter().filter(|b| **b < 252) {
            if picked.len() == 6 {
                picked.push('.');
            }
            if picked.len() == 23 {
                break;
            }
            picked.push(char::from(
                TOKEN_ALPHABET[usize::from(*b) % TOKEN_ALPHABET.len()],
            ));
        }
    }
    Ok(Secret(picked))
}

/// When the PKI's own bootstrap token was made (its file's modification time; the file is
/// written once, with the PKI, and never again). The token kubeadm init creates from it
/// lives 24 h from the initialiser's init, which is later: counting from here is on the safe
/// side. `None` when the file cannot be looked at.
pub fn bootstrap_token_made(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir.join("bootstrap-token"))
        .and_then(|m| m.modified())
        .ok()
}

impl ClusterPki {
    /// This PKI with `token` as the bootstrap token joining nodes' seeds carry (a fresh one
    /// slipwayd minted, see [`crate::kube::tokens`]).
    pub fn with_join_token(&self, token: Secret) -> ClusterPki {
        ClusterPki {
            bootstrap_token: token,
            ..self.clone()
        }
    }
}

/// What nodes' configurations need from a cluster's PKI.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    /// The directory (kubeadm's `certificatesDir` layout: ca.crt, etcd/ca.crt, ...).
    pub dir: PathBuf,
    /// `sha256:HEX` of the CA's public key, for `caCertHashes` (kubeadm's pin format).
    pub ca_cert_hash: String,
    /// Bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` for workers' discovery.
    pub bootstrap_token: Secret,
}

/// The files a control-plane node needs in /etc/kubernetes/pki, so that `kubeadm init` uses
/// these CAs (and the hash workers pin) instead of making its own: (relative path, content,
/// mode).
pub const CONTROL_PLANE_FILES: [(&str, u32); 8] = [
    ("ca.crt", 0o644),
    ("ca.key", 0o600),
    ("etcd/ca.crt", 0o644),
    ("etcd/ca.key", 0o600),
    ("front-proxy-ca.crt", 0o644),
    ("front-proxy-ca.key", 0o600),
    ("sa.key", 0o600),
    ("sa.pub", 0o644),
];

/// One PKI file for a control-plane node.
#[derive(Clone)]
pub struct PkiFile {
    /// Path under /etc/kubernetes/pki.
    pub name: &'static str,
    /// Content (keys among them: zeroed when dropped).
    pub bytes: Zeroizing<Vec<u8>>,
    /// Permission bits.
    pub mode: u32,
}

impl fmt::Debug for PkiFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PkiFile({}, {:o})", self.name, self.mode)
    }
}

impl ClusterPki {
    /// Reads [`CONTROL_PLANE_FILES`].
    pub fn control_plane_files(&self) -> Result<Vec<PkiFile>, Error> {
        CONTROL_PLANE_FILES
            .iter()
            .map(|(name, mode)| {
                let path = self.dir.join(name);
                let bytes = std::fs::read(&path).map_err(access("read", &path))?;
                Ok(PkiFile {
                    name,
                    bytes: Zeroizing::new(bytes),
                    mode: *mode,
                })
            })
            .collect()
    }
}

/// The PKI of `cluster` in `dir`: loaded when it exists, generated (once) when not.
pub fn ensure(dir: &Path, cluster: &str) -> Result<ClusterPki, Error> {
    if !dir.join("ca.crt").exists() {
        generate(dir, cluster)?;
    }
    load(dir)
}

fn access(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Access {
        action,
        path,
        source,
    }
}

fn load(dir: &Path) -> Result<ClusterPki, Error> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(access("read", &path))
    };
    let ca_key = Zeroizing::new(read("ca.key")?);
    let key = KeyPair::from_pem(&ca_key).map_err(|source| Error::Generate {
        what: "CA key (reading it back)",
        cluster: dir.display().to_string(),
        source,
    })?;
    Ok(ClusterPki {
        dir: dir.to_owned(),
        ca_cert_hash: crate::seed::kubeadm::ca_cert_hash(&key.subject_public_key_info()),
        bootstrap_token: Secret(Zeroizing::new(read("bootstrap-token")?.trim().to_owned())),
    })
}

fn generate(dir: &Path, cluster: &str) -> Result<(), Error> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(access("create", parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".pki-")
        .tempdir_in(parent)
        .map_err(access("create a directory in", parent))?;
    let gen_err = |what| {
        let cluster = cluster.to_owned();
        move |source| Error::Generate {
            what,
            cluster,
            source,
        }
    };
    let write = |name: &str, text: &str, mode: u32| {
        let path = staging.path().join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(access("create", p))?;
        }
        images::atomic::write(&path, text.as_bytes(), mode).map_err(access("write", &path))
    };
    for (name, common_name) in [
        ("ca", "kubernetes"),
        ("etcd/ca", "etcd-ca"),
        ("front-proxy-ca", "front-proxy-ca"),
    ] {
        let key = KeyPair::generate().map_err(gen_err("CA key"))?;
        let mut params = ca_params(common_name);
        let today = time::OffsetDateTime::now_utc();
        params.not_before = today;
        params.not_after = today + time::Duration::days(CA_VALID_DAYS);
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("CA certificate"))?;
        write(&format!("{name}.crt"), &cert.pem(), 0o644)?;
        write(
            &format!("{name}.key"),
            &Zeroizing::new(key.serialize_pem()),
            0o600,
        )?;
    }
    let sa = KeyPair::generate().map_err(gen_err("service-account key"))?;
    write("sa.key", &Zeroizing::new(sa.serialize_pem()), 0o600)?;
    write("sa.pub", &sa.public_key_pem(), 0o644)?;

    let mut random = Zeroizing::new([0u8; 22]);
    getrandom::fill(random.as_mut()).map_err(|_| Error::Random(cluster.to_owned()))?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |b: u8| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]);
    let token: Zeroizing<String> = Zeroizing::new(
        random[..6]
            .iter()
            .map(|b| pick(*b))
            .chain(['.'])
            .chain(random[6..22].iter().map(|b| pick(*b)))
            .collect(),
    );
    write("bootstrap-token", &token, 0o600)?;

    let staged = staging.keep();
    std::fs::rename(&staged, dir).map_err(access("publish", dir))?;
    images::atomic::sync_parent(dir).map_err(access("sync", dir))?;
    tracing::info!(%cluster, dir = %dir.display(), "cluster PKI generated");
    Ok(())
}

/// The subject, constraints and usages of a cluster CA named `common_name` (kubeadm's: a
/// common name only); the caller sets its validity.
pub fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn the_pki_is_made_once_with_private_files_and_kubeadms_hash() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("clusters/lab/pki");
        let pki = ensure(&pki_dir, "lab").unwrap();
        for (name, mode) in [
            ("ca.key", 0o600),
            ("etcd/ca.key", 0o600),
            ("front-proxy-ca.key", 0o600),
            ("sa.key", 0o600),
            ("bootstrap-token", 0o600),
            ("ca.crt", 0o644),
        ] {
            let meta = std::fs::metadata(pki_dir.join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
        let token = pki.bootstrap_token.expose();
        assert_eq!(token.len(), 23);
        assert!(
            token.chars().enumerate().all(|(i, c)| if i == 6 {
                c == '.'
            } else {
                c.is_ascii_lowercase() || c.is_ascii_digit()
            }),
            "{token}"
        );
        assert_eq!(format!("{:?}", pki.bootstrap_token), "<redacted>");
        assert!(
            !format!("{pki:?}").contains(token),
            "secrets must not reach Debug output"
        );

        // The hash is what kubeadm documents: openssl's DER public key, sha256.
        let der = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
                pki_dir.join("ca.crt").display()
            ))
            .output()
            .unwrap();
        let expected = String::from_utf8(der.stdout).unwrap();
        assert_eq!(
            pki.ca_cert_hash,
            format!("sha256:{}", expected.split_whitespace().next().unwrap())
        );
        // A CA: openssl agrees, and the etcd CA is a different key.
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(pki_dir.join("ca.crt"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("CA:TRUE") && text.contains("CN = kubernetes"),
            "{text}"
        );
        assert_ne!(
            std::fs::read(pki_dir.join("ca.key")).unwrap(),
            std::fs::read(pki_dir.join("etcd/ca.key")).unwrap()
        );

        // Generated once: a second call reads the same secrets.
        let again = ensure(&pki_dir, "lab").unwrap();
        assert_eq!(again.ca_cert_hash, pki.ca_cert_hash);
        assert_eq!(again.bootstrap_token, pki.bootstrap_token);
    }
}
