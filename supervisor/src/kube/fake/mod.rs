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

mod api;
mod http;

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

pub use api::{FakePod, World};

use crate::kube::mint::Ca;

/// A running FAKE API server; stops when dropped.
pub struct FakeApiServer {
    address: SocketAddr,
    world: Arc<Mutex<World>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts serving `world` on a free loopback port, with a serving certificate from the CA
    /// in `pki_dir` and client certificates checked against it.
    pub fn start(pki_dir: &Path, mut world: World) -> anyhow::Result<FakeApiServer> {
        let ca = Ca::load(pki_dir)?;
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
        ])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving = ca.issue(params, Duration::from_secs(24 * 3600))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_file(
            pki_dir.join("ca.crt"),
        )?)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![serving.cert_der.clone()],
                PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())?,
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0")?;
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
