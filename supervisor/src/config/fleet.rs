//! `[fleet]` in host.toml: where the hosts running one cluster's nodes share their lock slots.
//! Without the table a host is alone (`backend = "none"`).
//!
//! ```toml
//! [fleet]
//! backend = "etcd"
//! endpoints = ["http://10.0.0.11:2379", "http://10.0.0.12:2379", "http://10.0.0.13:2379"]
//! ttl = "10s"             # how long a dead host's slots outlive it (default 10 s)
//! request-timeout = "2s"  # per request and member (default 2 s)
//! prefix = "/slipway"     # where the keys live (default)
//! ```

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::rollout::parse_duration;

/// The lease TTL when `ttl` is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The per-request timeout when `request-timeout` is not given.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The key prefix when `prefix` is not given.
pub const DEFAULT_PREFIX: &str = "/slipway";
/// etcd refuses leases shorter than about 1.5 s (its election timeout and a half).
const MIN_TTL: Duration = Duration::from_secs(2);

/// Where slots are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fleet {
    /// This host alone: slots in memory.
    #[default]
    None,
    /// An etcd cluster shared by the hosts.
    Etcd {
        /// Client URLs of its members, `http://HOST:PORT`.
        endpoints: Vec<String>,
        /// Lease time to live.
        ttl: Duration,
        /// Per request and member.
        request_timeout: Duration,
        /// Key prefix, starting with `/`, no trailing `/`.
        prefix: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    None,
    Etcd,
}

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Raw {
    backend: Spanned<Backend>,
    endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    ttl: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
}

impl Raw {
    /// The fleet, or the span and message of the first bad key.
    pub(super) fn validate(self) -> Result<Fleet, (Range<usize>, String)> {
        if *self.backend.get_ref() == Backend::None {
            let extra = [
                self.endpoints.as_ref().map(Spanned::span),
                self.ttl.as_ref().map(Spanned::span),
                self.request_timeout.as_ref().map(Spanned::span),
                self.prefix.as_ref().map(Spanned::span),
            ];
            if let Some(span) = extra.into_iter().flatten().next() {
                return Err((
                    span,
                    "backend \"none\" takes no other key: remove it, or set backend = \"etcd\""
                        .into(),
                ));
            }
            return Ok(Fleet::None);
        }
        let Some(endpoints) = self.endpoints else {
            return Err((
                self.backend.span(),
                "backend \"etcd\" needs endpoints = [\"http://HOST:2379\", ...] (every member's client URL)"
                    .into(),
            ));
        };
        if endpoints.get_ref().is_empty() {
            return Err((
                endpoints.span(),
                "endpoints: at least one etcd member".into(),
            ));
        }
        let mut urls = Vec::new();
        for e in endpoints.into_inner() {
            let url = e.get_ref().trim_end_matches('/');
            let authority = url.strip_prefix("http://").unwrap_or("");
            if authority.is_empty() || authority.contains('/') {
                let why = if url.starts_with("https://") {
                    "https (client certificates) is not built yet: use http:// on a trusted network"
                } else {
                    "expected http://HOST:PORT"
                };
                return Err((e.span(), format!("endpoint {:?}: {why}", e.get_ref())));
            }
            urls.push(url.to_owned());
        }
        let duration = |s: &Option<Spanned<String>>, what: &str, default: Duration| match s {
            None => Ok(default),
            Some(s) => {
                parse_duration(s.get_ref()).map_err(|why| (s.span(), format!("{what}: {why}")))
            }
        };
        let ttl = duration(&self.ttl, "ttl", DEFAULT_TTL)?;
        if ttl < MIN_TTL {
            let span = self.ttl.as_ref().map_or(0..0, Spanned::span);
            return Err((
                span,
                format!(
                    "ttl: at least {} s (etcd's shortest lease)",
                    MIN_TTL.as_secs()
                ),
            ));
        }
        let request_timeout = duration(
            &self.request_timeout,
            "request-timeout",
            DEFAULT_REQUEST_TIMEOUT,
        )?;
        if request_timeout.is_zero() || request_timeout >= ttl {
            let span = self.request_timeout.as_ref().map_or(0..0, Spanned::span);
            return Err((
                span,
                "request-timeout: more than 0 s and less than ttl (a keep-alive must fit in the lease)"
                    .into(),
            ));
        }
        let prefix = match &self.prefix {
            None => DEFAULT_PREFIX.to_owned(),
            Some(p) => {
                let text = p.get_ref().trim_end_matches('/');
                if !text.starts_with('/') || text.len() < 2 {
                    return Err((
                        p.span(),
                        format!(
                            "prefix {:?}: expected a key path like \"/slipway\"",
                            p.get_ref()
                        ),
                    ));
                }
                text.to_owned()
            }
        };
        Ok(Fleet::Etcd {
            endpoints: urls,
            ttl,
            request_timeout,
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        fleet: Raw,
    }

    fn parse(text: &str) -> Result<Fleet, String> {
        let w: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        w.fleet
            .validate()
            .map_err(|(span, why)| format!("{}: {why}", &text[span]))
    }

    #[test]
    fn etcd_with_defaults() {
        let fleet = parse("[fleet]\nbackend = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379/\"]\n")
            .unwrap();
        assert_eq!(
            fleet,
            Fleet::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into()],
                ttl: DEFAULT_TTL,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                prefix: DEFAULT_PREFIX.into(),
            }
        );
    }

    #[test]
    fn every_key() {
        let fleet = parse(
            "[fleet]\nbackend = \"etcd\"\nendpoints = [\"http://a:2379\", \"http://b:2379\"]\n\
             ttl = \"30s\"\nrequest-timeout = \"5s\"\nprefix = \"/x/\"\n",
        )
        .unwrap();
        let Fleet::Etcd {
            endpoints,
            ttl,
            request_timeout,
            prefix,
        } = fleet
        else {
            panic!("etcd expected");
        };
        assert_eq!(endpoints.len(), 2);
        assert_eq!((ttl.as_secs(), request_timeout.as_secs()), (30, 5));
        assert_eq!(prefix, "/x");
    }

    #[test]
    fn mistakes_point_at_their_key() {
        let cases = [
            (
                "backend = \"none\"\nttl = \"10s\"",
                "\"10s\": backend \"none\" takes no other key",
            ),
            (
                "backend = \"etcd\"",
                "\"etcd\": backend \"etcd\" needs endpoints",
            ),
            (
                "backend = \"etcd\"\nendpoints = []",
                "[]: endpoints: at least one",
            ),
            (
                "backend = \"etcd\"\nendpoints = [\"https://a:2379\"]",
                "\"https://a:2379\": endpoint",
            ),
            (
                "backend = \"etcd\"\nendpoints = [\"a:2379\"]",
                "\"a:2379\": endpoint \"a:2379\": expected http://HOST:PORT",
            ),
            (
                "backend = \"etcd\"\nendpoints = [\"http://a:1\"]\nttl = \"1s\"",
                "\"1s\": ttl: at least 2 s",
            ),
            (
                "backend = \"etcd\"\nendpoints = [\"http://a:1\"]\nrequest-timeout = \"10s\"",
                "\"10s\": request-timeout",
            ),
            (
                "backend = \"etcd\"\nendpoints = [\"http://a:1\"]\nprefix = \"x\"",
                "\"x\": prefix",
            ),
        ];
        for (body, expected) in cases {
            let error = parse(&format!("[fleet]\n{body}\n")).unwrap_err();
            assert!(error.starts_with(expected), "{body}: {error}");
        }
        assert!(parse("[fleet]\nbackend = \"zookeeper\"\n").is_err());
        assert!(parse("[fleet]\nbackend = \"none\"\nendpoint = []\n").is_err());
    }
}
