//! Test support: a real etcd cluster (Debian's `etcd-server`) of a few members on loopback
//! ports, in a temporary directory, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the members may take to elect a leader and answer /health.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running etcd cluster.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Option<Child>>,
    clients: Vec<String>,
}

fn free_port() -> u16 {
    // Bound and released; etcd binds it a moment later (a race another test would rarely win).
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .into();
    agent.get(url).call().ok()?.body_mut().read_to_string().ok()
}

impl EtcdCluster {
    /// Starts `size` members and waits until each says it is healthy.
    pub fn start(size: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut members = Vec::new();
        let mut clients = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client = format!("http://127.0.0.1:{client}");
            let peer = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).expect("log");
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &token,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd runs (Debian package etcd-server)");
            members.push(Some(child));
            clients.push(client);
        }
        let cluster = EtcdCluster {
            dir,
            members,
            clients,
        };
        let started = Instant::now();
        while !cluster
            .clients
            .iter()
            .all(|c| get(&format!("{c}/health")).is_some_and(|h| h.contains(r#""health":"true""#)))
        {
            assert!(
                started.elapsed() < START_DEADLINE,
                "etcd did not become healthy in {START_DEADLINE:?}; logs in {}",
                cluster.log_dir().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// Where the members' logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.clients.clone()
    }

    /// Which member leads now (asked of each live member in turn).
    pub fn leader(&self) -> usize {
        let ids: Vec<Option<(String, String)>> = self
            .clients
            .iter()
            .map(|c| {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_millis(500)))
                    .build()
                    .into();
                let text = agent
                    .post(&format!("{c}/v3/maintenance/status"))
                    .send(&b"{}"[..])
                    .ok()?
                    .body_mut()
                    .read_to_string()
                    .ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                Some((
                    v["header"]["member_id"].as_str()?.to_owned(),
                    v["leader"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let leader = ids.iter().flatten().map(|(_, l)| l.clone()).next();
        ids.iter()
            .position(|m| m.as_ref().map(|(id, _)| id) == leader.as_ref())
            .expect("a live member names the leader")
    }

    /// Kills member `index` (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}
