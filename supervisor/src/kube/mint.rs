//! Identities minted from a cluster's CA: the admin client certificate slipwayd and
//! `slipwayd kubeconfig` use, and the kubeconfig that carries it.
//!
//! The Kubernetes API server authenticates a client certificate signed by its CA as the user
//! named by the certificate's CN, in the groups named by its O entries; `system:masters` is
//! bound to cluster-admin and cannot be revoked short of replacing the CA. Hence the short
//! validity: a minted kubeconfig is re-minted (by running the command again) rather than kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use zeroize::Zeroizing;

use super::Error;

/// The user the admin certificate names (its CN).
pub const ADMIN_USER: &str = "slipway-admin";
/// The group the admin certificate names (its O): bound to cluster-admin by every cluster.
pub const ADMIN_GROUP: &str = "system:masters";
/// The CA's common name, as [`crate::pki`] makes it: the issuer name of every minted
/// certificate must equal the CA's subject byte for byte.
const CA_COMMON_NAME: &str = "kubernetes";
/// A minted certificate is valid from this long before now, so a node whose clock is a little
/// behind the host's accepts it.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A cluster's CA, loaded to sign certificates.
pub struct Ca {
    cert_path: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", self.cert_path.display())
    }
}

impl Ca {
    /// Loads `ca.crt` and `ca.key` from a cluster's PKI directory.
    pub fn load(pki_dir: &Path) -> Result<Ca, Error> {
        let read = |name: &str| {
            let path = pki_dir.join(name);
            std::fs::read_to_string(&path)
                .map(Zeroizing::new)
                .map_err(|source| Error::ReadPki { path, source })
        };
        let cert_pem = read("ca.crt")?;
        let key_pem = read("ca.key")?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| Error::Certificate {
            what: "parse the cluster CA key",
            source,
        })?;
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| Error::Certificate {
                what: "parse the cluster CA certificate",
                source: rcgen::Error::CouldNotParseCertificate,
            })?;
        // The issuer as `crate::pki` made the CA; `verify` below proves the match.
        let params = crate::pki::ca_params(CA_COMMON_NAME);
        Ok(Ca {
            cert_path: pki_dir.join("ca.crt"),
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer: Issuer::new(params, key),
        })
    }

    /// Signs a certificate for a fresh P-256 key: `params` with the validity set to now (less
    /// [`CLOCK_SKEW`]) until now + `valid_for`, and the authority key identifier.
    pub fn issue(
        &self,
        mut params: CertificateParams,
        valid_for: Duration,
    ) -> Result<Issued, Error> {
        let key = KeyPair::generate().map_err(|source| Error::Certificate {
            what: "generate a client key",
            source,
        })?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + valid_for;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Certificate {
                what: "sign a certificate with the cluster CA",
                source,
            })?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            not_after: params.not_after,
        })
    }

    /// Checks that `cert` chains to this CA for client authentication, as an API server would.
    fn verify_client(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let verify = || {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.cert_der.clone())?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            verifier.verify_client_cert(cert, &[], UnixTime::now())?;
            Ok(())
        };
        verify().map_err(|source| Error::VerifyMinted {
            ca: self.cert_path.clone(),
            source,
        })
    }
}

/// A certificate signed by the CA, with its key.
pub struct Issued {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Certificate (DER).
    pub cert_der: CertificateDer<'static>,
    /// Private key (PKCS#8 PEM; zeroed when dropped).
    pub key_pem: Zeroizing<String>,
    /// End of validity.
    pub not_after: time::OffsetDateTime,
}

/// An admin identity: the CA to trust, the client certificate and its key.
#[derive(Clone)]
pub struct Credentials {
    /// The cluster CA (PEM): the API server's certificate must chain to it.
    pub ca_pem: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    key_pem: Zeroizing<String>,
    /// End of the certificate's validity.
    pub not_after: time::OffsetDateTime,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({ADMIN_USER}, until {}, key <redacted>)",
            utc(self.not_after)
        )
    }
}

impl Credentials {
    /// The private key (PKCS#8 PEM), for the one place that must use it (TLS, a kubeconfig).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

#[cfg(test)]
impl Credentials {
    /// The same identity trusting another CA (to present a certificate from one CA to a
    /// server of another).
    pub fn trusting(self, ca_pem: &str) -> Credentials {
        Credentials {
            ca_pem: ca_pem.to_owned(),
            ..self
        }
    }
}

/// Mints an admin identity (`CN=slipway-admin`, `O=system:masters`, client authentication
/// only) valid for `valid_for` from the CA in `pki_dir`, and checks that it chains to that CA.
pub fn mint_admin(pki_dir: &Path, valid_for: Duration) -> Result<Credentials, Error> {
    let ca = Ca::load(pki_dir)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, ADMIN_USER);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ADMIN_GROUP);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let issued = ca.issue(params, valid_for)?;
    ca.verify_client(&issued.cert_der)?;
    Ok(Credentials {
        ca_pem: ca.cert_pem,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        not_after: issued.not_after,
    })
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [NamedCluster<'a>; 1],
    users: [NamedUser<'a>; 1],
    contexts: [NamedContext<'a>; 1],
    current_context: &'a str,
}

#[derive(Serialize)]
struct NamedCluster<'a> {
    name: &'a str,
    cluster: ClusterEntry<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry<'a> {
    server: &'a str,
    certificate_authority_data: &'a str,
}

#[derive(Serialize)]
struct NamedUser<'a> {
    name: &'a str,
    user: UserEntry<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry<'a> {
    client_certificate_data: &'a str,
    client_key_data: &'a str,
}

#[derive(Serialize)]
struct NamedContext<'a> {
    name: &'a str,
    context: ContextEntry<'a>,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// The kubeconfig (YAML) of `credentials` for `cluster`, whose API server is at
/// `https://ENDPOINT` (`endpoint` is `address:port`, the cluster's control-plane endpoint).
/// The CA, certificate and key are embedded (`*-data`), so the file stands alone. It holds
/// the key: write it 0600.
#[expect(
    clippy::expect_used,
    reason = "serde-saphyr fails only on custom Serialize errors, tags, bad options or a failing \
              writer; these are plain derived structs of strings written to a String"
)]
pub fn kubeconfig(cluster: &str, endpoint: &str, credentials: &Credentials) -> Zeroizing<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ca = b64(&credentials.ca_pem);
    let cert = b64(&credentials.cert_pem);
    let key = Zeroizing::new(b64(credentials.key_pem()));
    let server = format!("https://{endpoint}");
    let user = format!("{ADMIN_USER}@{cluster}");
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: [NamedCluster {
            name: cluster,
            cluster: ClusterEntry {
                server: &server,
                certificate_authority_data: &ca,
            },
        }],
        users: [NamedUser {
            name: &user,
            user: UserEntry {
                client_certificate_data: &cert,
                client_key_data: &key,
            },
        }],
        contexts: [NamedContext {
            name: &user,
            context: ContextEntry {
                cluster,
                user: &user,
            },
        }],
        current_context: &user,
    };
    Zeroizing::new(serde_saphyr::to_string(&config).expect("a kubeconfig always serialises"))
}
