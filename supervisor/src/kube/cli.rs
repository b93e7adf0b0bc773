//! `slipwayd kubeconfig CLUSTER`: an admin kubeconfig minted from the cluster CA.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::mint;

/// The default validity of a minted kubeconfig, in hours.
pub const DEFAULT_VALID_HOURS: u32 = 24;
/// The longest validity `--valid-for` accepts, in hours (a year): the identity cannot be
/// revoked short of replacing the cluster CA.
pub const MAX_VALID_HOURS: u32 = 24 * 365;

/// Where the kubeconfig goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A file, written 0600 (replaced whole when it exists).
    File(PathBuf),
    /// Standard output (`--out -`), for a pipe.
    Stdout,
}

impl Output {
    /// `--out`: `-` for standard output; by default `CLUSTER.kubeconfig` in the current
    /// directory.
    pub fn parse(out: Option<&Path>, cluster: &str) -> Output {
        match out {
            Some(p) if p == Path::new("-") => Output::Stdout,
            Some(p) => Output::File(p.to_owned()),
            None => Output::File(PathBuf::from(format!("{cluster}.kubeconfig"))),
        }
    }
}

/// Mints an admin kubeconfig of `cluster` (from the host config at `config`) valid for
/// `valid_hours`, and writes it to `out`.
pub fn kubeconfig(
    config: &Path,
    cluster: &str,
    out: Option<&Path>,
    valid_hours: u32,
) -> anyhow::Result<()> {
    if valid_hours == 0 || valid_hours > MAX_VALID_HOURS {
        bail!(
            "--valid-for {valid_hours}: expected 1 to {MAX_VALID_HOURS} hours (the admin identity cannot be revoked: mint a new one when it expires)"
        );
    }
    let config = crate::config::HostConfig::load(config)?;
    let Some(spec) = config.clusters.get(cluster) else {
        let known: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
        bail!(
            "no cluster {cluster:?} in the host config (it has: {})",
            known.join(", ")
        );
    };
    // Where `crate::seed::for_node` keeps it.
    let pki_dir = config.state_dir.join("clusters").join(cluster).join("pki");
    if !pki_dir.join("ca.crt").exists() {
        bail!(
            "cluster {cluster} has no CA yet in {}: `slipwayd run` (or `slipwayd seed`) makes it before the cluster's first node boots",
            pki_dir.display()
        );
    }
    let credentials =
        mint::mint_admin(&pki_dir, Duration::from_secs(u64::from(valid_hours) * 3600))
            .with_context(|| format!("cannot mint an admin identity for cluster {cluster}"))?;
    let yaml = mint::kubeconfig(cluster, &spec.control_plane_endpoint, &credentials);
    let until = mint::utc(credentials.not_after);
    match Output::parse(out, cluster) {
        Output::Stdout => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(yaml.as_bytes())
                .and_then(|()| stdout.flush())
                .context("cannot write the kubeconfig to standard output")?;
            eprintln!(
                "admin kubeconfig of cluster {cluster} ({} in {}), valid until {until}",
                mint::ADMIN_USER,
                mint::ADMIN_GROUP
            );
        }
        Output::File(path) => {
            images::atomic::write(&path, yaml.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "wrote {} (mode 0600): admin of cluster {cluster} at https://{} ({} in {}), valid until {until}",
                path.display(),
                spec.control_plane_endpoint,
                mint::ADMIN_USER,
                mint::ADMIN_GROUP
            );
            println!("  KUBECONFIG={} kubectl get nodes", path.display());
        }
    }
    Ok(())
}
