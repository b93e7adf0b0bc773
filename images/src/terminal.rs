//! What the two Slipway binaries share at the terminal: log set-up and error reports.
//!
//! Exit codes are part of the interface: 0 success, 1 failure, 2 usage error (clap's own
//! exit code for bad arguments, kept as it is).

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event, coloured on a terminal.
    #[default]
    Human,
    /// One JSON object per event, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected human or json"
            )),
        }
    }
}

/// Installs the global `tracing` subscriber writing to standard error.
///
/// `RUST_LOG` overrides `default_level` (e.g. `RUST_LOG=images=debug`).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second initialisation (tests calling main twice) is harmless: keep the first.
    let _already_set = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

/// Turns the result of a command into the process exit code, printing a failure as one
/// sentence followed by its causes, outermost first.
pub fn finish(program: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", render_error(program, &error));
            ExitCode::FAILURE
        }
    }
}

/// The text [`finish`] prints for an error: `program: error: WHAT` then `  caused by: WHY` lines.
pub fn render_error(program: &str, error: &anyhow::Error) -> String {
    let mut text = format!("{program}: error: {error}");
    for cause in error.chain().skip(1) {
        text.push_str("\n  caused by: ");
        text.push_str(&cause.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_report_lists_causes_in_order() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let error = anyhow::Error::new(io)
            .context("open disk.raw")
            .context("convert disk.raw to disk.vhdx");
        assert_eq!(
            render_error("slipway", &error),
            "slipway: error: convert disk.raw to disk.vhdx\n  caused by: open disk.raw\n  caused by: No such file or directory"
        );
    }

    #[test]
    fn log_format_parses_known_names_only() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
