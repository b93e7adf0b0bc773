//! Talking to a cluster's Kubernetes API server with an admin identity minted from the cluster
//! CA that slipwayd generated ([`crate::pki`]).
//!
//! - [`mint`]: the admin client certificate (`CN=slipway-admin`, `O=system:masters`) and the
//!   kubeconfig of `slipwayd kubeconfig CLUSTER`, the counterpart of AKS-HCI's
//!   `Get-AksHciCredential`.
//! - [`client`]: a small blocking API client over HTTPS (ureq with rustls), which verifies the
//!   server against the cluster CA and authenticates with the minted certificate: nodes (get,
//!   cordon, uncordon), pods on a node, the Eviction API (policy/v1, or policy/v1beta1 where
//!   the server has no v1), pod deletion. Blocking by design: the swap executor calls it from
//!   tokio's blocking pool.
//! - [`drain`]: kubectl's drain rules as a pure classification, and a drain loop that retries
//!   PodDisruptionBudget refusals (429) with backoff until a deadline and says how it ended, so
//!   the caller applies its own policy (roll back or force).
//! - [`ops`]: what the swap executor asks of a cluster (cordon and drain under the policy of
//!   `[clusters.kube]`, uncordon, the nodes' Ready conditions), as blocking calls, and the
//!   state it keeps between them.
//! - [`tokens`]: bootstrap tokens minted after the PKI's first one expired, their Secrets
//!   created through the API in kubeadm's format, and the record of them.
//!
//! Not kube-rs: it pulls in hyper, tower, k8s-openapi (a very large crate) and their
//! dependencies, which CI's compile budget on 2 cores cannot afford; ureq and rustls are
//! already compiled for `images`.
//!
//! The tests run against [`fake`], a fake API server that speaks the real protocol (TLS with
//! client-certificate authentication, discovery, nodes, pods, Eviction with PDB arithmetic),
//! and check its fidelity with a real kubectl.

pub mod cli;
pub mod client;
pub mod drain;
pub mod mint;
pub mod model;
pub mod ops;
pub mod tokens;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tokens_tests;

use std::path::PathBuf;

/// Errors of the Kubernetes client and of minting identities.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the cluster PKI could not be read.
    #[error(
        "cannot read {path} (the cluster's PKI, made when its first node is seeded; reading the CA key needs root)"
    )]
    ReadPki {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate could not be made or parsed.
    #[error("cannot {what}")]
    Certificate {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The minted certificate does not verify against the CA it was minted from.
    #[error(
        "the certificate minted from {ca} does not verify against it: the CA certificate is not one slipwayd made"
    )]
    VerifyMinted {
        /// The CA certificate.
        ca: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The TLS configuration could not be built from the PKI.
    #[error("cannot build the TLS configuration from {what}")]
    Tls {
        /// What was used.
        what: &'static str,
        /// The cause.
        #[source]
        source: ureq::Error,
    },
    /// The request did not get an answer (connection, TLS handshake, timeout).
    #[error("{method} {url}: no answer from the API server")]
    Request {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The API server answered with an error status.
    #[error("{method} {path}: the API server answered {code} {reason}: {message}")]
    Api {
        /// HTTP method.
        method: &'static str,
        /// The path.
        path: String,
        /// HTTP status code.
        code: u16,
        /// The Status reason (`NotFound`, `TooManyRequests`, ...).
        reason: String,
        /// The Status message.
        message: String,
    },
    /// An answer could not be decoded.
    #[error("{method} {path}: cannot decode the answer as {what}")]
    Decode {
        /// HTTP method.
        method: &'static str,
        /// The path.
        path: String,
        /// What was expected.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A name that cannot be put in a URL path.
    #[error("{what} {name:?} is not a Kubernetes object name")]
    InvalidName {
        /// Node, pod or namespace.
        what: &'static str,
        /// The name.
        name: String,
    },
}
