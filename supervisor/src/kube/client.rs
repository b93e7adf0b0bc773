//! A small blocking client of the Kubernetes API: HTTPS (ureq with rustls and ring), the
//! server verified against the cluster CA only (never the web's roots), the client
//! authenticated by a minted admin certificate. JSON only.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use zeroize::Zeroizing;

use super::Error;
use super::mint::{self, Credentials};
use super::model::{ApiResourceList, Node, NodeList, Pod, PodList, PodRef, Status};

/// The longest one request may take (connect, send, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the identity minted by [`Client::for_cluster`] lives: longer than any drain, and
/// short enough that a leaked copy is of little use.
const CLIENT_VALIDITY: Duration = Duration::from_secs(60 * 60);
/// How many pods one list call asks for (as kubectl's `--chunk-size`).
const LIST_CHUNK: u32 = 500;

/// A client of one cluster's API server.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// The Eviction version this server takes, once known.
    eviction: Mutex<Option<EvictionVersion>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.base)
    }
}

/// Which version of the Eviction kind the server takes (both are POSTed to the same
/// `pods/NAME/eviction` subresource; only the body's apiVersion differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionVersion {
    /// policy/v1 (Kubernetes 1.22 and later).
    V1,
    /// policy/v1beta1 (Kubernetes 1.8 to 1.24; kubectl 1.20 sends only this).
    V1beta1,
}

impl EvictionVersion {
    fn api_version(self) -> &'static str {
        match self {
            EvictionVersion::V1 => "policy/v1",
            EvictionVersion::V1beta1 => "policy/v1beta1",
        }
    }
}

/// Whether a cordon or uncordon changed the node: slipwayd must uncordon only nodes it
/// cordoned itself, so the caller records [`CordonChange::Changed`] in its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CordonChange {
    /// The node's `spec.unschedulable` was changed.
    Changed,
    /// It already had the wanted value (someone else cordoned it, or nobody did).
    Unchanged,
}

/// The answer to one eviction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evicted {
    /// The API server accepted it: the pod is being deleted.
    Accepted,
    /// Refused for now (429): evicting it would violate a PodDisruptionBudget. The message
    /// names the budget; retry later.
    Blocked {
        /// The API server's message and causes.
        message: String,
    },
    /// The pod does not exist (any more).
    Gone,
}

/// The most pods one node's pod list may hold before it counts as endless.
const MAX_LISTED_PODS: usize = 10_000;

impl Client {
    /// A client of the API server at `https://ENDPOINT` (`address:port`) with `credentials`.
    pub fn new(endpoint: &str, credentials: &Credentials) -> Result<Client, Error> {
        let tls_err = |what| move |source| Error::Tls { what, source };
        let ca = Certificate::from_pem(credentials.ca_pem.as_bytes())
            .map_err(tls_err("the cluster CA"))?;
        let cert = Certificate::from_pem(credentials.cert_pem.as_bytes())
            .map_err(tls_err("the client certificate"))?;
        let key = PrivateKey::from_pem(credentials.key_pem().as_bytes())
            .map_err(tls_err("the client key"))?;
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            // Status codes are answers to decode, not transport errors.
            .http_status_as_error(false)
            // The node network is reached directly, never through a proxy from the environment.
            .proxy(None)
            // The API never redirects.
            .max_redirects(0)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("slipwayd/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client {
            agent,
            base: format!("https://{endpoint}"),
            eviction: Mutex::new(None),
        })
    }

    /// A client of a cluster whose PKI is in `pki_dir`, with an admin identity minted for this
    /// client alone (in memory, valid for an hour).
    pub fn for_cluster(pki_dir: &Path, endpoint: &str) -> Result<Client, Error> {
        Client::new(endpoint, &mint::mint_admin(pki_dir, CLIENT_VALIDITY)?)
    }

    /// The node `name`.
    pub fn node(&self, name: &str) -> Result<Node, Error> {
        let path = format!("/api/v1/nodes/{}", segment("node", name)?);
        self.get_json(&path, "a Node")
    }

    /// Every node of the cluster (one list: a cluster has at most a few thousand).
    pub fn nodes(&self) -> Result<Vec<Node>, Error> {
        let list: NodeList = self.get_json("/api/v1/nodes", "a NodeList")?;
        Ok(list.items)
    }

    /// Cordons `name` (`spec.unschedulable: true`, as `kubectl cordon`).
    pub fn cordon(&self, name: &str) -> Result<CordonChange, Error> {
        self.set_unschedulable(name, true)
    }

    /// Uncordons `name` (as `kubectl uncordon`).
    pub fn uncordon(&self, name: &str) -> Result<CordonChange, Error> {
        self.set_unschedulable(name, false)
    }

    fn set_unschedulable(&self, name: &str, unschedulable: bool) -> Result<CordonChange, Error> {
        if self.node(name)?.spec.unschedulable == unschedulable {
            return Ok(CordonChange::Unchanged);
        }
        let path = format!("/api/v1/nodes/{}", segment("node", name)?);
        // A strategic merge patch, as kubectl sends: `false` is the field's default, which the
        // API leaves out, so uncordoning removes the field.
        let patch = if unschedulable {
            r#"{"spec":{"unschedulable":true}}"#
        } else {
            r#"{"spec":{"unschedulable":null}}"#
        };
        let (code, body) = self.send(
            "PATCH",
            &path,
            Some(("application/strategic-merge-patch+json", patch)),
        )?;
        if !is_success(code) {
            return Err(api_error("PATCH", &path, code, &body));
        }
        let node: Node = decode("PATCH", &path, "a Node", &body)?;
        tracing::info!(
            node = name,
            unschedulable = node.spec.unschedulable,
            "node patched"
        );
        Ok(CordonChange::Changed)
    }

    /// The pods bound to `node`, in every namespace (a field selector on `spec.nodeName`,
    /// listed in chunks).
    pub fn pods_on_node(&self, node: &str) -> Result<Vec<Pod>, Error> {
        let selector = format!("spec.nodeName%3D{}", segment("node", node)?);
        let mut pods = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!("/api/v1/pods?fieldSelector={selector}&limit={LIST_CHUNK}");
            if !token.is_empty() {
                path.push_str("&continue=");
                path.push_str(&percent_encode(&token));
            }
            let list: PodList = self.get_json(&path, "a PodList")?;
            pods.extend(list.items);
            let repeated = list.metadata.continue_token == token;
            token = list.metadata.continue_token;
            if token.is_empty() {
                return Ok(pods);
            }
            // A server that never ends the list (the same token again, or more pods than a
            // node can run many times over) is not followed further.
            if repeated || pods.len() > MAX_LISTED_PODS {
                return Err(Error::Api {
                    method: "GET",
                    path,
                    code: 0,
                    reason: "EndlessList".into(),
                    message: format!(
                        "the pod list of node {node} does not end (over {} pods, or its continue token repeats)",
                        pods.len()
                    ),
                });
            }
        }
    }

    /// The pod, or `None` when it does not exist.
    pub fn pod(&self, pod: &PodRef) -> Result<Option<Pod>, Error> {
        let path = pod_path(pod)?;
        let (code, body) = self.send("GET", &path, None)?;
        match code {
            404 => Ok(None),
            c if is_success(c) => decode("GET", &path, "a Pod", &body).map(Some),
            c => Err(api_error("GET", &path, c, &body)),
        }
    }

    /// Asks the API server to evict `pod` through the Eviction API, which honours
    /// PodDisruptionBudgets. policy/v1 where the server's discovery offers it, policy/v1beta1
    /// otherwise, and on a server that answers a v1 eviction with 404 for the kind itself.
    pub fn evict(&self, pod: &PodRef) -> Result<Evicted, Error> {
        let path = format!("{}/eviction", pod_path(pod)?);
        let mut version = self.eviction_version()?;
        loop {
            let body = serde_json::json!({
                "apiVersion": version.api_version(),
                "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
            })
            .to_string();
            let (code, answer) = self.send("POST", &path, Some(("application/json", &body)))?;
            let status = || serde_json::from_slice::<Status>(&answer).unwrap_or_default();
            match code {
                c if is_success(c) => return Ok(Evicted::Accepted),
                429 => {
                    let status = status();
                    let mut message = status.message;
                    for cause in status.details.into_iter().flat_map(|d| d.causes) {
                        message.push_str(": ");
                        message.push_str(&cause.message);
                    }
                    return Ok(Evicted::Blocked { message });
                }
                404 if status().details.is_some_and(|d| d.kind == "pods") => {
                    return Ok(Evicted::Gone);
                }
                404 if version == EvictionVersion::V1 => {
                    tracing::info!(
                        server = %self.base,
                        "the API server has no policy/v1 Eviction: using policy/v1beta1"
                    );
                    version = EvictionVersion::V1beta1;
                    self.remember_eviction(version);
                }
                c => return Err(api_error("POST", &path, c, &answer)),
            }
        }
    }

    /// Deletes `pod` (bypassing PodDisruptionBudgets): with `grace_seconds`, or the pod's own
    /// termination grace period when `None`. `false` when it did not exist.
    pub fn delete_pod(&self, pod: &PodRef, grace_seconds: Option<u32>) -> Result<bool, Error> {
        let mut path = pod_path(pod)?;
        if let Some(grace) = grace_seconds {
            path.push_str(&format!("?gracePeriodSeconds={grace}"));
        }
        let (code, body) = self.send("DELETE", &path, None)?;
        match code {
            404 => Ok(false),
            c if is_success(c) => Ok(true),
            c => Err(api_error("DELETE", &path, c, &body)),
        }
    }

    /// Creates the bootstrap-token Secret of `token` in kube-system, in kubeadm's format (see
    /// [`super::tokens::secret_body`]), expiring at `expires` (Unix seconds). A Secret of that
    /// name that already holds the same token counts as created (a retry after an answer was
    /// lost); one holding another token is [`Error::Api`] 409.
    pub fn create_bootstrap_token(
        &self,
        token: &crate::pki::Secret,
        expires: i64,
        description: &str,
    ) -> Result<(), Error> {
        let path = "/api/v1/namespaces/kube-system/secrets";
        let name = super::tokens::secret_name(token);
        segment("secret", &name)?;
        let body =
            Zeroizing::new(super::tokens::secret_body(token, expires, description).to_string());
        let (code, answer) = self.send("POST", path, Some(("application/json", &body)))?;
        match code {
            c if is_success(c) => Ok(()),
            409 => {
                let existing = format!("{path}/{name}");
                let (got, found) = self.send("GET", &existing, None)?;
                if !is_success(got) {
                    return Err(api_error("GET", &existing, got, &found));
                }
                let found: serde_json::Value = decode("GET", &existing, "a Secret", &found)?;
                if super::tokens::secret_holds(&found, token) {
                    Ok(())
                } else {
                    Err(Error::Api {
                        method: "POST",
                        path: path.to_owned(),
                        code,
                        reason: "AlreadyExists".into(),
                        message: format!(
                            "secret {name} exists with another token (a token id drawn twice): draw another token"
                        ),
                    })
                }
            }
            c => Err(api_error("POST", path, c, &answer)),
        }
    }

    /// The Eviction version, from discovery (`pods/eviction` in `/api/v1` names its group and
    /// version since Kubernetes 1.8), asked once per client.
    fn eviction_version(&self) -> Result<EvictionVersion, Error> {
        if let Some(known) = *self.eviction.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(known);
        }
        let list: ApiResourceList = self.get_json("/api/v1", "an APIResourceList")?;
        let version = match list.resources.iter().find(|r| r.name == "pods/eviction") {
            Some(r) if r.group == "policy" && r.version == "v1" => EvictionVersion::V1,
            Some(_) => EvictionVersion::V1beta1,
            None => {
                return Err(Error::Api {
                    method: "GET",
                    path: "/api/v1".into(),
                    code: 200,
                    reason: "NoEviction".into(),
                    message: "the API server lists no pods/eviction subresource: it cannot evict"
                        .into(),
                });
            }
        };
        self.remember_eviction(version);
        Ok(version)
    }

    fn remember_eviction(&self, version: EvictionVersion) {
        *self.eviction.lock().unwrap_or_else(|p| p.into_inner()) = Some(version);
    }

    fn get_json<T: DeserializeOwned>(&self, path: &str, what: &'static str) -> Result<T, Error> {
        let (code, body) = self.send("GET", path, None)?;
        if !is_success(code) {
            return Err(api_error("GET", path, code, &body));
        }
        decode("GET", path, what, &body)
    }

    /// One request: the status code and the body.
    fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> Result<(u16, Vec<u8>), Error> {
        let url = format!("{}{path}", self.base);
        let request_err = |source| Error::Request {
            method,
            url: url.clone(),
            source: Box::new(source),
        };
        let accept = ("Accept", "application/json");
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header(accept.0, accept.1).call(),
            ("DELETE", _) => self.agent.delete(&url).header(accept.0, accept.1).call(),
            ("PATCH", Some((content_type, body))) => self
                .agent
                .patch(&url)
                .header(accept.0, accept.1)
                .content_type(content_type)
                .send(body),
            (_, Some((content_type, body))) => self
                .agent
                .post(&url)
                .header(accept.0, accept.1)
                .content_type(content_type)
                .send(body),
            (_, None) => self.agent.post(&url).send_empty(),
        }
        .map_err(request_err)?;
        let code = response.status().as_u16();
        let body = response.into_body().read_to_vec().map_err(request_err)?;
        tracing::debug!(method, path, code, "kube request");
        Ok((code, body))
    }
}

fn is_success(code: u16) -> bool {
    (200..300).contains(&code)
}

fn decode<T: DeserializeOwned>(
    method: &'static str,
    path: &str,
    what: &'static str,
    body: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        method,
        path: path.to_owned(),
        what,
        source,
    })
}

/// The error for a non-2xx answer, from its Status body (or the bare code when there is none).
fn api_error(method: &'static str, path: &str, code: u16, body: &[u8]) -> Error {
    let status: Status = serde_json::from_slice(body).unwrap_or_default();
    // The server's words, cut short and without control characters (they reach the logs).
    let text = if status.message.is_empty() {
        String::from_utf8_lossy(body).into_owned()
    } else {
        status.message
    };
    let message = text.chars().filter(|c| !c.is_control()).take(200).collect();
    Error::Api {
        method,
        path: path.to_owned(),
        code,
        reason: status.reason,
        message,
    }
}

fn pod_path(pod: &PodRef) -> Result<String, Error> {
    Ok(format!(
        "/api/v1/namespaces/{}/pods/{}",
        segment("namespace", &pod.namespace)?,
        segment("pod", &pod.name)?
    ))
}

/// `name` when it is a Kubernetes object name (a DNS subdomain: lower-case letters, digits,
/// '-' and '.', at most 253), which needs no escaping in a URL path.
fn segment<'a>(what: &'static str, name: &'a str) -> Result<&'a str, Error> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name != "."
        && name != "..";
    if valid {
        Ok(name)
    } else {
        Err(Error::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_object_names_never_reach_a_path() {
        assert!(segment("pod", "web-7d9f.x").is_ok());
        for bad in ["", "..", "a/b", "A", "a?b", "a%2fb", &"x".repeat(254)] {
            assert!(matches!(
                segment("pod", bad),
                Err(Error::InvalidName { .. })
            ));
        }
        assert_eq!(percent_encode("a b/c=d~"), "a%20b%2Fc%3Dd~");
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    #[test]
    fn a_servers_error_text_reaches_the_logs_short_and_without_control_characters() {
        let body = format!(
            "{{\"kind\":\"Status\",\"message\":\"\\u001b[2Jboom{}\"}}",
            "x".repeat(5000)
        );
        let Error::Api { message, .. } = api_error("GET", "/api/v1/pods", 500, body.as_bytes())
        else {
            panic!("not an API error");
        };
        assert!(message.starts_with("[2Jboom"), "{message}");
        assert_eq!(message.chars().count(), 200);
    }
}
