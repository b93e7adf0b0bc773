//! The `slipwayd` command line: help, usage errors, and the clear refusal of what is not built.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

fn slipwayd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipwayd"))
        .args(args)
        .output()
        .expect("run slipwayd")
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
fn run_says_plainly_that_it_is_not_built_yet() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/host.toml");
    let out = slipwayd(&["run", "--config", example]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("slipwayd: error: cannot supervise"),
        "{err}"
    );
    assert!(err.contains("not implemented yet"), "{err}");
    let out = slipwayd(&["run", "--config", "/nonexistent/host.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read host config /nonexistent/host.toml"),
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
