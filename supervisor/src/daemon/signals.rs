//! What the operating system asks of `slipwayd run`. On Unix: SIGTERM and SIGINT stop it (the
//! VMs keep running), SIGHUP reloads host.toml. On Windows: Ctrl+C and Ctrl+Break stop it;
//! there is no reload signal there, so a reload goes over D-Bus (`Reload`) or comes by itself
//! when host.toml changes.

use anyhow::Context;

/// What a signal asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asked {
    /// End the loop (the VMs keep running).
    Stop,
    /// Read host.toml again.
    Reload,
}

/// The signal handlers, installed once for the whole run so that no signal that arrives while
/// the loop is busy is lost.
pub(super) struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
    #[cfg(windows)]
    ctrl_break: tokio::signal::windows::CtrlBreak,
}

impl Signals {
    /// Installs the handlers; fails when one cannot be.
    #[cfg(unix)]
    pub(super) fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Installs the handlers; fails when one cannot be.
    #[cfg(windows)]
    pub(super) fn install() -> anyhow::Result<Signals> {
        use tokio::signal::windows::{ctrl_break, ctrl_c};
        Ok(Signals {
            ctrl_c: ctrl_c().context("cannot handle Ctrl+C")?,
            ctrl_break: ctrl_break().context("cannot handle Ctrl+Break")?,
        })
    }

    /// The next signal's ask. Cancel-safe: a signal that arrives while the caller does
    /// something else is kept for the next call.
    #[cfg(unix)]
    pub(super) async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.terminate.recv() => Asked::Stop,
            _ = self.interrupt.recv() => Asked::Stop,
            _ = self.hangup.recv() => Asked::Reload,
        }
    }

    /// The next signal's ask. Cancel-safe: a signal that arrives while the caller does
    /// something else is kept for the next call.
    #[cfg(windows)]
    pub(super) async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.ctrl_c.recv() => Asked::Stop,
            _ = self.ctrl_break.recv() => Asked::Stop,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    /// SIGHUP is a reload and leaves the loop running; SIGTERM is a stop. Sent to this test
    /// process with kill(1): the handlers installed here catch them, so nothing else sees them.
    #[tokio::test]
    async fn a_hangup_reloads_and_a_terminate_stops() {
        let mut signals = Signals::install().unwrap();
        for (name, asked) in [("HUP", Asked::Reload), ("TERM", Asked::Stop)] {
            let status = std::process::Command::new("kill")
                .args([&format!("-{name}"), &std::process::id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -{name}");
            let got = tokio::time::timeout(Duration::from_secs(10), signals.next())
                .await
                .unwrap();
            assert_eq!(got, asked, "SIG{name}");
        }
    }
}
