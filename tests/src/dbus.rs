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
        Bus::launch("--config-file=/usr/share/dbus-1/session.conf", None)
    }

    /// Starts a bus with the system bus's default policy (every user may connect; method calls
    /// are denied unless a policy allows them) plus the policy file `policy`, on a socket every
    /// user can reach: what a service's policy allows, as the system bus would apply it.
    pub fn system_like(policy: &std::path::Path) -> Bus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let config = dir.path().join("system.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{}</include>
</busconfig>
"#,
                dir.path().join("bus").display(),
                policy.display()
            ),
        )
        .unwrap();
        Bus::launch(&format!("--config-file={}", config.display()), Some(dir))
    }

    fn launch(config: &str, dir: Option<tempfile::TempDir>) -> Bus {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let address = format!("unix:path={}", dir.path().join("bus").display());
        let mut child = Command::new("dbus-daemon")
            .args([config, "--nofork", "--print-address=1"])
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
