//! Which bootstrap token a joining node's seed carries, and minting a fresh one when the
//! cluster's have expired (see [`crate::kube::tokens`]).
//!
//! A seed written while the cluster's PKI token lives carries it, as before. Later, a cluster
//! with `[clusters.kube]` gets a fresh token: minted on the blocking pool (its Secret created
//! through the API), waited for a few seconds, and otherwise left running while the VM waits:
//!
//! - a VM that never had a seed (a new node, a surge's replacement) waits for it, its status
//!   saying why, and its start is tried again at the next pass: it never boots with a token
//!   the API server no longer honours;
//! - a VM that was seeded before (a restart, an in-place swap) joined already, most likely,
//!   and its state disk keeps its kubelet's credentials: it does not wait (its cluster's API
//!   may be served by VMs that wait for it, as after a host's reboot), and keeps the token its
//!   seed had.
//!
//! A cluster without `[clusters.kube]` keeps the PKI's token, with one warning.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::Daemon;
use crate::config::{self, HostConfig};
use crate::driver::Driver;
use crate::kube::ops::chain;
use crate::kube::tokens;
use crate::model::NodeState;
use crate::pki::Secret;
use crate::seed;

/// How long writing a seed waits for a mint it started before the VM is told to wait.
const MINT_WAIT: Duration = Duration::from_secs(5);

/// A VM's seed cannot be written yet: its cluster's tokens expired and no fresh one could be
/// minted so far. The VM waits; its start is tried again.
#[derive(Debug, thiserror::Error)]
#[error(
    "waiting for a fresh bootstrap token of cluster {cluster} (its first one is past its 24 h): {why}"
)]
pub(super) struct WaitForToken {
    cluster: String,
    why: String,
}

impl<D: Driver> Daemon<D> {
    /// The bootstrap token the seed of the VM tracked as `key`, of a node of `cluster`, carries
    /// when written now: `None` for the PKI's (the initialiser's seed always; a cluster without
    /// `[clusters.kube]`). Err([`WaitForToken`]) when it must wait for a fresh one.
    pub(super) async fn join_token(
        &self,
        key: &str,
        cluster: &str,
        init: bool,
    ) -> anyhow::Result<Option<Secret>> {
        if init {
            return Ok(None);
        }
        let state_dir = self.config.state_dir.clone();
        let chosen = chosen_token(&state_dir, cluster).await?;
        if chosen.is_some() {
            return Ok(chosen);
        }
        let minting = self.kube.tokens.clone();
        let Some(kube) = self
            .config
            .clusters
            .get(cluster)
            .and_then(|c| c.kube.clone())
        else {
            if minting.first_warning(cluster) {
                tracing::warn!(
                    %cluster,
                    "the cluster's bootstrap token is past its 24 h and cluster {cluster} has no [clusters.kube] for slipwayd to make another: nodes joining it now fail to join (add [clusters.kube], or make a token with `kubeadm token create`)"
                );
            }
            return Ok(None);
        };
        if minting.claim(cluster, Instant::now()) {
            let clients = self.kube.clients.clone();
            let (state_dir, cluster) = (state_dir.clone(), cluster.to_owned());
            let minted = tokio::task::spawn_blocking(move || {
                let pki_dir = crate::kube::ops::pki_dir(&state_dir, &cluster);
                let result = clients
                    .get(&cluster, &pki_dir, &kube.endpoint)
                    .map_err(|e| chain(&e))
                    .and_then(|client| {
                        tokens::mint(&client, &state_dir, &cluster, SystemTime::now())
                            .map(|_| ())
                            .map_err(|e| chain(&e))
                    });
                minting.store(&cluster, result, Instant::now());
            });
            // Not waited for longer: the loop goes on, the mint ends in the background.
            let _ = tokio::time::timeout(MINT_WAIT, minted).await;
        }
        let chosen = chosen_token(&state_dir, cluster).await?;
        if chosen.is_some() {
            return Ok(chosen);
        }
        let dir = self.node_dir(key);
        if seed::image_path(&dir).exists() {
            let previous = tokens::seed_token(&dir)?;
            tracing::warn!(node = %key, %cluster, "no fresh bootstrap token yet: its VM was seeded before and keeps its seed's token");
            return Ok(previous);
        }
        let why = match self.kube.tokens.error(cluster) {
            e if e.is_empty() => "the API server has not answered yet".to_owned(),
            e => e,
        };
        Err(WaitForToken {
            cluster: cluster.to_owned(),
            why,
        }
        .into())
    }

    /// Whether `error` (from starting the VM of node `name`) is a [`WaitForToken`]: then the
    /// node is shown waiting, with the reason, and its start is tried at the next pass
    /// (no crash backoff: nothing failed).
    pub(super) fn waits_for_token(&mut self, name: &str, error: &anyhow::Error) -> bool {
        let Some(wait) = error.downcast_ref::<WaitForToken>() else {
            return false;
        };
        let reason = format!("not booted: {wait}");
        if let Some((_, _, tracked)) = self.tracked(name) {
            tracked.set(NodeState::Waiting, reason);
        }
        true
    }
}

/// The seed of `node` (initialising its cluster when `init`) carrying `token` (`None`: the
/// PKI's), with its cluster's PKI (made on first use).
pub(super) fn render(
    config: &HostConfig,
    node: &config::Node,
    init: bool,
    token: Option<&Secret>,
    kubernetes: Option<&str>,
) -> anyhow::Result<seed::Seed> {
    let Some(token) = token else {
        return seed::for_node_on(config, node, init, kubernetes);
    };
    let pki_dir = crate::kube::ops::pki_dir(&config.state_dir, &node.cluster);
    let pki = crate::pki::ensure(&pki_dir, &node.cluster)?.with_join_token(token.clone());
    Ok(seed::render(config, node, &pki, init, kubernetes)?)
}

/// The token a seed written now should carry, read off the loop.
async fn chosen_token(state_dir: &Path, cluster: &str) -> anyhow::Result<Option<Secret>> {
    let (state_dir, cluster) = (state_dir.to_owned(), cluster.to_owned());
    Ok(tokio::task::spawn_blocking(move || {
        tokens::join_token(&state_dir, &cluster, SystemTime::now())
    })
    .await??)
}

/// The record, beside a seed, of the sha256 of the kubeadm documents it carries.
const SEED_DIGEST: &str = "seed-digest";
/// Its kind and version.
const SEED_DIGEST_KIND: &str = "seed-digest";
const SEED_DIGEST_VERSION: u32 = 1;

/// The digest record's payload.
#[derive(serde::Serialize, serde::Deserialize)]
struct SeedDigest {
    kubeadm_sha256: String,
}

/// Records beside the seed at `seed_path` the token it carries (`None`: the PKI's, recorded
/// by the absence of the record) and the digest of its kubeadm documents: what the node's
/// beacon must echo for as long as it runs on that seed, whatever a later slipwayd (another
/// version, another host.toml) would render now.
pub(super) fn written(
    seed_path: &Path,
    token: Option<&Secret>,
    kubeadm_sha256: &str,
) -> anyhow::Result<()> {
    let dir = seed_path.parent().unwrap_or(Path::new("."));
    let digest = SeedDigest {
        kubeadm_sha256: kubeadm_sha256.to_owned(),
    };
    crate::persist::write(
        &dir.join(SEED_DIGEST),
        SEED_DIGEST_KIND,
        SEED_DIGEST_VERSION,
        &digest,
    )?;
    match token {
        Some(token) => tokens::save_seed_token(dir, token)?,
        None => match std::fs::remove_file(tokens::seed_token_path(dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)?,
            _ => {}
        },
    }
    Ok(())
}

/// The seed of `node` as it was written in VM directory `dir` (with the token recorded there),
/// for the documents' digest its beacon must echo.
pub(super) fn as_written(
    config: &HostConfig,
    node: &config::Node,
    init: bool,
    dir: &Path,
    kubernetes: Option<&str>,
) -> anyhow::Result<seed::Seed> {
    let token = if init { None } else { tokens::seed_token(dir)? };
    render(config, node, init, token.as_ref(), kubernetes)
}

/// The digest of the kubeadm documents of the seed in VM directory `dir` as recorded when it
/// was written. A seed written before the record existed (by an older slipwayd) is read
/// itself (`kubeadm.yaml` on its FAT, with mtools' `mcopy`) and the record made; None when
/// there is no seed to read.
pub(super) fn recorded_digest(dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dir.join(SEED_DIGEST);
    if let Some(d) =
        crate::persist::read::<SeedDigest>(&path, SEED_DIGEST_KIND, SEED_DIGEST_VERSION)?
    {
        return Ok(Some(d.kubeadm_sha256));
    }
    let image = seed::image_path(dir);
    if !image.exists() {
        return Ok(None);
    }
    let out = std::process::Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(&image)
        .args(["::/kubeadm.yaml", "-"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cannot read kubeadm.yaml from {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let documents = zeroize::Zeroizing::new(out.stdout);
    let kubeadm_sha256: String = <sha2::Sha256 as sha2::Digest>::digest(documents.as_slice())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = SeedDigest { kubeadm_sha256 };
    crate::persist::write(&path, SEED_DIGEST_KIND, SEED_DIGEST_VERSION, &digest)?;
    Ok(Some(digest.kubeadm_sha256))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::kube::fake::{FakeApiServer, World};

    use crate::driver::testing::NoVms;

    /// A supervisor of cluster lab (cp-1, worker-1) whose PKI was made two days ago, with
    /// `[clusters.kube]` pointing at `api` when given.
    fn setup(dir: &Path, api: Option<&str>) -> Daemon<NoVms> {
        let state = dir.join("state");
        let pki_dir = crate::kube::ops::pki_dir(&state, "lab");
        crate::pki::ensure(&pki_dir, "lab").unwrap();
        let two_days = SystemTime::now() - Duration::from_secs(48 * 3600);
        std::fs::File::options()
            .write(true)
            .open(pki_dir.join("bootstrap-token"))
            .unwrap()
            .set_modified(two_days)
            .unwrap();
        let kube = api.map_or_else(String::new, |a| {
            format!("[clusters.kube]\napi = \"https://{a}\"\n")
        });
        let text = format!(
            "format = 1\n[host]\nname = \"hci-01\"\nstate-dir = \"{}\"\n\
             [source]\nreference = \"oci:/srv/nodes\"\nchannel = \"stable\"\nkeys = [\"/k.pub\"]\n\
             [hypervisor]\nkind = \"qemu\"\n\
             [[clusters]]\nname = \"lab\"\nkubernetes = \"1.32.10\"\n\
             control-plane-endpoint = \"10.44.0.10:6443\"\npod-cidr = \"10.244.0.0/16\"\n\
             service-cidr = \"10.96.0.0/12\"\n\
             network = {{ cidr = \"10.44.0.0/24\", gateway = \"10.44.0.1\", pool = \"10.44.0.10-10.44.0.20\" }}\n\
             {kube}\n\
             [[nodes]]\nname = \"cp-1\"\ncluster = \"lab\"\nrole = \"control-plane\"\nmemory = \"1G\"\nstate-disk = \"1G\"\n\
             [[nodes]]\nname = \"worker-1\"\ncluster = \"lab\"\nrole = \"worker\"\nmemory = \"1G\"\nstate-disk = \"1G\"\n",
            state.display(),
        );
        let path = dir.join("host.toml");
        std::fs::write(&path, &text).unwrap();
        let config = HostConfig::parse(&path, &text).unwrap();
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        Daemon::new(&path, config, NoVms::default(), events).unwrap()
    }

    fn pki_token(daemon: &Daemon<NoVms>) -> Secret {
        let pki_dir = crate::kube::ops::pki_dir(&daemon.config.state_dir, "lab");
        crate::pki::ensure(&pki_dir, "lab").unwrap().bootstrap_token
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_joining_node_of_an_old_cluster_gets_a_minted_token_and_its_seed_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let pki_dir = crate::kube::ops::pki_dir(&state, "lab");
        crate::pki::ensure(&pki_dir, "lab").unwrap();
        let server = FakeApiServer::start(&pki_dir, World::default()).unwrap();
        let daemon = setup(dir.path(), Some(&server.endpoint()));
        let pki = pki_token(&daemon);

        // The initialiser keeps the PKI's token (its InitConfiguration creates it).
        assert_eq!(daemon.join_token("cp-1", "lab", true).await.unwrap(), None);
        let token = daemon
            .join_token("worker-1", "lab", false)
            .await
            .unwrap()
            .expect("a minted token");
        assert_ne!(token, pki);
        let name = format!("bootstrap-token-{}", token.token_id());
        assert!(server.world().secret("kube-system", &name).is_some());
        // Asked again: the same token, no second Secret.
        assert_eq!(
            daemon.join_token("worker-1", "lab", false).await.unwrap(),
            Some(token.clone())
        );
        assert_eq!(tokens::load(&state, "lab").unwrap().len(), 1);

        // The seed carries it, never the PKI's; the digest a running VM must echo is the
        // same when rendered again from what was recorded beside the seed.
        let node = &daemon.config.nodes["worker-1"];
        let seed = render(&daemon.config, node, false, Some(&token), None).unwrap();
        assert!(seed.kubeadm_yaml.contains(token.expose()));
        assert!(!seed.kubeadm_yaml.contains(pki.expose()));
        let vm = dir.path().join("vm");
        std::fs::create_dir_all(&vm).unwrap();
        let seed_path = seed::image_path(&vm);
        written(&seed_path, Some(&token), &seed.kubeadm_sha256).unwrap();
        let again = as_written(&daemon.config, node, false, &vm, None).unwrap();
        assert_eq!(again.kubeadm_sha256, seed.kubeadm_sha256);
        // The digest recorded with the seed is what a running VM must echo, whatever this
        // slipwayd would render now (another version, another host.toml).
        assert_eq!(
            recorded_digest(&vm).unwrap().as_deref(),
            Some(seed.kubeadm_sha256.as_str())
        );
        // Written again with the PKI's token: the record goes, and so does the token.
        written(&seed_path, None, "0f").unwrap();
        assert_eq!(recorded_digest(&vm).unwrap().as_deref(), Some("0f"));
        // A seed an older slipwayd wrote (no record): read from the seed image itself.
        seed::write_image(&seed, &seed_path).unwrap();
        std::fs::remove_file(vm.join(SEED_DIGEST)).unwrap();
        assert_eq!(
            recorded_digest(&vm).unwrap().as_deref(),
            Some(seed.kubeadm_sha256.as_str())
        );
        assert!(
            vm.join(SEED_DIGEST).exists(),
            "and recorded for the next pass"
        );
        let plain = as_written(&daemon.config, node, false, &vm, None).unwrap();
        assert!(plain.kubeadm_yaml.contains(pki.expose()));
        assert_ne!(plain.kubeadm_sha256, seed.kubeadm_sha256);
        // The initialiser's seed is rendered with the PKI's token whatever is recorded.
        written(&seed_path, Some(&token), &seed.kubeadm_sha256).unwrap();
        let init = as_written(
            &daemon.config,
            &daemon.config.nodes["cp-1"],
            true,
            &vm,
            None,
        )
        .unwrap();
        assert!(init.kubeadm_yaml.contains(pki.expose()));
        assert!(!init.kubeadm_yaml.contains(token.expose()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_an_api_server_a_new_vm_waits_and_a_seeded_one_keeps_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut daemon = setup(dir.path(), Some(&format!("127.0.0.1:{port}")));
        let err = daemon
            .join_token("worker-1", "lab", false)
            .await
            .unwrap_err();
        let wait = err.downcast_ref::<WaitForToken>().expect("a wait");
        assert!(
            wait.to_string().contains("cluster lab") && wait.why.contains("127.0.0.1"),
            "{wait}"
        );
        // The node is shown waiting with that reason (not failed: nothing crashed).
        let plan = crate::records::plan(
            &daemon.config,
            &daemon.records,
            &daemon.initialisers,
            &daemon.journal.reserved(),
        )
        .unwrap();
        for record in plan.records {
            daemon.records.insert(record.name.to_string(), record);
        }
        assert!(daemon.waits_for_token("worker-1", &err));
        let tracked = &daemon.nodes["worker-1"];
        assert_eq!(tracked.state, NodeState::Waiting);
        assert!(
            tracked.reason.contains("fresh bootstrap token"),
            "{}",
            tracked.reason
        );
        assert!(!daemon.waits_for_token("worker-1", &anyhow::anyhow!("qemu failed")));

        // A VM seeded before does not wait: it keeps the token its seed had.
        let vm = daemon.node_dir("worker-1");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(seed::image_path(&vm), b"seed").unwrap();
        assert_eq!(
            daemon.join_token("worker-1", "lab", false).await.unwrap(),
            None
        );
        let kept = crate::pki::new_bootstrap_token("lab").unwrap();
        tokens::save_seed_token(&vm, &kept).unwrap();
        assert_eq!(
            daemon.join_token("worker-1", "lab", false).await.unwrap(),
            Some(kept)
        );
        assert!(
            tokens::load(&daemon.config.state_dir, "lab")
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_without_kube_keeps_the_pki_token() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = setup(dir.path(), None);
        assert_eq!(
            daemon.join_token("worker-1", "lab", false).await.unwrap(),
            None
        );
        assert!(
            !daemon.kube.tokens.first_warning("lab"),
            "warned once already"
        );
        assert_eq!(
            daemon.join_token("worker-1", "lab", false).await.unwrap(),
            None
        );
    }
}
