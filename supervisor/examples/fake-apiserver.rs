//! `fake-apiserver`: the FAKE Kubernetes API server of slipwayd's unit tests
//! (`src/kube/fake`), as a process for the end-to-end tests, which cannot reach `cfg(test)`
//! code. An example, so that it is built by `cargo test` (and clippy's `--all-targets`) but
//! never installed or shipped with slipwayd.
//!
//! ```text
//! fake-apiserver --ca-cert STATE/clusters/lab/pki/ca.crt --ca-key STATE/clusters/lab/pki/ca.key \
//!     --world world.json --log requests.jsonl [--listen 127.0.0.1:0]
//! ```
//!
//! It serves the world the JSON file describes (nodes, pods, PodDisruptionBudgets: see
//! `Spec`) over HTTPS with a certificate from the cluster CA, checks client certificates
//! against it, prints `https://ADDRESS:PORT` on a line of its own once it listens, logs every
//! request that changes something (cordons, uncordons, evictions, deletions) to the log file,
//! one JSON object a line, and runs until it is killed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[allow(
    dead_code,
    unused_imports,
    reason = "the unit tests use the rest of the fake (building worlds in code, reading them back)"
)]
#[path = "../src/kube/fake/mod.rs"]
mod fake;

/// Serve a FAKE Kubernetes API server (for tests only).
#[derive(Debug, Parser)]
#[command(name = "fake-apiserver")]
struct Args {
    /// The cluster CA's certificate (PEM): the serving certificate's issuer, and what client
    /// certificates are checked against.
    #[arg(long, value_name = "PATH")]
    ca_cert: PathBuf,
    /// The cluster CA's key (PEM).
    #[arg(long, value_name = "PATH")]
    ca_key: PathBuf,
    /// Where to listen (port 0: a free one; the URL printed says which).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The world to serve (JSON: nodes, pods, pdbs, terminationSeconds, policyV1).
    #[arg(long, value_name = "PATH")]
    world: PathBuf,
    /// Where to log every request that changes something (appended, JSON lines).
    #[arg(long, value_name = "PATH")]
    log: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.world)
        .with_context(|| format!("cannot read {}", args.world.display()))?;
    let spec: fake::Spec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a world", args.world.display()))?;
    let mut world = fake::World::from_spec(&spec);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("cannot open {}", args.log.display()))?;
    world.log_to(log);
    let server = fake::FakeApiServer::start_on(&args.ca_cert, &args.ca_key, args.listen, world)
        .context("cannot start the fake API server")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "https://{}", server.endpoint())?;
    stdout.flush()?;
    drop(stdout);
    loop {
        std::thread::park();
    }
}
