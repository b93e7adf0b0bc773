//! Tests of the D-Bus service: its calls over a real bus, and the shipped bus policy.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// A rollout of cluster lab in flight (the CLI's tests use it too).
pub(crate) fn lab() -> RolloutInfo {
    RolloutInfo {
        cluster: "lab".into(),
        state: "rolling".into(),
        target: "tiny-linux 2026.12.0 sha256:12".into(),
        windows_target: String::new(),
        reason: "swapping cp-1".into(),
        nodes: vec![
            SwapInfo {
                node: "cp-1".into(),
                role: "control-plane".into(),
                current: "tiny-linux 2026.11.0".into(),
                current_digest: "sha256:11".into(),
                target: "sha256:12".into(),
                step: "stopping".into(),
                reason: "powering down".into(),
                since: 1_000,
            },
            SwapInfo {
                node: "w-1".into(),
                role: "worker".into(),
                current: "tiny-linux 2026.11.0".into(),
                current_digest: "sha256:11".into(),
                target: "sha256:12".into(),
                ..SwapInfo::default()
            },
        ],
        slots: Vec::new(),
        fleet_problem: String::new(),
    }
}

/// The rollout calls over a real bus: the answer is the snapshot's, each control call
/// reaches the callback once with its request, an unknown cluster never does, and a loop
/// that has ended makes the call fail.
#[tokio::test]
async fn rollout_calls_reach_the_control_and_refuse_unknown_clusters() {
    let bus = ::tests::dbus::Bus::start();
    let shared = Shared::default();
    {
        let mut snapshot = shared.lock();
        snapshot.rollouts = vec![lab()];
        snapshot.rollout_paused = true;
    }
    let asked = Arc::new(Mutex::new(Vec::new()));
    let open = Arc::new(AtomicBool::new(true));
    let control: Control = {
        let (asked, open) = (asked.clone(), open.clone());
        Box::new(move |c| {
            asked.lock().unwrap().push(c);
            open.load(Ordering::SeqCst)
        })
    };
    let _service = Service::start(
        Some(&bus.address),
        shared,
        Box::new(|| true),
        Box::new(|_| true),
        control,
    )
    .await
    .unwrap();
    let client = Client::connect(Some(&bus.address)).await.unwrap();

    let status = client.rollout().await.unwrap();
    assert_eq!(
        status,
        RolloutStatus {
            paused: true,
            rollouts: vec![lab()]
        }
    );
    client.pause().await.unwrap();
    client.resume().await.unwrap();
    client.abort("lab").await.unwrap();
    client.abort("").await.unwrap();
    let e = client.abort("prod").await.unwrap_err();
    assert!(
        format!("{e:#}").contains("InvalidArgs")
            && format!("{e:#}").contains("no cluster named prod on this host (its clusters: lab)"),
        "{e:#}"
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [
            RolloutControl::Pause,
            RolloutControl::Resume,
            RolloutControl::Abort {
                cluster: "lab".into()
            },
            RolloutControl::Abort {
                cluster: String::new()
            },
        ]
    );

    open.store(false, Ordering::SeqCst);
    for e in [
        client.pause().await.unwrap_err(),
        client.resume().await.unwrap_err(),
        client.abort("lab").await.unwrap_err(),
    ] {
        assert!(
            format!("{e:#}").contains("the supervisor is stopping"),
            "{e:#}"
        );
    }
}

/// The service on `bus`, an empty snapshot, every call accepted.
async fn serve_all(bus: &str) -> Service {
    Service::start(
        Some(bus),
        Shared::default(),
        Box::new(|| true),
        Box::new(|_| true),
        Box::new(|_| true),
    )
    .await
    .unwrap()
}

/// `rollout_changed` puts a `RolloutChanged` signal on the bus that another client
/// (dbus-monitor) sees with the cluster, state and reason.
#[tokio::test]
async fn rollout_changed_is_signalled() {
    let bus = ::tests::dbus::Bus::start();
    let service = serve_all(&bus.address).await;
    let mut monitor = Command::new("dbus-monitor")
        .arg("--address")
        .arg(&bus.address)
        .arg("type='signal',interface='org.slipway.Supervisor1'")
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-monitor (package dbus-bin)");
    let mut lines = BufReader::new(monitor.stdout.take().unwrap()).lines();
    // dbus-monitor drops its name once it has become a monitor: from then on it sees all.
    let watching = tokio::task::spawn_blocking(move || {
        for line in lines.by_ref() {
            if line.unwrap().contains("member=NameLost") {
                return lines;
            }
        }
        panic!("dbus-monitor ended before it watched");
    })
    .await
    .unwrap();
    let failed = RolloutInfo {
        state: "failed".into(),
        reason: "cp-1 rolled back: no beacon".into(),
        ..lab()
    };
    service.rollout_changed(&failed).await;
    let seen = tokio::task::spawn_blocking(move || {
        let mut lines = watching.map(Result::unwrap);
        lines.find(|l| l.contains("member=RolloutChanged")).unwrap();
        lines.take(3).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert_eq!(
        seen.iter().map(|l| l.trim()).collect::<Vec<_>>(),
        [
            "string \"lab\"",
            "string \"failed\"",
            "string \"cp-1 rolled back: no beacon\""
        ]
    );
}

mod policy {
    use tokio::process::Command;

    use super::*;

    /// `busctl call` of `member` as `uid` (0: root); its output and whether it succeeded.
    async fn call(bus: &str, uid: u32, member: &str, args: &[&str]) -> (bool, String) {
        let id = uid.to_string();
        let mut command = Command::new("setpriv");
        command.args(["--reuid", &id, "--regid", &id, "--clear-groups", "busctl"]);
        let out = command
            .arg(format!("--address={bus}"))
            .args(["call", NAME, PATH, NAME, member])
            .args(args)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// The bus policy shipped for the system bus, applied by a real dbus-daemon: anyone may
    /// read the status and the rollout; only root may reload, purge, or pause, resume or abort
    /// a rollout.
    #[tokio::test]
    async fn only_root_may_change_anything_through_the_shipped_bus_policy() {
        let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dbus/org.slipway.Supervisor1.conf");
        let bus = ::tests::dbus::Bus::system_like(&policy);
        let _service = super::serve_all(&bus.address).await;
        let nobody = 65534;
        for member in ["Status", "Rollout"] {
            let (ok, said) = call(&bus.address, nobody, member, &[]).await;
            assert!(ok, "nobody may call {member}: {said}");
        }
        for (member, args) in [
            ("Reload", &[][..]),
            ("PauseRollout", &[][..]),
            ("ResumeRollout", &[][..]),
            ("AbortRollout", &["s", ""][..]),
            ("Purge", &["s", "w-1"][..]),
        ] {
            let (ok, said) = call(&bus.address, nobody, member, args).await;
            assert!(
                !ok && said.contains("Access denied"),
                "nobody called {member}: {said}"
            );
        }
        let (ok, said) = call(&bus.address, 0, "PauseRollout", &[]).await;
        assert!(ok, "root may pause: {said}");
    }
}

/// A status or rollout answer from a slipwayd of one channel (no Windows fields) still reads,
/// and the table shows a Windows channel only when the host follows one.
#[test]
fn answers_without_the_windows_channel_still_read_and_the_table_shows_it_when_followed() {
    let old = r#"{"host":"hv-01","image":"linux-node 2 sha256:bb","channel":"fresh",
        "channel_verified":0,"problem":"","nodes":[]}"#;
    let mut status: Status = serde_json::from_str(old).unwrap();
    assert_eq!(
        (
            status.windows_channel.as_str(),
            status.windows_image.as_str()
        ),
        ("", "")
    );
    assert!(!table(&status).contains("windows"), "{}", table(&status));
    let rollout = r#"{"cluster":"lab","state":"done","target":"","reason":"","nodes":[],
        "slots":[],"fleet_problem":""}"#;
    let info: RolloutInfo = serde_json::from_str(rollout).unwrap();
    assert_eq!(info.windows_target, "");
    status.windows_channel = "stale".into();
    status.windows_image = "windows-node 1 sha256:dd".into();
    let text = table(&status);
    assert!(
        text.contains("windows nodes: image windows-node 1 sha256:dd\nwindows-channel: stale (never verified)\n"),
        "{text}"
    );
}
