//! Bootstrap tokens for nodes that join a cluster after its first token expired.
//!
//! The cluster's first token is the PKI's (`STATE/clusters/CLUSTER/pki/bootstrap-token`): the
//! initialiser's InitConfiguration creates it with a 24 h TTL, and every seed written while it
//! lives carries it. A seed written later (a node added, a surge's replacement, a node that
//! never booted) needs a token the API server still honours: slipwayd mints one
//! ([`crate::pki::new_bootstrap_token`]), creates its Secret through the API in kubeadm's own
//! format ([`secret_body`], as `kubeadm token create` makes it), and records it in
//! `STATE/clusters/CLUSTER/tokens` (a [`crate::persist`] record, 0600) with its expiry.
//! [`join_token`] says which token a seed written now carries.
//!
//! The token a VM's seed carries is recorded beside the seed ([`save_seed_token`], 0600), so
//! the documents' digest a running VM must echo is rendered again with the same token.
//!
//! Tokens are secrets: only their public id is ever logged.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::Client;
use crate::pki::Secret;

/// How long a minted token lives (kubeadm's default TTL).
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long after the PKI was made its own token is still given to seeds: an hour short of
/// its TTL, counted from before the init that created it (so on the safe side).
pub const PKI_TOKEN_TRUSTED: Duration = Duration::from_secs(23 * 60 * 60);
/// The least a token must have left to go into a seed: the node boots and joins within it.
pub const MIN_LEFT: Duration = Duration::from_secs(60 * 60);
/// Minted tokens expired for longer than this are dropped from the record (the API server's
/// token cleaner deleted their Secrets long ago).
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The extra group kubeadm gives its node tokens; its RBAC lets that group join.
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// Persist kind and version of a cluster's minted tokens.
const TOKENS_KIND: &str = "bootstrap-tokens";
const TOKENS_VERSION: u32 = 1;
/// Persist kind and version of the token a VM's seed carries.
const SEED_TOKEN_KIND: &str = "seed-token";
const SEED_TOKEN_VERSION: u32 = 1;

/// Errors of the token store and of minting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record could not be read or written.
    #[error(transparent)]
    Record(#[from] crate::persist::Error),
    /// The cluster's PKI could not be read.
    #[error(transparent)]
    Pki(#[from] crate::pki::Error),
    /// A record names another cluster than its directory.
    #[error("{path} holds the tokens of cluster {found}: move it back where it belongs")]
    MatchCluster {
        /// The file.
        path: PathBuf,
        /// The cluster it names.
        found: String,
    },
    /// The API server did not create the token's Secret.
    #[error("cannot create bootstrap token {id}'s Secret in cluster {cluster}")]
    CreateSecret {
        /// The token's public id.
        id: String,
        /// The cluster.
        cluster: String,
        /// The cause.
        #[source]
        source: Box<super::Error>,
    },
}

/// A token slipwayd minted, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintedToken {
    /// The token (validated as `[a-z0-9]{6}.[a-z0-9]{16}` when read).
    pub token: Secret,
    /// When it was minted (Unix seconds).
    pub created: i64,
    /// When the API server stops honouring it (Unix seconds).
    pub expires: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    cluster: String,
    tokens: Vec<MintedToken>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedToken {
    token: Secret,
}

/// Where the tokens minted for `cluster` are recorded: `STATE/clusters/CLUSTER/tokens`.
pub fn tokens_path(state_dir: &Path, cluster: &str) -> PathBuf {
    state_dir.join("clusters").join(cluster).join("tokens")
}

/// The tokens minted for `cluster`, oldest first (none when nothing was minted).
pub fn load(state_dir: &Path, cluster: &str) -> Result<Vec<MintedToken>, Error> {
    let path = tokens_path(state_dir, cluster);
    match crate::persist::read::<Stored>(&path, TOKENS_KIND, TOKENS_VERSION)? {
        None => Ok(Vec::new()),
        Some(stored) if stored.cluster != cluster => Err(Error::MatchCluster {
            path,
            found: stored.cluster,
        }),
        Some(stored) => Ok(stored.tokens),
    }
}

/// Adds `minted` to `cluster`'s record (written atomically, 0600), dropping tokens expired for
/// over a week.
pub fn record(state_dir: &Path, cluster: &str, minted: MintedToken) -> Result<(), Error> {
    let forget = i64::try_from(FORGET_AFTER.as_secs()).unwrap_or(i64::MAX);
    let mut tokens = load(state_dir, cluster)?;
    tokens.retain(|t| t.expires.saturating_add(forget) > minted.created && t.token != minted.token);
    tokens.push(minted);
    let path = tokens_path(state_dir, cluster);
    if let Some(dir) = path.parent() {
        crate::persist::private_dir(dir).map_err(|source| crate::persist::Error::WriteRecord {
            path: path.clone(),
            source,
        })?;
    }
    let stored = Stored {
        cluster: cluster.to_owned(),
        tokens,
    };
    Ok(crate::persist::write(
        &path,
        TOKENS_KIND,
        TOKENS_VERSION,
        &stored,
    )?)
}

/// Unix seconds of `t` (0 before 1970).
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Which token a seed written at `now` carries (pure): the PKI's while it was made
/// (`pki_made`) less than [`PKI_TOKEN_TRUSTED`] ago, else the newest minted token with at
/// least [`MIN_LEFT`] to live, else `None`: a fresh one must be minted first.
pub fn choose(
    pki_token: &Secret,
    pki_made: i64,
    minted: &[MintedToken],
    now: i64,
) -> Option<Secret> {
    if now < pki_made.saturating_add(secs(PKI_TOKEN_TRUSTED)) {
        return Some(pki_token.clone());
    }
    minted
        .iter()
        .filter(|t| t.expires.saturating_sub(now) >= secs(MIN_LEFT) && t.created <= now)
        .max_by_key(|t| t.expires)
        .map(|t| t.token.clone())
}

/// Which token a seed of a node joining `cluster` written at `now` carries (see [`choose`]);
/// `None`: a fresh one must be minted first ([`mint`]). A PKI whose token file's time cannot
/// be read counts as old.
pub fn join_token(
    state_dir: &Path,
    cluster: &str,
    now: SystemTime,
) -> Result<Option<Secret>, Error> {
    let pki_dir = super::ops::pki_dir(state_dir, cluster);
    let pki = crate::pki::ensure(&pki_dir, cluster)?;
    let made = crate::pki::bootstrap_token_made(&pki_dir).map_or(0, unix);
    let minted = load(state_dir, cluster)?;
    Ok(choose(&pki.bootstrap_token, made, &minted, unix(now)))
}

/// Mints a fresh token for `cluster` at `now`: drawn at random, its Secret created through
/// `client` (blocking), then recorded. Returns it.
pub fn mint(
    client: &Client,
    state_dir: &Path,
    cluster: &str,
    now: SystemTime,
) -> Result<Secret, Error> {
    let token = crate::pki::new_bootstrap_token(cluster)?;
    let created = unix(now);
    let expires = created.saturating_add(secs(TOKEN_TTL));
    let description = format!("Slipway: nodes joining cluster {cluster} after its first token");
    client
        .create_bootstrap_token(&token, expires, &description)
        .map_err(|source| Error::CreateSecret {
            id: token.token_id().to_owned(),
            cluster: cluster.to_owned(),
            source: Box::new(source),
        })?;
    record(
        state_dir,
        cluster,
        MintedToken {
            token: token.clone(),
            created,
            expires,
        },
    )?;
    tracing::info!(%cluster, id = token.token_id(), expires, "bootstrap token minted");
    Ok(token)
}

/// Where the token the seed in VM directory `dir` carries is recorded: `DIR/join-token`.
pub fn seed_token_path(dir: &Path) -> PathBuf {
    dir.join("join-token")
}

/// Records that the seed in VM directory `dir` carries `token` (0600).
pub fn save_seed_token(dir: &Path, token: &Secret) -> Result<(), Error> {
    let record = SeedToken {
        token: token.clone(),
    };
    Ok(crate::persist::write(
        &seed_token_path(dir),
        SEED_TOKEN_KIND,
        SEED_TOKEN_VERSION,
        &record,
    )?)
}

/// The token the seed in VM directory `dir` carries, when one was recorded (a seed written
/// before minting existed, or one with the PKI's token, has none).
pub fn seed_token(dir: &Path) -> Result<Option<Secret>, Error> {
    Ok(crate::persist::read::<SeedToken>(
        &seed_token_path(dir),
        SEED_TOKEN_KIND,
        SEED_TOKEN_VERSION,
    )?
    .map(|r| r.token))
}

/// The name of `token`'s Secret: `bootstrap-token-ID`.
pub fn secret_name(token: &Secret) -> String {
    format!("bootstrap-token-{}", token.token_id())
}

/// RFC 3339 in UTC (`2026-11-30T12:00:00Z`), as kubeadm writes a token's expiration.
pub fn rfc3339(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The Secret kubeadm makes for a node bootstrap token (`kubeadm token create`, and `kubeadm
/// init` for its InitConfiguration's tokens): in kube-system, named `bootstrap-token-ID`, of
/// type `bootstrap.kubernetes.io/token`, its data (base64, as the API carries bytes) the id,
/// the secret, the expiration, both usages (signing, for the cluster-info discovery kubeadm
/// join pins to the CA; authentication, for the kubelet's TLS bootstrap), the node group and
/// a description. Holds the secret: never logged.
pub fn secret_body(token: &Secret, expires: i64, description: &str) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(token), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {
            "token-id": b64(token.token_id()),
            "token-secret": b64(token.token_secret()),
            "expiration": b64(&rfc3339(expires)),
            "usage-bootstrap-authentication": b64("true"),
            "usage-bootstrap-signing": b64("true"),
            "auth-extra-groups": b64(NODE_TOKEN_GROUP),
            "description": b64(description),
        },
    })
}

/// Whether `secret` (a Secret as the API returns it) is the bootstrap-token Secret of `token`.
pub fn secret_holds(secret: &Value, token: &Secret) -> bool {
    use base64::Engine;
    let field = |key: &str| {
        secret["data"][key]
            .as_str()
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
    };
    secret["type"] == json!("bootstrap.kubernetes.io/token")
        && field("token-id").as_deref() == Some(token.token_id().as_bytes())
        && field("token-secret").as_deref() == Some(token.token_secret().as_bytes())
}

/// A mint still running after this is taken for lost (one request times out at 30 s; the
/// 409 path makes two).
const MINT_LOST: Duration = Duration::from_secs(90);
/// A failed mint is tried again after this (while seeds wait for it).
pub const MINT_RETRY: Duration = Duration::from_secs(10);

/// The mints under way or failed lately, by cluster, and which clusters were warned about a
/// token past its TTL that cannot be renewed (no `[clusters.kube]`).
#[derive(Debug, Default)]
pub struct Minting {
    clusters: std::sync::Mutex<std::collections::BTreeMap<String, MintState>>,
}

#[derive(Debug, Default)]
struct MintState {
    running: Option<std::time::Instant>,
    tried: Option<std::time::Instant>,
    error: String,
    warned: bool,
}

impl Minting {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, MintState>> {
        self.clusters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a mint for `cluster` may start at `now` (none runs, the last failed one ended
    /// [`MINT_RETRY`] ago or more); if so it counts as running from now, and the caller runs
    /// it and gives its result to [`Minting::store`].
    pub fn claim(&self, cluster: &str, now: std::time::Instant) -> bool {
        let mut clusters = self.lock();
        let state = clusters.entry(cluster.to_owned()).or_default();
        let running = state
            .running
            .is_some_and(|t| now.saturating_duration_since(t) < MINT_LOST);
        let rested = state.error.is_empty()
            || state
                .tried
                .is_none_or(|t| now.saturating_duration_since(t) >= MINT_RETRY);
        if running || !rested {
            return false;
        }
        state.running = Some(now);
        true
    }

    /// A mint for `cluster` ended at `now` (Err: why, on one line).
    pub fn store(&self, cluster: &str, result: Result<(), String>, now: std::time::Instant) {
        let mut clusters = self.lock();
        let state = clusters.entry(cluster.to_owned()).or_default();
        state.running = None;
        state.tried = Some(now);
        match result {
            Ok(()) => state.error.clear(),
            Err(why) => {
                if state.error != why {
                    tracing::warn!(%cluster, "cannot mint a bootstrap token: {why}");
                }
                state.error = why;
            }
        }
    }

    /// Why the last mint for `cluster` failed ("" when it did not, or none ran).
    pub fn error(&self, cluster: &str) -> String {
        self.lock()
            .get(cluster)
            .map_or_else(String::new, |s| s.error.clone())
    }

    /// True the first time it is asked for `cluster` (to warn once).
    pub fn first_warning(&self, cluster: &str) -> bool {
        let mut clusters = self.lock();
        let state = clusters.entry(cluster.to_owned()).or_default();
        !std::mem::replace(&mut state.warned, true)
    }
}
