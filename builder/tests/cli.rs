//! The `slipway` command line as a user meets it: help, usage errors, failure reports.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

fn slipway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .output()
        .expect("run slipway")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_subcommands() {
    let out = slipway(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("vhdx"), "{}", text(&out.stdout));
    let out = slipway(&["vhdx", "--help"]);
    let help = text(&out.stdout);
    for sub in ["convert", "info", "check", "export", "child", "replay"] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error_with_exit_code_2() {
    let out = slipway(&["vhdx", "info", "--frobnicate", "x.vhdx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--frobnicate"),
        "{}",
        text(&out.stderr)
    );
    let out = slipway(&["vhdx", "convert", "a", "b", "--sector-size", "1024"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("512 or 4096"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_failure_is_one_sentence_with_its_causes_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.vhdx");
    let out = slipway(&["vhdx", "info", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("slipway: error: open "), "{err}");
    assert!(
        err.contains("caused by: No such file or directory"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !err.contains("Os {"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![7u8; 1 << 20]).unwrap();
    let out_path = dir.path().join("disk.vhdx");
    let out = slipway(&[
        "--log-format",
        "json",
        "vhdx",
        "convert",
        raw.to_str().unwrap(),
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = text(&out.stderr);
    let event: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(event["fields"]["message"], "converted");
    assert_eq!(event["fields"]["virtual_size"], 1 << 20);
}

#[test]
fn check_prints_one_line_per_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![7u8; 3 << 20]).unwrap();
    let vhdx = dir.path().join("disk.vhdx");
    let (r, v) = (raw.to_str().unwrap(), vhdx.to_str().unwrap());
    assert_eq!(slipway(&["vhdx", "convert", r, v]).status.code(), Some(0));
    let out = slipway(&["vhdx", "check", v]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("clean"));
    // Point blocks 1 and 2 at block 0's data (BAT at 3 MiB, data from 4 MiB): two overlaps.
    let file = std::fs::OpenOptions::new().write(true).open(&vhdx).unwrap();
    let entry = ((4u64 << 20) | 6).to_le_bytes();
    std::os::unix::fs::FileExt::write_all_at(&file, &entry, (3 << 20) + 8).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &entry, (3 << 20) + 16).unwrap();
    let out = slipway(&["vhdx", "check", v]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("overlapping")), "{lines:?}");
    assert!(
        text(&out.stderr).contains("2 problem(s) found"),
        "{}",
        text(&out.stderr)
    );
}
