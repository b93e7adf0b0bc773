//! A real OCI registry (Debian's docker-registry, the CNCF distribution server) on loopback,
//! with its storage in a temporary directory, that a test can stop and start again.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry; killed when dropped. Its `http.secret` is fixed: the registry signs the
/// upload state in its upload URLs with it, and a random one per start would make every upload
/// session unusable after a restart (as in any multi-instance deployment, which must set one).
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    config: PathBuf,
    /// The network namespace it runs in (None: the test's own).
    netns: Option<String>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port.
    pub fn start() -> Registry {
        Registry::start_on(None)
    }

    /// Starts a registry on the loopback of `netns` (for programs that run there).
    pub fn start_in(netns: &crate::netns::Netns) -> Registry {
        Registry::start_on(Some(netns.name.clone()))
    }

    fn start_on(netns: Option<String>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {host}\n  secret: slipway-test-upload-state-key\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut registry = Registry {
            host,
            config,
            netns,
            child: None,
            _dir: dir,
        };
        registry.resume();
        registry
    }

    /// Kills the registry (as a crash would: no graceful shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage, and waits until it answers.
    pub fn resume(&mut self) {
        let mut command = match &self.netns {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name, "docker-registry"]);
                command
            }
            None => Command::new("docker-registry"),
        };
        let child = command
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (run ./scripts/setup)");
        self.child = Some(child);
        let start = Instant::now();
        while !self.answers() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Registry {
    /// Whether something accepts connections on its address (in its namespace).
    fn answers(&self) -> bool {
        match &self.netns {
            None => std::net::TcpStream::connect(&self.host).is_ok(),
            Some(name) => {
                let (ip, port) = self.host.split_once(':').unwrap_or_default();
                Command::new("ip")
                    .args(["netns", "exec", name, "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
