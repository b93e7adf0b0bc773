//! What a build tells the person or the CI system watching it: a line per stage (with a spinner
//! or a byte progress bar for long ones) for people, or one JSON object per line with `--json`.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::json;

use crate::progress;

/// Where build events go.
#[derive(Debug, Clone, Copy)]
pub struct Events {
    json: bool,
}

/// A running stage; finish it with [`Stage::done`].
pub struct Stage<'a> {
    events: &'a Events,
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Events {
    /// Human lines on stderr (`json = false`) or JSON lines on stdout.
    pub fn new(json: bool) -> Events {
        Events { json }
    }

    fn emit(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
    }

    /// A short step inside a stage (a source being resolved): logged, not timed.
    pub fn step(&self, what: &str) {
        if self.json {
            self.emit(json!({"event": "step", "what": what}));
        } else {
            tracing::debug!("{what}");
        }
    }

    /// Starts stage `name`; `total` bytes shows a progress bar, `None` a spinner.
    pub fn stage(&self, name: &str, total: Option<u64>) -> Stage<'_> {
        if self.json {
            self.emit(json!({"event": "stage-start", "stage": name}));
        }
        let bar = (!self.json).then(|| match total {
            Some(total) => progress::bytes(total, name),
            None => progress::spinner(name),
        });
        Stage {
            events: self,
            name: name.to_owned(),
            started: Instant::now(),
            bar,
        }
    }

    /// A stage whose result came from the cache.
    pub fn cached(&self, name: &str, key: &str) {
        if self.json {
            self.emit(json!({"event": "stage-cached", "stage": name, "key": key}));
        } else {
            tracing::info!(stage = name, "cached");
        }
    }

    /// The build's result.
    pub fn finished(&self, value: serde_json::Value) {
        if self.json {
            self.emit(json!({"event": "finished", "result": value}));
        }
    }
}

impl Stage<'_> {
    /// Reports `bytes` processed so far.
    pub fn progress(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }

    /// Ends the stage, reporting its duration.
    pub fn done(self) -> Duration {
        let elapsed = self.started.elapsed();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.events.json {
            self.events.emit(json!({
                "event": "stage-done",
                "stage": self.name,
                "seconds": elapsed.as_secs_f64(),
            }));
        } else {
            tracing::info!(stage = %self.name, seconds = format!("{:.2}", elapsed.as_secs_f64()), "done");
        }
        elapsed
    }
}
