//! A cluster's rollout policy (`[clusters.rollout]` in host.toml): how its nodes move to a new
//! image. Every key has a default, so a cluster without the table rolls one node at a time,
//! in place, at any hour.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// How a node moves to a new image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Stop the node, put a new OS disk over the new image under it, boot it; its state disk,
    /// address and name stay.
    InPlace,
    /// For workers (control planes still swap in place): boot a replacement beside the node,
    /// with a fresh state disk, a hostname, MAC and address of its own, and retire the old VM
    /// once the replacement is healthy. For workers whose state need not survive.
    Surge,
}

/// A validated rollout policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// How nodes move.
    pub strategy: Strategy,
    /// How many of the cluster's nodes may be down (swapping or not ready) at once.
    pub max_unavailable: u32,
    /// From the start of a node's boot on the new image to its first healthy beacon.
    pub boot_deadline: Duration,
    /// How long a node must stay healthy on the new image before its swap commits.
    pub soak: Duration,
    /// When new swaps may start (UTC); None: at any time.
    pub window: Option<Window>,
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            strategy: Strategy::InPlace,
            max_unavailable: 1,
            boot_deadline: Duration::from_secs(300),
            soak: Duration::from_secs(15),
            window: None,
        }
    }
}

/// A daily maintenance window in UTC, `HH:MM-HH:MM`; it may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight it opens.
    pub start: u32,
    /// Minutes after midnight it closes (exclusive).
    pub end: u32,
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Window, String> {
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 60 + m)
        };
        let parsed = text
            .split_once('-')
            .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)));
        match parsed {
            Some((start, end)) if start != end => Ok(Window { start, end }),
            _ => Err(format!(
                "window {text:?}: expected \"HH:MM-HH:MM\" in UTC (e.g. \"02:00-05:00\"; it may wrap past midnight, and may not be empty)"
            )),
        }
    }

    /// Whether the window is open at `unix` seconds.
    pub fn contains(&self, unix: i64) -> bool {
        let minute = u32::try_from(unix.rem_euclid(86_400) / 60).unwrap_or(0);
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02} UTC",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// A duration as host.toml spells it: `90s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let unit = match &t[digits..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match t[..digits].parse::<u64>() {
        Ok(n) if unit > 0 && digits > 0 => Ok(Duration::from_secs(n.saturating_mul(unit))),
        _ => Err(format!(
            "{text:?}: expected a duration like \"300s\", \"5m\" or \"1h\""
        )),
    }
}

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    strategy: Option<Spanned<Strategy>>,
    max_unavailable: Option<Spanned<u32>>,
    boot_deadline: Option<Spanned<String>>,
    soak: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
}

impl Raw {
    /// The policy, or the span and message of the first bad key.
    pub(super) fn validate(self) -> Result<Rollout, (std::ops::Range<usize>, String)> {
        let mut rollout = Rollout::default();
        if let Some(strategy) = self.strategy {
            rollout.strategy = *strategy.get_ref();
        }
        if let Some(n) = self.max_unavailable {
            if *n.get_ref() == 0 {
                return Err((
                    n.span(),
                    "max-unavailable 0 would never let a node move: at least 1".into(),
                ));
            }
            rollout.max_unavailable = *n.get_ref();
        }
        let duration = |s: &Spanned<String>, what: &str, min: u64| {
            parse_duration(s.get_ref())
                .and_then(|d| {
                    if d.as_secs() >= min {
                        Ok(d)
                    } else {
                        Err(format!("{what} {:?}: at least {min} s", s.get_ref()))
                    }
                })
                .map_err(|why| (s.span(), format!("{what}: {why}")))
        };
        if let Some(d) = &self.boot_deadline {
            rollout.boot_deadline = duration(d, "boot-deadline", 10)?;
        }
        if let Some(d) = &self.soak {
            rollout.soak = duration(d, "soak", 0)?;
        }
        if let Some(w) = &self.window {
            rollout.window = Some(Window::parse(w.get_ref()).map_err(|why| (w.span(), why))?);
        }
        Ok(rollout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_may_wrap_past_midnight_and_its_end_is_open() {
        let at = |h: i64, m: i64| 19_000 * 86_400 + h * 3600 + m * 60;
        let night = Window::parse("22:30-02:00").unwrap();
        assert!(night.contains(at(23, 0)) && night.contains(at(1, 59)));
        assert!(!night.contains(at(2, 0)) && !night.contains(at(12, 0)));
        let day = Window::parse("02:00-05:00").unwrap();
        assert!(day.contains(at(2, 0)) && !day.contains(at(5, 0)));
        for bad in ["2:00-05:00", "02:00-02:00", "25:00-01:00", "02:00"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(day.to_string(), "02:00-05:00 UTC");
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("90").is_err());
        assert!(parse_duration("s").is_err());
    }
}
