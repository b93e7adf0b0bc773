//! A private message bus (Debian's dbus-daemon with the session bus policy) on a unix socket
//! in a temporary directory, for tests of D-Bus services; killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running bus.
pub struct Bus {
    /// Its address, as `--address=` and `DBUS_*_BUS_ADDRESS` take it.
    pub address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Bus {
    /// Starts a bus and waits until it accepts connections.
    pub fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}", dir.path().join("bus").display());
        let mut child = Command::new("dbus-daemon")
            .args([
                "--config-file=/usr/share/dbus-1/session.conf",
                "--nofork",
                "--print-address=1",
            ])
            .arg(format!("--address={address}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon (package dbus-daemon; ./scripts/setup installs it)");
        // It prints its address once it listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with(&address),
            "dbus-daemon said {line:?}, not {address}"
        );
        Bus {
            address,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
