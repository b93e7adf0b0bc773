//! The kube client, drain and minted kubeconfigs against the FAKE API server, and the fake's
//! fidelity checked with a real kubectl (Debian's `kubernetes-client`; `SLIPWAY_KUBECTL`
//! names another binary).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use base64::Engine;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::client::{Client, CordonChange, Evicted};
use super::drain::{self, DrainOutcome, DrainPolicy, Holdout, PodPolicy, Skip};
use super::fake::{FakeApiServer, FakePod, World};
use super::mint;
use super::model::PodRef;

struct Setup {
    dir: tempfile::TempDir,
    pki: PathBuf,
    server: FakeApiServer,
}

impl Setup {
    fn new(world: World) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("state/clusters/lab/pki");
        crate::pki::ensure(&pki, "lab").unwrap();
        let server = FakeApiServer::start(&pki, world).unwrap();
        Setup { dir, pki, server }
    }

    fn client(&self) -> Client {
        Client::for_cluster(&self.pki, &self.server.endpoint()).unwrap()
    }

    /// A kubeconfig for the fake from `credentials`, written 0600 under the test directory.
    fn kubeconfig(&self, name: &str, credentials: &mint::Credentials) -> PathBuf {
        let path = self.dir.path().join(name);
        let yaml = mint::kubeconfig("lab", &self.server.endpoint(), credentials);
        images::atomic::write(&path, yaml.as_bytes(), 0o600).unwrap();
        path
    }

    fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        let kubectl = std::env::var_os("SLIPWAY_KUBECTL").unwrap_or_else(|| "kubectl".into());
        Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .expect("kubectl runs (Debian's kubernetes-client)")
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn pod_ref(namespace: &str, name: &str) -> PodRef {
    PodRef {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Three nodes; on w1 the pods of a small cluster: a DaemonSet's, a static pod's mirror, two
/// ReplicaSet pods under a budget that allows two disruptions, a StatefulSet pod and a
/// finished Job-less pod. On w2, one more pod of the budget.
fn cluster() -> World {
    let mut world = World::default();
    world.add_node("cp1", true, &["control-plane"]);
    world.add_node("w1", true, &[]);
    world.add_node("w2", true, &[]);
    for pod in [
        FakePod::new("kube-system", "kube-proxy-x1", "w1").owned_by("DaemonSet", "kube-proxy"),
        FakePod::new("kube-system", "etcd-w1", "w1")
            .owned_by("Node", "w1")
            .mirror(),
        FakePod::new("shop", "web-1", "w1")
            .owned_by("ReplicaSet", "web-5d8f")
            .label("app", "web"),
        FakePod::new("shop", "web-2", "w1")
            .owned_by("ReplicaSet", "web-5d8f")
            .label("app", "web"),
        FakePod::new("shop", "web-3", "w2")
            .owned_by("ReplicaSet", "web-5d8f")
            .label("app", "web"),
        FakePod::new("shop", "db-0", "w1").owned_by("StatefulSet", "db"),
        FakePod::new("shop", "report-28", "w1").phase("Succeeded"),
    ] {
        world.add_pod(pod);
    }
    world.add_pdb("shop", "web", &[("app", "web")], Some(1), None);
    world
}

#[test]
fn the_minted_kubeconfig_works_with_kubectl_get_cordon_and_uncordon() {
    let setup = Setup::new(cluster());
    // Through the subcommand: a host config naming the cluster, whose endpoint is not the
    // fake's (kubectl is pointed at the fake with --server; the CA and names are the same).
    let state = setup.dir.path().join("state");
    let host = setup.dir.path().join("host.toml");
    std::fs::write(
        &host,
        format!(
            "format = 1\n[host]\nname = \"hci-01\"\nstate-dir = \"{}\"\n\
             [source]\nreference = \"oci:/srv/nodes\"\nchannel = \"stable\"\nkeys = [\"/k.pub\"]\n\
             [hypervisor]\nkind = \"qemu\"\n\
             [[clusters]]\nname = \"lab\"\nkubernetes = \"1.32.10\"\n\
             control-plane-endpoint = \"10.44.0.10:6443\"\npod-cidr = \"10.244.0.0/16\"\n\
             service-cidr = \"10.96.0.0/12\"\n\
             network = {{ cidr = \"10.44.0.0/24\", gateway = \"10.44.0.1\", pool = \"10.44.0.10-10.44.0.20\" }}\n",
            state.display()
        ),
    )
    .unwrap();
    let out = setup.dir.path().join("lab.kubeconfig");
    // A stale, world-readable file is replaced by a private one.
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    super::cli::kubeconfig(&host, "lab", Some(&out), 2).unwrap();
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(yaml.starts_with("apiVersion: v1\nkind: Config\n"), "{yaml}");
    assert!(yaml.contains("server: https://10.44.0.10:6443"), "{yaml}");
    assert!(
        yaml.contains("current-context: slipway-admin@lab"),
        "{yaml}"
    );
    // The errors a user meets first.
    let err = super::cli::kubeconfig(&host, "prod", Some(&out), 2).unwrap_err();
    assert!(format!("{err:#}").contains("(it has: lab)"), "{err:#}");
    assert!(super::cli::kubeconfig(&host, "lab", Some(&out), 0).is_err());

    let server = format!("https://{}", setup.server.endpoint());
    let kubectl = |args: &[&str]| {
        let mut all = vec!["--server", server.as_str()];
        all.extend_from_slice(args);
        setup.kubectl(&out, &all)
    };
    let version = kubectl(&["version"]);
    assert!(version.status.success(), "{}", text(&version));
    assert!(text(&version).contains("v1.24.17"), "{}", text(&version));
    let get = kubectl(&["get", "nodes"]);
    assert!(get.status.success(), "{}", text(&get));
    let listing = String::from_utf8_lossy(&get.stdout).into_owned();
    for want in ["cp1", "w1", "w2", "control-plane", "Ready"] {
        assert!(listing.contains(want), "{want} in {listing}");
    }
    assert!(!listing.contains("SchedulingDisabled"), "{listing}");

    let cordon = kubectl(&["cordon", "w1"]);
    assert!(cordon.status.success(), "{}", text(&cordon));
    assert!(String::from_utf8_lossy(&cordon.stdout).contains("node/w1 cordoned"));
    assert!(setup.server.world().unschedulable("w1"));
    let get = kubectl(&["get", "nodes"]);
    let line = String::from_utf8_lossy(&get.stdout)
        .lines()
        .find(|l| l.starts_with("w1 "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("Ready,SchedulingDisabled"), "{}", text(&get));
    // Our client sees kubectl's cordon, and does not count it as its own.
    let client = setup.client();
    assert!(client.node("w1").unwrap().spec.unschedulable);
    assert_eq!(client.cordon("w1").unwrap(), CordonChange::Unchanged);

    let uncordon = kubectl(&["uncordon", "w1"]);
    assert!(uncordon.status.success(), "{}", text(&uncordon));
    assert!(!setup.server.world().unschedulable("w1"));
    assert!(
        setup
            .server
            .world()
            .requests
            .iter()
            .any(|r| r == "PATCH /api/v1/nodes/w1"),
        "kubectl patched the node"
    );
}

#[test]
fn the_admin_certificate_is_a_client_certificate_of_system_masters_from_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    crate::pki::ensure(&pki, "lab").unwrap();
    let credentials = mint::mint_admin(&pki, Duration::from_secs(3600)).unwrap();
    let cert = dir.path().join("admin.crt");
    std::fs::write(&cert, &credentials.cert_pem).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ca = pki.join("ca.crt");
    let (ca, cert) = (ca.to_str().unwrap(), cert.to_str().unwrap());
    let verified = openssl(&["verify", "-purpose", "sslclient", "-CAfile", ca, cert]);
    assert!(verified.contains(": OK"), "{verified}");
    let shown = openssl(&["x509", "-noout", "-text", "-in", cert]);
    for want in [
        "Subject: CN = slipway-admin, O = system:masters",
        "Issuer: CN = kubernetes",
        "TLS Web Client Authentication",
        "Authority Key Identifier",
    ] {
        assert!(shown.contains(want), "{want} in {shown}");
    }
    assert!(!shown.contains("CA:TRUE"), "{shown}");
    let end = openssl(&["x509", "-noout", "-checkend", "3500", "-in", cert]);
    assert!(end.contains("will not expire"), "{end}");
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "3700", "-in", cert])
        .output()
        .unwrap();
    assert!(!out.status.success(), "valid for an hour, not more");
}

#[test]
fn a_kubeconfig_from_another_ca_is_refused() {
    let setup = Setup::new(cluster());
    let other_pki = setup.dir.path().join("other/pki");
    crate::pki::ensure(&other_pki, "other").unwrap();
    let ours = mint::mint_admin(&setup.pki, Duration::from_secs(600)).unwrap();
    let theirs = mint::mint_admin(&other_pki, Duration::from_secs(600)).unwrap();
    assert!(
        !format!("{theirs:?}").contains("PRIVATE KEY"),
        "the key never reaches Debug output"
    );

    // Trusting the right CA but holding a certificate from another: the server refuses it in
    // the handshake.
    let mixed = theirs.clone().trusting(&ours.ca_pem);
    let before = setup.server.world().rejected_handshakes;
    let path = setup.kubeconfig("mixed.kubeconfig", &mixed);
    let get = setup.kubectl(&path, &["get", "nodes"]);
    assert!(!get.status.success(), "{}", text(&get));
    assert!(setup.server.world().rejected_handshakes > before);
    let err = Client::new(&setup.server.endpoint(), &mixed)
        .unwrap()
        .node("w1")
        .unwrap_err();
    assert!(matches!(err, super::Error::Request { .. }), "{err}");

    // All from the other CA: refused too (here kubectl also distrusts the server).
    let path = setup.kubeconfig("other.kubeconfig", &theirs);
    let get = setup.kubectl(&path, &["get", "nodes"]);
    assert!(!get.status.success(), "{}", text(&get));

    // No client certificate (a bearer token the server does not know): 401. (Without any
    // credentials kubectl would prompt for a password on the 401.)
    let anonymous = setup.dir.path().join("anonymous.kubeconfig");
    let ca = base64::engine::general_purpose::STANDARD.encode(&ours.ca_pem);
    std::fs::write(
        &anonymous,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: nobody\n  user:\n    token: not-a-token\ncontexts:\n- name: nobody\n  \
             context:\n    cluster: lab\n    user: nobody\ncurrent-context: nobody\n",
            setup.server.endpoint()
        ),
    )
    .unwrap();
    let get = setup.kubectl(&anonymous, &["get", "nodes"]);
    assert!(!get.status.success(), "{}", text(&get));
    assert!(
        text(&get).contains("You must be logged in to the server"),
        "{}",
        text(&get)
    );

    // And the right identity works.
    let path = setup.kubeconfig("ours.kubeconfig", &ours);
    let get = setup.kubectl(&path, &["get", "nodes"]);
    assert!(get.status.success(), "{}", text(&get));
}

#[test]
fn kubectl_drain_and_our_drain_evict_the_same_pods() {
    // kubectl's drain (1.20: policy/v1beta1).
    let setup = Setup::new(cluster());
    let creds = mint::mint_admin(&setup.pki, Duration::from_secs(600)).unwrap();
    let path = setup.kubeconfig("admin.kubeconfig", &creds);
    let out = setup.kubectl(&path, &["drain", "w1", "--ignore-daemonsets"]);
    assert!(out.status.success(), "{}", text(&out));
    // kubectl 1.20 ends with "node/w1 evicted", later ones with "node/w1 drained".
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("node/w1 drained") || said.contains("node/w1 evicted"),
        "{}",
        text(&out)
    );
    let (kubectl_evicted, kubectl_left) = {
        let mut world = setup.server.world();
        assert!(world.unschedulable("w1"));
        (world.evicted(), world.pods_on("w1"))
    };
    let kubectl_versions: BTreeSet<String> = setup
        .server
        .world()
        .evictions
        .iter()
        .map(|e| e.api_version.clone())
        .collect();

    // kubectl 1.20 sends policy/v1beta1 whatever discovery says; later ones policy/v1.
    assert_eq!(kubectl_versions.len(), 1, "{kubectl_versions:?}");
    assert!(
        kubectl_versions.is_subset(&["policy/v1", "policy/v1beta1"].map(String::from).into()),
        "{kubectl_versions:?}"
    );
    // Ours, on the same pods.
    let setup = Setup::new(cluster());
    let client = setup.client();
    assert_eq!(client.cordon("w1").unwrap(), CordonChange::Changed);
    let outcome = drain::drain(
        &client,
        "w1",
        &DrainPolicy::default(),
        Instant::now() + Duration::from_secs(10),
    )
    .unwrap();
    let DrainOutcome::Drained(done) = &outcome else {
        panic!("{outcome}");
    };
    let mut world = setup.server.world();
    assert_eq!(
        world.evicted(),
        kubectl_evicted,
        "kubectl used {kubectl_versions:?}"
    );
    assert_eq!(world.pods_on("w1"), kubectl_left);
    assert_eq!(
        kubectl_evicted,
        ["shop/db-0", "shop/report-28", "shop/web-1", "shop/web-2"]
            .map(String::from)
            .into(),
    );
    assert_eq!(
        kubectl_left,
        ["kube-system/etcd-w1", "kube-system/kube-proxy-x1"]
            .map(String::from)
            .into()
    );
    let evicted: BTreeSet<String> = done.evicted.iter().map(ToString::to_string).collect();
    assert_eq!(evicted, kubectl_evicted);
    assert_eq!(
        done.skipped,
        vec![
            (pod_ref("kube-system", "etcd-w1"), Skip::Mirror),
            (pod_ref("kube-system", "kube-proxy-x1"), Skip::DaemonSet),
        ]
    );
    // Ours through policy/v1 (the fake serves it, as 1.22 and later do); each pod once.
    assert!(
        world
            .evictions
            .iter()
            .all(|e| e.api_version == "policy/v1" && e.code == 201)
    );
    assert_eq!(world.evictions.len(), 4);
}

#[test]
fn a_policy_refusal_refuses_before_evicting_anything_as_kubectl_does() {
    let mut world = cluster();
    world.add_pod(
        FakePod::new("shop", "cache-1", "w1")
            .owned_by("ReplicaSet", "cache-77")
            .empty_dir(),
    );
    world.add_pod(FakePod::new("shop", "debug", "w1"));
    let setup = Setup::new(world);
    let creds = mint::mint_admin(&setup.pki, Duration::from_secs(600)).unwrap();
    let path = setup.kubeconfig("admin.kubeconfig", &creds);
    let out = setup.kubectl(&path, &["drain", "w1", "--ignore-daemonsets"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(setup.server.world().evictions.is_empty());

    let client = setup.client();
    let outcome = drain::drain(
        &client,
        "w1",
        &DrainPolicy::default(),
        Instant::now() + Duration::from_secs(5),
    )
    .unwrap();
    let DrainOutcome::Refused(refused) = &outcome else {
        panic!("{outcome}");
    };
    assert_eq!(refused.len(), 2, "{outcome}");
    assert!(
        outcome
            .to_string()
            .contains("shop/cache-1 has emptyDir data"),
        "{outcome}"
    );
    assert!(
        outcome.to_string().contains("shop/debug has no controller"),
        "{outcome}"
    );
    assert!(setup.server.world().evictions.is_empty());

    // With both policies at "evict", the same node drains.
    let lax = DrainPolicy {
        empty_dir: PodPolicy::Evict,
        unmanaged: PodPolicy::Evict,
    };
    let outcome =
        drain::drain(&client, "w1", &lax, Instant::now() + Duration::from_secs(5)).unwrap();
    assert!(matches!(outcome, DrainOutcome::Drained(_)), "{outcome}");
    let evicted = setup.server.world().evicted();
    assert!(evicted.contains("shop/cache-1") && evicted.contains("shop/debug"));
}

#[test]
fn a_budget_allowing_no_disruption_blocks_the_drain_until_the_deadline() {
    let mut world = World::default();
    world.add_node("w1", true, &[]);
    world.add_node("w2", false, &[]);
    for (name, node) in [("web-1", "w1"), ("web-2", "w2")] {
        world.add_pod(
            FakePod::new("shop", name, node)
                .owned_by("ReplicaSet", "web-5d8f")
                .label("app", "web"),
        );
    }
    world.add_pdb("shop", "web", &[("app", "web")], Some(2), None);
    let setup = Setup::new(world);
    let client = setup.client();
    assert_eq!(client.node("w1").unwrap().ready(), Some(true));
    assert_eq!(client.node("w2").unwrap().ready(), Some(false));

    assert_eq!(client.cordon("w1").unwrap(), CordonChange::Changed);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(1500);
    let outcome = drain::drain(&client, "w1", &DrainPolicy::default(), deadline).unwrap();
    let elapsed = start.elapsed();
    let DrainOutcome::DeadlinePassed { done, holdouts } = &outcome else {
        panic!("{outcome}");
    };
    assert!(done.evicted.is_empty());
    assert_eq!(holdouts.len(), 1);
    assert_eq!(holdouts[0].0, pod_ref("shop", "web-1"));
    assert!(
        matches!(&holdouts[0].1, Holdout::DisruptionBudget(m)
            if m.contains("The disruption budget web needs 2 healthy pods and has 2 currently")),
        "{outcome}"
    );
    assert!(
        outcome
            .to_string()
            .contains("blocked by a PodDisruptionBudget")
    );
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(5000), "{elapsed:?}");
    {
        let world = setup.server.world();
        // Retried, with backoff: several 429s, not a busy loop.
        let refusals = world.evictions.iter().filter(|e| e.code == 429).count();
        assert!((3..=8).contains(&refusals), "{refusals} refusals");
        assert_eq!(world.evicted(), BTreeSet::new());
    }

    // The caller's rollback: uncordon what it cordoned; the node is schedulable again.
    assert_eq!(client.uncordon("w1").unwrap(), CordonChange::Changed);
    assert!(!setup.server.world().unschedulable("w1"));
    assert!(!client.node("w1").unwrap().spec.unschedulable);
    assert_eq!(client.uncordon("w1").unwrap(), CordonChange::Unchanged);

    // Or its force: delete what the budget held (a DELETE ignores budgets).
    let holdouts: Vec<PodRef> = holdouts.iter().map(|(p, _)| p.clone()).collect();
    let left = drain::force(&client, &holdouts, Instant::now() + Duration::from_secs(5)).unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(setup.server.world().pods_on("w1").is_empty());
}

#[test]
fn server_errors_are_retried_until_the_deadline_and_reported() {
    let mut world = cluster();
    // Two budgets over web-1: the API server cannot decide, and answers 500.
    world.add_pdb("shop", "web-too", &[("app", "web")], Some(1), None);
    let setup = Setup::new(world);
    let client = setup.client();
    let outcome = drain::drain(
        &client,
        "w1",
        &DrainPolicy::default(),
        Instant::now() + Duration::from_millis(700),
    )
    .unwrap();
    let DrainOutcome::DeadlinePassed { done, holdouts } = &outcome else {
        panic!("{outcome}");
    };
    // The others went; the two pods under both budgets stayed, with the server's reason.
    assert_eq!(done.evicted.len(), 2, "{outcome}");
    assert_eq!(holdouts.len(), 2, "{outcome}");
    for (_, why) in holdouts {
        assert!(
            matches!(why, Holdout::ApiError(m) if m.contains("more than one PodDisruptionBudget")),
            "{outcome}"
        );
    }
    let attempts = setup
        .server
        .world()
        .evictions
        .iter()
        .filter(|e| e.code == 500)
        .count();
    assert!(attempts >= 4, "retried: {attempts}");
}

#[test]
fn a_budget_that_frees_up_lets_the_drain_finish_after_the_pod_terminates() {
    let mut world = World::default();
    world.termination = Duration::from_millis(400);
    for node in ["w1", "w2", "w3"] {
        world.add_node(node, true, &[]);
    }
    for (name, node) in [("web-1", "w1"), ("web-2", "w2")] {
        world.add_pod(
            FakePod::new("shop", name, node)
                .owned_by("ReplicaSet", "web-5d8f")
                .label("app", "web"),
        );
    }
    world.add_pdb("shop", "web", &[("app", "web")], Some(2), None);
    let setup = Setup::new(world);
    let client = setup.client();
    let start = Instant::now();
    std::thread::scope(|s| {
        // The replacement comes up elsewhere after a while, as a ReplicaSet's would.
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            setup.server.world().add_pod(
                FakePod::new("shop", "web-3", "w3")
                    .owned_by("ReplicaSet", "web-5d8f")
                    .label("app", "web"),
            );
        });
        let outcome = drain::drain(
            &client,
            "w1",
            &DrainPolicy::default(),
            Instant::now() + Duration::from_secs(10),
        )
        .unwrap();
        let DrainOutcome::Drained(done) = &outcome else {
            panic!("{outcome}");
        };
        assert_eq!(done.evicted, vec![pod_ref("shop", "web-1")]);
    });
    // Refused at first, then accepted, then waited for until the pod had terminated.
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    let mut world = setup.server.world();
    assert!(world.evictions.iter().any(|e| e.code == 429));
    assert!(world.pods_on("w1").is_empty());
}

#[test]
fn evictions_fall_back_to_policy_v1beta1_on_older_servers() {
    let mut world = cluster();
    world.policy_v1 = false;
    let setup = Setup::new(world);
    let client = setup.client();
    assert_eq!(
        client.evict(&pod_ref("shop", "db-0")).unwrap(),
        Evicted::Accepted
    );
    assert_eq!(
        client.evict(&pod_ref("shop", "db-0")).unwrap(),
        Evicted::Gone
    );
    assert_eq!(
        setup.server.world().evictions[0].api_version,
        "policy/v1beta1",
        "discovery said v1beta1"
    );

    // A client that learnt v1 from discovery, facing a server that no longer serves it (an
    // API server downgraded behind the same endpoint): v1 answers 404, v1beta1 follows.
    let setup = Setup::new(cluster());
    let client = setup.client();
    assert_eq!(
        client.evict(&pod_ref("shop", "db-0")).unwrap(),
        Evicted::Accepted
    );
    setup.server.world().policy_v1 = false;
    assert_eq!(
        client.evict(&pod_ref("shop", "web-1")).unwrap(),
        Evicted::Accepted
    );
    let seen: Vec<(String, String, u16)> = setup
        .server
        .world()
        .evictions
        .iter()
        .map(|e| (e.pod.name.clone(), e.api_version.clone(), e.code))
        .collect();
    assert_eq!(
        seen,
        [
            ("db-0", "policy/v1", 201),
            ("web-1", "policy/v1", 404),
            ("web-1", "policy/v1beta1", 201)
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c))
    );
    // A missing node is an API error with the server's message.
    let err = client.node("nope").unwrap_err();
    assert!(matches!(err, super::Error::Api { code: 404, .. }), "{err}");
    assert!(
        err.to_string().contains("nodes \"nope\" not found"),
        "{err}"
    );
}
