//! A full consistency check of a VHDX file, reporting every problem instead of the first.

use std::path::Path;

use super::reader::{self, Vhdx};

/// The outcome of [`check`]: an empty list means the file is clean.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// One line per problem.
    pub findings: Vec<String>,
    /// True when a dirty log was replayed (in memory) to check the file.
    pub log_replayed: bool,
}

impl Report {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks headers, region tables, metadata, the BAT and sector-bitmap entries, and for a
/// differencing disk that its parent can be found and matches.
pub fn check(path: &Path) -> Report {
    let mut report = Report::default();
    let loaded = match reader::load(path) {
        Ok(loaded) => loaded,
        Err(error) => {
            report.findings.push(error_line(&error));
            return report;
        }
    };
    report.log_replayed = loaded.vhdx.log_replayed();
    report.findings.extend(loaded.vhdx.notes().iter().cloned());
    report.findings.extend(loaded.bat_findings);
    if loaded.vhdx.parent_locator().is_some()
        && report.findings.is_empty()
        && let Err(error) = Vhdx::open_chain(path)
    {
        report.findings.push(error_line(&error));
    }
    report
}

/// An error and its causes on one line, outermost first, joined by ": ".
pub fn error_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
