//! The beacon: each node VM writes a JSON line every few seconds to its virtio-serial port
//! `org.slipway.beacon`, which QEMU exposes as a unix socket in the VM's run directory. A
//! listener thread per VM reads those lines and hands them to the supervision loop; it
//! reconnects on its own (QEMU accepts the next client after slipwayd restarts), so a beacon is
//! also a heartbeat.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::Deserialize;

/// The longest beacon line read; a longer one is dropped.
const MAX_LINE: u64 = 64 << 10;
/// How often a listener looks at its stop flag while it waits.
const POLL: Duration = Duration::from_secs(1);

/// What a node says on its beacon port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Beacon {
    /// `ready`.
    pub event: String,
    /// Image name.
    pub image: String,
    /// Image version.
    pub version: String,
    /// The dm-verity root hash the node booted.
    pub root_hash: String,
    /// sha256 of the kubeadm documents it received.
    pub kubeadm_sha256: String,
    /// Its address.
    #[serde(default)]
    pub address: String,
    /// Whether it reaches its cluster's control-plane endpoint (`reachable`/`unreachable`).
    #[serde(default)]
    pub endpoint: String,
    /// Whether it reaches the host at its gateway address (`reachable`/`unreachable`; empty
    /// when the image does not say).
    #[serde(default)]
    pub host: String,
    /// Seconds since the guest booted.
    #[serde(default)]
    pub uptime: f64,
}

/// What a listener reports.
#[derive(Debug)]
pub enum Heard {
    /// A beacon from the node.
    Beacon(Beacon),
    /// The port closed (the VM stopped, or QEMU dropped the connection).
    Lost,
}

/// A running listener; dropping the handle does not stop it, [`Listener::stop`] does.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Starts a thread that connects to `socket` (retrying while it does not exist) and sends
    /// every beacon of node `name` to `events`, built by `wrap`.
    pub fn start<E: Send + 'static>(
        name: &str,
        socket: PathBuf,
        events: Sender<E>,
        wrap: fn(String, Heard) -> E,
    ) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let name = name.to_owned();
        std::thread::spawn(move || listen(&name, &socket, &flag, &events, wrap));
        Listener { stop }
    }

    /// Asks the thread to end (within about a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn listen<E>(
    name: &str,
    socket: &PathBuf,
    stop: &AtomicBool,
    events: &Sender<E>,
    wrap: fn(String, Heard) -> E,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = UnixStream::connect(socket) else {
            std::thread::sleep(POLL);
            continue;
        };
        if stream.set_read_timeout(Some(POLL)).is_err() {
            std::thread::sleep(POLL);
            continue;
        }
        let mut reader = BufReader::new(stream);
        // A line may arrive in pieces across timeouts: keep what came until its newline.
        let mut line = String::new();
        while !stop.load(Ordering::Relaxed) {
            match (&mut reader).take(MAX_LINE).read_line(&mut line) {
                Ok(0) => {
                    if events.send(wrap(name.to_owned(), Heard::Lost)).is_err() {
                        return;
                    }
                    std::thread::sleep(POLL);
                    break;
                }
                Ok(_) if !line.ends_with('\n') && (line.len() as u64) < MAX_LINE => {}
                Ok(_) => {
                    if let Ok(beacon) = serde_json::from_str::<Beacon>(line.trim()) {
                        if events
                            .send(wrap(name.to_owned(), Heard::Beacon(beacon)))
                            .is_err()
                        {
                            return;
                        }
                    } else {
                        tracing::debug!(vm = %name, "an unreadable beacon line was dropped");
                    }
                    line.clear();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    #[test]
    fn beacons_in_pieces_are_joined_and_a_closed_port_is_reported_then_reconnected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("beacon.sock");
        let server = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        let listener = Listener::start("n1", path.clone(), tx, |n, h| (n, h));

        let line = r#"{"event":"ready","image":"tiny","version":"1","root_hash":"ab","kubeadm_sha256":"cd","uptime":12.5}"#;
        let (mut conn, _) = server.accept().unwrap();
        conn.write_all(&line.as_bytes()[..20]).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        conn.write_all(&line.as_bytes()[20..]).unwrap();
        conn.write_all(b"\nnot json\n").unwrap();
        let (name, heard) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name, "n1");
        let Heard::Beacon(b) = heard else {
            panic!("expected a beacon, got {heard:?}")
        };
        assert_eq!((b.kubeadm_sha256.as_str(), b.uptime), ("cd", 12.5));
        drop(conn);
        let (_, heard) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(heard, Heard::Lost), "{heard:?}");

        // As after a slipwayd restart: the next connection is heard too.
        let (mut conn, _) = server.accept().unwrap();
        conn.write_all(format!("{line}\n").as_bytes()).unwrap();
        let (_, heard) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(heard, Heard::Beacon(_)), "{heard:?}");
        listener.stop();
    }
}
