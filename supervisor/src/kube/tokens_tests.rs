//! Bootstrap tokens: which one a seed carries, the record of minted ones, and their Secret as
//! the FAKE API server stores it and a real kubectl reads it back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine;

use super::client::Client;
use super::fake::{FakeApiServer, World};
use super::tokens::{self, MintedToken, choose, join_token};
use crate::pki::Secret;

const HOUR: i64 = 3600;

fn token(text: &str) -> Secret {
    Secret::bootstrap_token(text.to_owned()).unwrap()
}

fn minted(text: &str, created: i64) -> MintedToken {
    MintedToken {
        token: token(text),
        created,
        expires: created + 24 * HOUR,
    }
}

#[test]
fn a_seed_carries_the_pki_token_while_young_then_the_newest_minted_one_with_an_hour_left() {
    let pki = token("abcdef.0123456789abcdef");
    let made = 1_000_000;
    let older = minted("aaaaaa.aaaaaaaaaaaaaaaa", made + 20 * HOUR);
    let newer = minted("bbbbbb.bbbbbbbbbbbbbbbb", made + 30 * HOUR);
    let both = [newer.clone(), older.clone()];
    // Young cluster: the PKI's token, whatever was minted.
    assert_eq!(
        choose(&pki, made, &both, made + 22 * HOUR),
        Some(pki.clone())
    );
    // An hour short of its TTL it is no longer given out.
    assert_eq!(choose(&pki, made, &[], made + 23 * HOUR), None);
    // Old cluster: the newest minted token with an hour left.
    assert_eq!(
        choose(&pki, made, &both, made + 31 * HOUR),
        Some(newer.token.clone())
    );
    // Only the older one minted, with more than an hour left.
    assert_eq!(
        choose(&pki, made, std::slice::from_ref(&older), made + 42 * HOUR),
        Some(older.token.clone())
    );
    // Under an hour left: a fresh one must be minted.
    assert_eq!(
        choose(
            &pki,
            made,
            std::slice::from_ref(&older),
            made + 43 * HOUR + 1
        ),
        None
    );
    // All expired.
    assert_eq!(choose(&pki, made, &both, made + 60 * HOUR), None);
    // No PKI time known (0): old.
    assert_eq!(choose(&pki, 0, &[], made), None);
}

#[test]
fn minted_tokens_are_recorded_privately_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    assert!(tokens::load(state, "lab").unwrap().is_empty());
    let first = minted("aaaaaa.aaaaaaaaaaaaaaaa", 1_000_000);
    let second = minted("bbbbbb.bbbbbbbbbbbbbbbb", 1_000_000 + 23 * HOUR);
    tokens::record(state, "lab", first.clone()).unwrap();
    tokens::record(state, "lab", second.clone()).unwrap();
    let path = tokens::tokens_path(state, "lab");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        tokens::load(state, "lab").unwrap(),
        [first.clone(), second.clone()]
    );
    // A record is a persist record of its own kind, naming its cluster.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("slipway-record bootstrap-tokens 1 "),
        "{text}"
    );
    std::fs::create_dir_all(state.join("clusters/dev")).unwrap();
    std::fs::copy(&path, tokens::tokens_path(state, "dev")).unwrap();
    assert!(matches!(
        tokens::load(state, "dev"),
        Err(tokens::Error::MatchCluster { .. })
    ));
    // Tokens expired for over a week are forgotten when the next is recorded.
    let late = minted("cccccc.cccccccccccccccc", 1_000_000 + 24 * 10 * HOUR);
    tokens::record(state, "lab", late.clone()).unwrap();
    assert_eq!(tokens::load(state, "lab").unwrap(), [late]);
    // Debug output never shows a token.
    assert!(!format!("{first:?}").contains("aaaaaaaaaaaaaaaa"));
    // The seed's own token, beside it.
    let vm = dir.path().join("nodes/w1");
    std::fs::create_dir_all(&vm).unwrap();
    assert_eq!(tokens::seed_token(&vm).unwrap(), None);
    tokens::save_seed_token(&vm, &second.token).unwrap();
    assert_eq!(tokens::seed_token(&vm).unwrap(), Some(second.token));
    assert_eq!(
        std::fs::metadata(tokens::seed_token_path(&vm))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn a_record_with_a_malformed_token_is_refused() {
    assert!(Secret::bootstrap_token("ABCDEF.0123456789abcdef".into()).is_none());
    assert!(Secret::bootstrap_token("abcdef0123456789abcdef".into()).is_none());
    assert!(Secret::bootstrap_token("abcdef.0123456789abcde".into()).is_none());
    let json = r#"{"token":"abcdef-0123456789abcdef","created":1,"expires":2}"#;
    assert!(serde_json::from_str::<MintedToken>(json).is_err());
}

#[test]
fn fresh_tokens_have_kubeadms_form_and_differ() {
    let a = crate::pki::new_bootstrap_token("lab").unwrap();
    let b = crate::pki::new_bootstrap_token("lab").unwrap();
    assert!(
        Secret::bootstrap_token(a.expose().to_owned()).is_some(),
        "{}",
        a.expose()
    );
    assert_ne!(a, b);
    assert_eq!(a.token_id().len(), 6);
    assert_eq!(a.token_secret().len(), 16);
}

fn kubectl(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let kubectl = std::env::var_os("SLIPWAY_KUBECTL").unwrap_or_else(|| "kubectl".into());
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .expect("kubectl runs (Debian's kubernetes-client)")
}

#[test]
fn an_old_cluster_mints_a_token_whose_secret_is_kubeadms_and_kubectl_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pki_dir = super::ops::pki_dir(&state, "lab");
    let pki = crate::pki::ensure(&pki_dir, "lab").unwrap();
    let server = FakeApiServer::start(&pki_dir, World::default()).unwrap();
    let client = Client::for_cluster(&pki_dir, &server.endpoint()).unwrap();

    // Young: the PKI's token.
    let now = SystemTime::now();
    assert_eq!(
        join_token(&state, "lab", now).unwrap(),
        Some(pki.bootstrap_token.clone())
    );
    // A day later: none fit; a mint makes one, which the next seed carries.
    let later = now + Duration::from_secs(24 * 3600);
    assert_eq!(join_token(&state, "lab", later).unwrap(), None);
    let fresh = tokens::mint(&client, &state, "lab", later).unwrap();
    assert_ne!(fresh, pki.bootstrap_token);
    assert_eq!(
        join_token(&state, "lab", later).unwrap(),
        Some(fresh.clone())
    );
    assert_eq!(
        join_token(&state, "lab", later + Duration::from_secs(22 * 3600)).unwrap(),
        Some(fresh.clone())
    );
    assert_eq!(
        join_token(&state, "lab", later + Duration::from_secs(23 * 3600 + 1)).unwrap(),
        None
    );

    // The Secret, field by field, as kubeadm makes it.
    let name = format!("bootstrap-token-{}", fresh.token_id());
    let secret = server.world().secret("kube-system", &name).unwrap();
    assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");
    assert_eq!(secret["metadata"]["namespace"], "kube-system");
    let data = secret["data"].as_object().unwrap();
    let decoded = |key: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data[key].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let expires = tokens::unix(later) + 24 * HOUR;
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "auth-extra-groups",
            "description",
            "expiration",
            "token-id",
            "token-secret",
            "usage-bootstrap-authentication",
            "usage-bootstrap-signing"
        ]
    );
    assert_eq!(decoded("token-id"), fresh.token_id());
    assert_eq!(decoded("token-secret"), fresh.token_secret());
    assert_eq!(decoded("expiration"), tokens::rfc3339(expires));
    assert!(
        decoded("expiration").ends_with('Z') && decoded("expiration").len() == 20,
        "{}",
        decoded("expiration")
    );
    assert_eq!(decoded("usage-bootstrap-authentication"), "true");
    assert_eq!(decoded("usage-bootstrap-signing"), "true");
    assert_eq!(
        decoded("auth-extra-groups"),
        "system:bootstrappers:kubeadm:default-node-token"
    );
    assert!(decoded("description").contains("lab"));
    assert_eq!(tokens::load(&state, "lab").unwrap().len(), 1);

    // Created again (an answer lost): 409 from the server, ours, fine. Another token under
    // the same id: refused.
    client
        .create_bootstrap_token(&fresh, expires, "again")
        .unwrap();
    let twin = token(&format!("{}.zzzzzzzzzzzzzzzz", fresh.token_id()));
    let err = client
        .create_bootstrap_token(&twin, expires, "twin")
        .unwrap_err();
    assert!(matches!(&err, super::Error::Api { code: 409, .. }), "{err}");
    assert!(!err.to_string().contains("zzzzzzzzzzzzzzzz"), "{err}");

    // A real kubectl reads it back.
    let credentials = super::mint::mint_admin(&pki_dir, Duration::from_secs(600)).unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let yaml = super::mint::kubeconfig("lab", &server.endpoint(), &credentials);
    images::atomic::write(&kubeconfig, yaml.as_bytes(), 0o600).unwrap();
    let out = kubectl(
        dir.path(),
        &kubeconfig,
        &["get", "secret", "-n", "kube-system", &name, "-o", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(tokens::secret_holds(&read, &fresh), "{read}");
    assert_eq!(
        read["data"]["auth-extra-groups"],
        secret["data"]["auth-extra-groups"]
    );
    let out = kubectl(
        dir.path(),
        &kubeconfig,
        &[
            "get",
            "secret",
            "-n",
            "kube-system",
            &name,
            "-o",
            "jsonpath={.type}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bootstrap.kubernetes.io/token"
    );
}

#[test]
fn an_unreachable_api_server_mints_nothing_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pki_dir = super::ops::pki_dir(&state, "lab");
    crate::pki::ensure(&pki_dir, "lab").unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::for_cluster(&pki_dir, &format!("127.0.0.1:{port}")).unwrap();
    let err = tokens::mint(&client, &state, "lab", SystemTime::now()).unwrap_err();
    assert!(matches!(err, tokens::Error::CreateSecret { .. }), "{err}");
    assert!(tokens::load(&state, "lab").unwrap().is_empty());
}

#[test]
fn mints_are_claimed_one_at_a_time_and_retried_after_a_rest() {
    let minting = tokens::Minting::default();
    let t0 = std::time::Instant::now();
    assert!(minting.claim("lab", t0));
    assert!(!minting.claim("lab", t0), "one at a time");
    assert!(minting.claim("dev", t0), "per cluster");
    minting.store("lab", Err("connection refused".into()), t0);
    assert_eq!(minting.error("lab"), "connection refused");
    assert!(!minting.claim("lab", t0 + Duration::from_secs(1)), "rests");
    assert!(minting.claim("lab", t0 + tokens::MINT_RETRY));
    minting.store("lab", Ok(()), t0 + tokens::MINT_RETRY);
    assert_eq!(minting.error("lab"), "");
    assert!(minting.first_warning("lab"));
    assert!(!minting.first_warning("lab"));
}
