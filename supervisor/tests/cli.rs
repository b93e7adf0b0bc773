//! The `slipwayd` command line: help, usage errors, and the clear refusal of what is not built.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

fn slipwayd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipwayd"))
        .args(args)
        .output()
        .expect("run slipwayd")
}

/// The example host.toml with its state directory in `dir` and `edit` (from, to) applied;
/// returns the config's path and the state directory.
fn example_config(
    dir: &std::path::Path,
    edit: Option<(&str, &str)>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/host.toml"))
            .unwrap();
    let state = dir.join("state");
    let config = dir.join("host.toml");
    let mut text = example.replace("/var/lib/slipway", state.to_str().unwrap());
    if let Some((from, to)) = edit {
        text = text.replace(from, to);
    }
    std::fs::write(&config, text).unwrap();
    (config, state)
}

#[test]
fn help_lists_the_subcommands() {
    let out = slipwayd(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "status", "firmware"] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
}

#[test]
fn an_unknown_flag_exits_2() {
    let out = slipwayd(&["run", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn run_refuses_a_bad_config_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = example_config(dir.path(), Some(("cpus = 2", "cpus = \"two\"")));
    let out = slipwayd(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("slipwayd: error: {}:", config.display())),
        "{err}"
    );
    assert!(!state.exists(), "a refused config must start nothing");
    let out = slipwayd(&["run", "--config", "/nonexistent/host.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read host config /nonexistent/host.toml"),
        "{err}"
    );
}

#[test]
fn status_without_a_supervisor_says_so() {
    let bus = tests::dbus::Bus::start();
    let out = slipwayd(&["status", "--bus", &bus.address]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer from slipwayd"), "{err}");
    let out = slipwayd(&["status", "--bus", "unix:path=/nonexistent/bus"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the bus at unix:path=/nonexistent/bus"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_plan() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/host.toml");
    let out = slipwayd(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("cluster lab: Kubernetes 1.32.10"), "{plan}");
    assert!(
        plan.lines()
            .any(|l| l.contains("worker-2") && l.contains("10.44.0.12")),
        "{plan}"
    );
}

#[test]
fn seed_writes_a_private_seed_per_node_and_keeps_the_pki() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = example_config(dir.path(), None);
    let run = || {
        let out = slipwayd(&["seed", "--config", config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(first.lines().count(), 3, "{first}");
    for node in ["cp-1", "worker-1", "worker-2"] {
        let seed = dir.path().join("state/nodes").join(node).join("seed.img");
        assert_eq!(
            std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let node_dir = seed.parent().unwrap();
        assert_eq!(
            std::fs::metadata(node_dir).unwrap().permissions().mode() & 0o777,
            0o700,
            "the node's directory is as private as `run` makes it"
        );
    }
    let token = dir.path().join("state/clusters/lab/pki/bootstrap-token");
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&token).unwrap();
    assert!(!first.contains(secret.trim()), "secrets are never printed");
    // The PKI is made once: the same documents (and digests) the second time.
    assert_eq!(run(), first);

    // Every user-data is a valid cloud-config to Debian's cloud-init (which also refuses a
    // broken one: the check can fail).
    let schema = |path: &std::path::Path| {
        Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(path)
            .output()
            .expect("cloud-init (./scripts/setup installs it)")
    };
    for node in ["cp-1", "worker-1", "worker-2"] {
        let seed = dir.path().join("state/nodes").join(node).join("seed.img");
        let user_data = dir.path().join(format!("{node}.user-data"));
        let copied = Command::new("mcopy")
            .arg("-i")
            .arg(&seed)
            .arg("::/user-data")
            .arg(&user_data)
            .status()
            .unwrap();
        assert!(copied.success());
        let out = schema(&user_data);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Valid"),
            "{node}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if node == "worker-1" {
            let text = std::fs::read_to_string(&user_data).unwrap();
            let broken = dir.path().join("broken.user-data");
            std::fs::write(
                &broken,
                text.replacen("permissions: \"0600\"", "permissions: [6]", 1),
            )
            .unwrap();
            assert!(
                !schema(&broken).status.success(),
                "cloud-init accepted a broken write_files"
            );
        }
    }
}

#[test]
fn purge_without_a_supervisor_deletes_only_an_unconfigured_stopped_node() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = example_config(dir.path(), None);
    for node in ["cp-1", "old-worker"] {
        std::fs::create_dir_all(state.join("nodes").join(node)).unwrap();
        std::fs::write(state.join("nodes").join(node).join("state.raw"), b"data").unwrap();
    }
    let config = config.to_str().unwrap();
    let out = slipwayd(&["purge", "cp-1", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still in the host config"), "{err}");
    assert!(state.join("nodes/cp-1/state.raw").exists());
    let out = slipwayd(&["purge", "old-worker", "--config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!state.join("nodes/old-worker").exists());
    let out = slipwayd(&["purge", "../cp-1", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "a path is not a node name");
    assert!(state.join("nodes/cp-1/state.raw").exists());
}
