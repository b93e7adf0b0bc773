//! A FAKE Kubernetes API server, for tests only: no API server can be had on this machine
//! (DESIGN.md, "Facts measured"), so the kube client and drain are tested against this
//! stand-in, which speaks the real protocol closely enough for Debian's kubectl to use it:
//!
//! - TLS with a serving certificate signed by the cluster CA (SANs 127.0.0.1, localhost,
//!   kubernetes), and client-certificate authentication against that CA: a certificate from
//!   another CA fails the handshake, as with a real API server; a client without a
//!   certificate gets 401 (anonymous access off). Every authenticated user is authorised
//!   (the fake has no RBAC: the minted identity is in system:masters anyway).
//! - HTTP/1.1 (ALPN `http/1.1`), JSON only, the objects and semantics of [`api`].
//!
//! Threads: one accepting, one per connection; the objects sit behind one mutex.
//!
//! Self-contained (it uses nothing else of slipwayd), so that `examples/fake-apiserver.rs`
//! builds it into a binary of its own for the end-to-end tests, which cannot see `cfg(test)`
//! code, without it ever being part of slipwayd.

mod api;
mod http;
mod spec;

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

pub use api::World;
pub use spec::{FakePod, Spec};

/// The common name of the CA slipwayd makes for a cluster: the serving certificate's issuer
/// name must be the CA's subject, byte for byte.
const CA_COMMON_NAME: &str = "kubernetes";

/// A serving certificate for 127.0.0.1, localhost and kubernetes, signed by the CA whose
/// certificate and key are in these PEM files: its DER and its key's PEM.
fn serving_certificate(
    ca_cert: &Path,
    ca_key: &Path,
    ip: std::net::IpAddr,
) -> anyhow::Result<(rustls::pki_types::CertificateDer<'static>, String)> {
    let key = KeyPair::from_pem(&std::fs::read_to_string(ca_key)?)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, key);
    let mut names = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
    ];
    // Listening on another address (a test network's): that one too, as kubeadm puts the
    // advertise address in the API server's certificate.
    if !ip.is_loopback() && !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(1);
    let serving_key = KeyPair::generate()?;
    let cert = params.signed_by(&serving_key, &issuer)?;
    // The CA certificate must parse: the handshake checks clients against it.
    rustls::pki_types::CertificateDer::from_pem_file(ca_cert)?;
    Ok((cert.der().clone(), serving_key.serialize_pem()))
}

/// A running FAKE API server; stops when dropped.
pub struct FakeApiServer {
    address: SocketAddr,
    world: Arc<Mutex<World>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts serving `world` on a free loopback port, with a serving certificate from the CA
    /// in `pki_dir` (`ca.crt`, `ca.key`) and client certificates checked against it.
    pub fn start(pki_dir: &Path, world: World) -> anyhow::Result<FakeApiServer> {
        FakeApiServer::start_on(
            &pki_dir.join("ca.crt"),
            &pki_dir.join("ca.key"),
            "127.0.0.1:0".parse()?,
            world,
        )
    }

    /// Starts serving `world` on `listen` (port 0: a free one), with a serving certificate
    /// from the CA in `ca_cert` and `ca_key` and client certificates checked against it.
    pub fn start_on(
        ca_cert: &Path,
        ca_key: &Path,
        listen: SocketAddr,
        mut world: World,
    ) -> anyhow::Result<FakeApiServer> {
        let (serving_cert, serving_key) = serving_certificate(ca_cert, ca_key, listen.ip())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca_cert)?)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![serving_cert],
                PrivateKeyDer::from_pem_slice(serving_key.as_bytes())?,
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);

        let listener = TcpListener::bind(listen)?;
        let address = listener.local_addr()?;
        world.address = address.to_string();
        let world = Arc::new(Mutex::new(world));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (world, stop) = (world.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (world, config) = (world.clone(), config.clone());
                    std::thread::spawn(move || serve(stream, config, world));
                }
            })
        };
        Ok(FakeApiServer {
            address,
            world,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// `127.0.0.1:PORT`, the control-plane endpoint to give clients.
    pub fn endpoint(&self) -> String {
        self.address.to_string()
    }

    /// The objects, to arrange a test or to check what happened.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One connection: the TLS handshake (client certificate checked), then requests until the
/// client closes.
fn serve(mut tcp: TcpStream, config: Arc<ServerConfig>, world: Arc<Mutex<World>>) {
    let lock = || world.lock().unwrap_or_else(|p| p.into_inner());
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut connection) = ServerConnection::new(config) else {
        return;
    };
    while connection.is_handshaking() {
        if connection.complete_io(&mut tcp).is_err() {
            lock().rejected_handshakes += 1;
            return;
        }
    }
    let authenticated = connection
        .peer_certificates()
        .is_some_and(|certs| !certs.is_empty());
    let mut stream = BufReader::new(StreamOwned::new(connection, tcp));
    while let Ok(Some(request)) = http::read_request(&mut stream) {
        let response = if authenticated {
            lock().handle(&request)
        } else {
            http::Response {
                code: 401,
                body: serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
            }
        };
        if http::write_response(stream.get_mut(), &response).is_err()
            || request.header("connection").eq_ignore_ascii_case("close")
        {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::http::Request;
    use super::*;

    fn post(path: &str, body: &serde_json::Value) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            body: body.to_string().into_bytes(),
            ..Request::default()
        }
    }

    #[test]
    fn the_fake_creates_secrets_once_and_validates_them_as_the_api_server_does() {
        let mut world = World::default();
        let path = "/api/v1/namespaces/kube-system/secrets";
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "bootstrap-token-abcdef"}, "type": "bootstrap.kubernetes.io/token",
            "data": {"token-id": "YWJjZGVm"}});
        let created = world.handle(&post(path, &secret));
        assert_eq!(created.code, 201, "{}", created.body);
        assert_eq!(created.body["metadata"]["namespace"], "kube-system");
        assert!(created.body["metadata"]["uid"].is_string());
        let again = world.handle(&post(path, &secret));
        assert_eq!(again.code, 409);
        assert_eq!(again.body["reason"], "AlreadyExists");
        let get = world.handle(&Request {
            method: "GET".into(),
            path: format!("{path}/bootstrap-token-abcdef"),
            ..Request::default()
        });
        assert_eq!(get.code, 200);
        assert_eq!(get.body["data"]["token-id"], "YWJjZGVm");
        let missing = world.handle(&Request {
            method: "GET".into(),
            path: format!("{path}/bootstrap-token-zzzzzz"),
            ..Request::default()
        });
        assert_eq!(missing.code, 404);
        for (bad, code) in [
            (
                serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "x", "namespace": "default"}}),
                400,
            ),
            (
                serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "X_Y"}}),
                422,
            ),
            (
                serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "y"},
                    "data": {"k": "not base64!"}}),
                422,
            ),
            (
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}}),
                400,
            ),
        ] {
            assert_eq!(world.handle(&post(path, &bad)).code, code, "{bad}");
        }
        assert!(world.secret("kube-system", "x").is_none());
    }
}
