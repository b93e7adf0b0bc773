//! The beacon: each node VM writes a JSON line every few seconds to its beacon port (the
//! virtio-serial port `org.slipway.beacon` under QEMU, which the driver exposes as a unix
//! socket in the VM's run directory). A listener task per VM reads those lines and hands them to
//! the supervision loop; it reconnects on its own (QEMU accepts the next client after slipwayd
//! restarts), so a beacon is also a heartbeat. Under Hyper-V the node writes the same line as
//! the KVP item `SlipwayBeacon`, which the listener reads every few seconds ([`Port::Poll`]):
//! a line is handed on when it differs from the last one read (the guest's `uptime` moves on
//! each write), so a guest that stopped writing is not heard again. The socket port is QEMU's
//! and exists on Unix builds alone; a Windows build polls.

use std::future::Future;
#[cfg(unix)]
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
#[cfg(unix)]
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// The longest beacon line read; a longer one is dropped.
#[cfg(unix)]
const MAX_LINE: u64 = 64 << 10;
/// How long a listener waits before it connects again.
#[cfg(unix)]
const RETRY: Duration = Duration::from_secs(1);

/// How often a polled port is read (tests: often, to keep them short).
const POLL: Duration = if cfg!(test) {
    Duration::from_millis(50)
} else {
    Duration::from_secs(3)
};

/// Where a node's beacon lines come from.
#[derive(Clone)]
pub enum Port {
    /// A unix stream socket the lines arrive on (QEMU's virtio-serial port).
    #[cfg(unix)]
    Socket(PathBuf),
    /// A source read every few seconds (Hyper-V's KVP item).
    Poll(Arc<dyn Poll>),
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(unix)]
            Port::Socket(path) => write!(f, "socket {}", path.display()),
            Port::Poll(_) => write!(f, "polled"),
        }
    }
}

/// A beacon source read on demand.
pub trait Poll: Send + Sync + 'static {
    /// The node's latest beacon line; `None` while its VM does not run or has not written one.
    fn read(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Option<String>>> + Send + '_>>;
}

/// What a node says on its beacon port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Beacon {
    /// `ready`; `booting` while the node is up but not ready (all an image built with the
    /// never-ready knob ever says).
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
    /// The node's id: a UUID the guest made on its first boot and keeps on its state disk, so
    /// it survives image swaps that keep the disk. Empty without a usable state disk, or
    /// from an image that does not say.
    #[serde(default)]
    pub node_id: String,
    /// How many times the node booted with this state disk (1 on the first boot); 0 without a
    /// usable state disk, or from an image that does not say.
    #[serde(default)]
    pub boot_count: u64,
    /// The state disk as the guest found it on this boot: `mounted`, `formatted` (it was blank
    /// and was formatted), `unreadable` (not blank, and it did not mount: left untouched) or
    /// `missing`; empty from an image that does not say.
    #[serde(default)]
    pub state_disk: String,
    /// Why, when `event` is `failed` (windows-node's first-boot agent says which step failed);
    /// empty otherwise.
    #[serde(default)]
    pub reason: String,
}

/// What a listener reports.
#[derive(Debug)]
pub enum Heard {
    /// A beacon from the node (boxed: it is far larger than the other variant).
    Beacon(Box<Beacon>),
    /// The port closed (the VM stopped, or QEMU dropped the connection).
    Lost,
}

/// A running listener task; dropping the handle does not stop it, [`Listener::stop`] does.
#[derive(Debug)]
pub struct Listener {
    task: JoinHandle<()>,
}

impl Listener {
    /// Starts a task that reads `port` (a socket: connecting, and again while it does not
    /// exist; a polled source: every few seconds) and sends every beacon of node `name` to
    /// `events`, built by `wrap`. Must be called within the tokio runtime.
    pub fn start<E: Send + 'static>(
        name: &str,
        port: Port,
        events: UnboundedSender<E>,
        wrap: fn(String, Heard) -> E,
    ) -> Listener {
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            match port {
                #[cfg(unix)]
                Port::Socket(socket) => listen(&name, &socket, &events, wrap).await,
                Port::Poll(source) => poll(&name, &*source, &events, wrap).await,
            }
        });
        Listener { task }
    }

    /// Ends the task (at its next await).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Reads `source` every [`POLL`]: a line unlike the last one read is a beacon; none after some
/// is the port lost.
async fn poll<E>(
    name: &str,
    source: &dyn Poll,
    events: &UnboundedSender<E>,
    wrap: fn(String, Heard) -> E,
) {
    let mut last: Option<String> = None;
    loop {
        let heard = match source.read().await {
            Ok(Some(line)) if last.as_ref() != Some(&line) => {
                let beacon = serde_json::from_str::<Beacon>(line.trim());
                last = Some(line);
                match beacon {
                    Ok(beacon) => Some(Heard::Beacon(Box::new(beacon))),
                    Err(_) => {
                        tracing::debug!(vm = %name, "an unreadable beacon item was dropped");
                        None
                    }
                }
            }
            Ok(Some(_)) => None,
            Ok(None) => last.take().map(|_| Heard::Lost),
            // The status plan says why the host does not answer; the next read may.
            Err(e) => {
                tracing::debug!(vm = %name, "cannot read its beacon: {e:#}");
                None
            }
        };
        if let Some(heard) = heard
            && events.send(wrap(name.to_owned(), heard)).is_err()
        {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Reads the lines of unix socket `socket`, connecting again whenever it closes.
#[cfg(unix)]
async fn listen<E>(
    name: &str,
    socket: &PathBuf,
    events: &UnboundedSender<E>,
    wrap: fn(String, Heard) -> E,
) {
    loop {
        let Ok(stream) = UnixStream::connect(socket).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            // A line longer than MAX_LINE is cut there; it fails to parse and is dropped.
            match (&mut reader).take(MAX_LINE).read_line(&mut line).await {
                Ok(0) => {
                    if events.send(wrap(name.to_owned(), Heard::Lost)).is_err() {
                        return;
                    }
                    tokio::time::sleep(RETRY).await;
                    break;
                }
                Ok(_) => {
                    if let Ok(beacon) = serde_json::from_str::<Beacon>(line.trim()) {
                        if events
                            .send(wrap(name.to_owned(), Heard::Beacon(Box::new(beacon))))
                            .is_err()
                        {
                            return;
                        }
                    } else {
                        tracing::debug!(vm = %name, "an unreadable beacon line was dropped");
                    }
                }
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::net::UnixListener;
    use tokio::sync::mpsc;

    #[test]
    fn state_disk_fields_are_read_and_default_when_absent() {
        let with = r#"{"event":"booting","image":"tiny-linux","version":"2026.11.0","root_hash":"ab","kubeadm_sha256":"cd","uptime":4.03,"node_id":"0d1c217e-2311-4c12-8715-d73b93a5d65d","boot_count":2,"state_disk":"mounted"}"#;
        let b: Beacon = serde_json::from_str(with).unwrap();
        assert_eq!(b.event, "booting");
        assert_eq!(b.node_id, "0d1c217e-2311-4c12-8715-d73b93a5d65d");
        assert_eq!(b.boot_count, 2);
        assert_eq!(b.state_disk, "mounted");

        // An image from before the state disk: still a beacon, the new fields empty.
        let without = r#"{"event":"ready","image":"tiny-linux","version":"2026.10.0","root_hash":"ab","kubeadm_sha256":"cd","uptime":12.5}"#;
        let b: Beacon = serde_json::from_str(without).unwrap();
        assert_eq!(b.event, "ready");
        assert_eq!(
            (b.node_id.as_str(), b.boot_count, b.state_disk.as_str()),
            ("", 0, "")
        );

        // A boot count that is not a count makes the line unreadable (it is dropped), not 0.
        let bad = with.replace(r#""boot_count":2"#, r#""boot_count":"two""#);
        assert!(serde_json::from_str::<Beacon>(&bad).is_err());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn beacons_in_pieces_are_joined_and_a_closed_port_is_reported_then_reconnected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("beacon.sock");
        let server = UnixListener::bind(&path).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = Listener::start("n1", Port::Socket(path.clone()), tx, |n, h| (n, h));
        let recv = async |rx: &mut mpsc::UnboundedReceiver<(String, Heard)>| {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap()
        };

        let line = r#"{"event":"ready","image":"tiny","version":"1","root_hash":"ab","kubeadm_sha256":"cd","uptime":12.5}"#;
        let mut conn =
            tokio::task::spawn_blocking(move || server.accept().map(|(c, _)| (c, server)))
                .await
                .unwrap()
                .unwrap();
        conn.0.write_all(&line.as_bytes()[..20]).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        conn.0.write_all(&line.as_bytes()[20..]).unwrap();
        conn.0.write_all(b"\nnot json\n").unwrap();
        let (name, heard) = recv(&mut rx).await;
        assert_eq!(name, "n1");
        let Heard::Beacon(b) = heard else {
            panic!("expected a beacon, got {heard:?}")
        };
        assert_eq!((b.kubeadm_sha256.as_str(), b.uptime), ("cd", 12.5));
        let (stream, server) = conn;
        drop(stream);
        let (_, heard) = recv(&mut rx).await;
        assert!(matches!(heard, Heard::Lost), "{heard:?}");

        // As after a slipwayd restart: the next connection is heard too.
        let (mut conn, _) = tokio::task::spawn_blocking(move || server.accept())
            .await
            .unwrap()
            .unwrap();
        conn.write_all(format!("{line}\n").as_bytes()).unwrap();
        let (_, heard) = recv(&mut rx).await;
        assert!(matches!(heard, Heard::Beacon(_)), "{heard:?}");
        listener.stop();
    }

    /// A polled source answering from a list, then `None` (the VM stopped).
    struct Script(std::sync::Mutex<Vec<anyhow::Result<Option<String>>>>);

    impl Poll for Script {
        fn read(
            &self,
        ) -> Pin<Box<dyn Future<Output = anyhow::Result<Option<String>>> + Send + '_>> {
            let next = self.0.lock().unwrap().pop().unwrap_or(Ok(None));
            Box::pin(async move { next })
        }
    }

    #[tokio::test]
    async fn a_polled_line_is_heard_once_until_it_changes_and_its_end_is_the_port_lost() {
        let line = |uptime: u32| {
            format!(
                r#"{{"event":"ready","image":"w","version":"1","root_hash":"","kubeadm_sha256":"cd","uptime":{uptime}}}"#
            )
        };
        // Read in this order (popped from the end).
        let reads = vec![
            Ok(None),
            Ok(Some(line(10))),
            Err(anyhow::anyhow!("ssh: connection refused")),
            Ok(Some("not json".to_owned())),
            Ok(Some(line(5))),
            Ok(Some(line(5))),
        ];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let listener = Listener::start(
            "w-1",
            Port::Poll(Arc::new(Script(std::sync::Mutex::new(reads)))),
            tx,
            |n, h| (n, h),
        );
        let mut heard = Vec::new();
        while heard.len() < 3 {
            let (name, h) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(name, "w-1");
            heard.push(match h {
                Heard::Beacon(b) => format!("beacon {}", b.uptime),
                Heard::Lost => "lost".to_owned(),
            });
        }
        // The same line twice is one beacon; an error and an unreadable line are not heard;
        // the end of the lines is the port lost (then nothing more until a line comes back).
        assert_eq!(heard, ["beacon 5", "beacon 10", "lost"]);
        tokio::time::sleep(POLL * 10).await;
        assert!(rx.try_recv().is_err());
        listener.stop();
    }
}
