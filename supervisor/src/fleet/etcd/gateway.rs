//! etcd v3's JSON gateway (grpc-gateway on the client port): HTTP POST of a JSON request to
//! `/v3/<service>/<method>`, keys and values base64, 64-bit integers as decimal strings, fields
//! at their zero value left out of responses. etcd 3.4 (Debian's 3.4.23) serves `/v3/`; 3.3
//! served `/v3beta/`, which we do not speak.
//!
//! Several endpoints are tried in turn, starting with the last one that answered, so one dead
//! member does not stop the fleet. An endpoint that refuses the connection, times out or
//! answers "unavailable" (no leader, quorum lost) is skipped; when every endpoint fails that
//! way the call is [`GatewayError::Unreachable`]. An answer that is a definite refusal (a bad
//! request, a lease not found) is [`GatewayError::Rejected`] and not retried elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The largest response read (a cluster's keys are a few kilobytes).
const MAX_RESPONSE: u64 = 4 << 20;

/// gRPC status codes that mean "this member cannot serve now; another one may" (Unknown,
/// DeadlineExceeded, ResourceExhausted, Unavailable). etcd maps "no leader", "request timed
/// out" and "leader changed" to Unavailable.
const RETRY_ELSEWHERE: [i64; 4] = [2, 4, 8, 14];

/// A gateway failure.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No endpoint answered usefully.
    #[error("no etcd endpoint answered: {}", .attempts.join("; "))]
    Unreachable {
        /// `endpoint: what happened`, one per endpoint tried.
        attempts: Vec<String>,
    },
    /// An endpoint answered with a definite error.
    #[error("etcd at {endpoint} refused {path}: {message} (gRPC code {code})")]
    Rejected {
        /// The endpoint.
        endpoint: String,
        /// The request path.
        path: &'static str,
        /// The gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// An answer that is not the JSON expected.
    #[error("etcd at {endpoint} answered {path} with something unreadable")]
    Decode {
        /// The endpoint.
        endpoint: String,
        /// The request path.
        path: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one etcd cluster's JSON gateway. Blocking.
#[derive(Debug)]
pub struct Gateway {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    /// Index of the endpoint tried first (the last that answered).
    preferred: AtomicUsize,
}

/// A key and its metadata, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of its creation.
    pub create_revision: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// The lease it is bound to (0: none).
    pub lease: i64,
}

/// A comparison in a transaction.
#[derive(Debug, Clone)]
pub enum Compare<'a> {
    /// The key's create revision equals this (0: the key does not exist).
    CreateRevision(&'a str, i64),
    /// The key's lease equals this.
    Lease(&'a str, i64),
    /// Every key in `[prefix, end of prefix)` was last changed before this revision.
    ModifiedBefore(&'a str, i64),
}

/// An operation in a transaction.
#[derive(Debug, Clone)]
pub enum Op<'a> {
    /// Put a value, bound to a lease (0: none).
    Put(&'a str, &'a [u8], i64),
    /// Delete one key.
    Delete(&'a str),
    /// Read one key, linearizably. A transaction of comparisons alone counts as
    /// "serializable" in etcd (no operation asks for consensus) and is answered from the
    /// member's local copy, even one cut off from the quorum: a fencing check needs this.
    Read(&'a str),
}

/// The answer to a transaction: whether the comparisons held, and the revision after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// The comparisons held and the success operations ran.
    pub succeeded: bool,
    /// The store's revision after the transaction (the revision of its writes if it wrote).
    pub revision: i64,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int")]
    lease: i64,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
}

#[derive(Deserialize)]
struct LeaseResponse {
    #[serde(rename = "ID", default, deserialize_with = "int")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int")]
    ttl: i64,
}

#[derive(Deserialize)]
struct KeepAliveResponse {
    result: Option<LeaseResponse>,
    error: Option<Status>,
}

/// grpc-gateway writes int64 as a string; accept a number too.
fn int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom("not a 64-bit integer")),
        other => Err(serde::de::Error::custom(format!(
            "expected an integer, found {other}"
        ))),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The key just past every key starting with `prefix` (etcd's `range_end` for a prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

impl Gateway {
    /// A client of `endpoints` (`http://HOST:PORT`), each request given up after `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Gateway {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Straight to the members: never through a proxy from the environment, never
            // redirected (either could answer a fencing check for etcd).
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Gateway {
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
            agent,
            preferred: AtomicUsize::new(0),
        }
    }

    /// The endpoints, as configured.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` on each endpoint in turn until one answers.
    fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &Value,
    ) -> Result<T, GatewayError> {
        let body = body.to_string();
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut attempts = Vec::new();
        for step in 0..count {
            let index = (first + step) % count;
            let endpoint = &self.endpoints[index];
            let url = format!("{endpoint}{path}");
            let response = self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.as_bytes());
            let mut response = match response {
                Ok(r) => r,
                Err(e) => {
                    attempts.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let status = response.status().as_u16();
            let text = match response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE)
                .read_to_string()
            {
                Ok(t) => t,
                Err(e) => {
                    attempts.push(format!("{endpoint}: reading the answer: {e}"));
                    continue;
                }
            };
            if status != 200 {
                let error: Option<Status> = serde_json::from_str(&text).ok();
                match error {
                    Some(s) if !RETRY_ELSEWHERE.contains(&s.code) && status < 500 => {
                        return Err(GatewayError::Rejected {
                            endpoint: endpoint.clone(),
                            path,
                            code: s.code,
                            message: s.message,
                        });
                    }
                    Some(s) => attempts.push(format!("{endpoint}: {} (HTTP {status})", s.message)),
                    None => attempts.push(format!("{endpoint}: HTTP {status}")),
                }
                continue;
            }
            self.preferred.store(index, Ordering::Relaxed);
            return serde_json::from_str(&text).map_err(|source| GatewayError::Decode {
                endpoint: endpoint.clone(),
                path,
                source,
            });
        }
        Err(GatewayError::Unreachable { attempts })
    }

    /// Every key starting with `prefix`, and the store's revision they were read at.
    pub fn range_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), GatewayError> {
        let body = json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) });
        let response: RangeResponse = self.call("/v3/kv/range", &body)?;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut kvs = Vec::with_capacity(response.kvs.len());
        for raw in response.kvs {
            // A key or value that is not base64 is a broken gateway; skip it, do not panic.
            let (Ok(key), Ok(value)) = (engine.decode(&raw.key), engine.decode(&raw.value)) else {
                continue;
            };
            kvs.push(KeyValue {
                key: String::from_utf8_lossy(&key).into_owned(),
                value,
                create_revision: raw.create_revision,
                mod_revision: raw.mod_revision,
                lease: raw.lease,
            });
        }
        Ok((kvs, response.header.revision))
    }

    /// Runs `success` if every comparison holds (no failure branch).
    pub fn txn(
        &self,
        compare: &[Compare<'_>],
        success: &[Op<'_>],
    ) -> Result<TxnResult, GatewayError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::CreateRevision(key, rev) => json!({
                    "key": b64(key.as_bytes()), "target": "CREATE", "result": "EQUAL",
                    "create_revision": rev.to_string(),
                }),
                Compare::Lease(key, lease) => json!({
                    "key": b64(key.as_bytes()), "target": "LEASE", "result": "EQUAL",
                    "lease": lease.to_string(),
                }),
                Compare::ModifiedBefore(prefix, rev) => json!({
                    "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)),
                    "target": "MOD", "result": "LESS", "mod_revision": rev.to_string(),
                }),
            })
            .collect();
        let success: Vec<Value> = success
            .iter()
            .map(|op| match op {
                Op::Put(key, value, lease) => json!({ "request_put": {
                    "key": b64(key.as_bytes()), "value": b64(value), "lease": lease.to_string(),
                }}),
                Op::Delete(key) => json!({ "request_delete_range": { "key": b64(key.as_bytes()) }}),
                Op::Read(key) => json!({ "request_range": { "key": b64(key.as_bytes()) }}),
            })
            .collect();
        let response: TxnResponse = self.call(
            "/v3/kv/txn",
            &json!({ "compare": compare, "success": success }),
        )?;
        Ok(TxnResult {
            succeeded: response.succeeded,
            revision: response.header.revision,
        })
    }

    /// Grants a lease of `ttl` seconds; its id.
    pub fn grant(&self, ttl: i64) -> Result<i64, GatewayError> {
        let response: LeaseResponse =
            self.call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        // Lease 0 is "no lease": a key put under it would never expire.
        if response.id <= 0 {
            return Err(GatewayError::Rejected {
                endpoint: self.endpoints.join(","),
                path: "/v3/lease/grant",
                code: 0,
                message: format!("it granted no lease (id {})", response.id),
            });
        }
        Ok(response.id)
    }

    /// Renews a lease; its TTL from now, 0 if it no longer exists.
    pub fn keep_alive(&self, lease: i64) -> Result<i64, GatewayError> {
        // A streaming call: one request message in, one answer out, wrapped in "result".
        let response: KeepAliveResponse =
            self.call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        match (response.result, response.error) {
            (Some(r), _) => Ok(r.ttl),
            (None, Some(e)) => Err(GatewayError::Unreachable {
                attempts: vec![format!("keep-alive of lease {lease:x}: {}", e.message)],
            }),
            (None, None) => Ok(0),
        }
    }

    /// Revokes a lease, deleting every key bound to it.
    #[cfg(test)]
    pub fn revoke(&self, lease: i64) -> Result<(), GatewayError> {
        let _: Value = self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn integers_come_as_strings_or_numbers_and_zero_fields_are_absent() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"7"},"kvs":[{"key":"YQ==","create_revision":5,"lease":"42"}]}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 7);
        assert_eq!(r.kvs[0].create_revision, 5);
        assert_eq!(r.kvs[0].lease, 42);
        assert_eq!(r.kvs[0].mod_revision, 0);
        let t: TxnResponse = serde_json::from_str(r#"{"header":{"revision":"3"}}"#).unwrap();
        assert!(!t.succeeded, "a failed txn leaves `succeeded` out");
    }
}
