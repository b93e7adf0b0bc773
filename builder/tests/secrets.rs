//! A key's passphrase stays with `slipway`: a variable named by `--passphrase-env` is read once
//! and taken out of the environment before any tool runs (a build runs mmdebstrap, whose
//! maintainer scripts run as root, apt and mkfs), and an empty passphrase is refused.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VAR: &str = "SLIPWAY_TEST_PASSPHRASE";
const PASSPHRASE: &str = "correct horse battery staple";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn slipway(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slipway"));
    command
        .current_dir(dir)
        .args(args)
        .env("SLIPWAY_CACHE", dir.join("cache"));
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `dir/bin/TOOL` for each tool: a script that records its environment in
/// `dir/env/TOOL` and fails (so the build stops at the first tool it runs).
/// What each spy tool wrote (tool name, text), after a build that the spies failed on purpose.
fn spy_reports(dumps: &Path, build: &Output) -> Vec<(String, String)> {
    assert!(!build.status.success(), "the spies fail the build");
    assert!(
        stderr(build).contains("spy: no archive here"),
        "{}",
        stderr(build)
    );
    let seen: Vec<(String, String)> = std::fs::read_dir(dumps)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    assert!(!seen.is_empty(), "no spy ran: {}", stderr(build));
    seen
}

fn spy_tools(dir: &Path, tools: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    let dumps = dir.join("env");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&dumps).unwrap();
    for tool in tools {
        let script = bin.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nenv > '{}'\necho 'spy: no archive here' >&2\nexit 1\n",
                dumps.join(tool).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dumps
}

/// In `d`: `release.key`, encrypted with the passphrase from `VAR`, and tiny-linux without its
/// lock (the build resolves its Debian packages with apt: the first tools it runs after reading
/// the key).
fn encrypted_key_and_recipe(d: &Path) {
    let keygen = slipway(
        d,
        &["keygen", "release.key", "--passphrase-env", VAR],
        &[(VAR, PASSPHRASE)],
    );
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let recipes = repo().join("recipes");
    std::fs::create_dir_all(d.join("tiny-linux")).unwrap();
    std::fs::copy(recipes.join("tiny-linux/init"), d.join("tiny-linux/init")).unwrap();
    std::fs::copy(recipes.join("tiny-linux.toml"), d.join("tiny-linux.toml")).unwrap();
}

#[test]
fn a_passphrase_from_the_environment_is_not_passed_to_the_tools_a_build_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    encrypted_key_and_recipe(d);

    let dumps = spy_tools(d, &["apt-cache", "apt-get"]);
    let path = format!(
        "{}:{}",
        d.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let build = slipway(
        d,
        &[
            "build",
            "tiny-linux.toml",
            "--key",
            "release.key",
            "--passphrase-env",
            VAR,
        ],
        &[(VAR, PASSPHRASE), ("PATH", &path)],
    );
    let seen = spy_reports(&dumps, &build);
    for (tool, env) in &seen {
        // The dump is the tool's environment (the cache variable is passed on as it should be)...
        assert!(env.contains("SLIPWAY_CACHE="), "{tool}: {env}");
        // ...and the passphrase is not in it, by name or by value.
        assert!(!env.contains(VAR), "{tool} inherited {VAR}:\n{env}");
        assert!(
            !env.contains(PASSPHRASE),
            "{tool} saw the passphrase:\n{env}"
        );
    }
}

#[test]
fn an_empty_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let out = slipway(
        d,
        &["keygen", "env.key", "--passphrase-env", VAR],
        &[(VAR, "")],
    );
    assert!(!out.status.success(), "an empty variable made a key");
    assert!(
        stderr(&out).contains(&format!("the environment variable {VAR}"))
            && stderr(&out).contains("is empty"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("env.key").exists());

    for (name, content) in [("empty.txt", ""), ("blank-line.txt", "\nsecond line\n")] {
        std::fs::write(d.join(name), content).unwrap();
        let out = slipway(d, &["keygen", "file.key", "--passphrase-file", name], &[]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("the passphrase file {name} is empty")),
            "{name}: {}",
            stderr(&out)
        );
        assert!(!d.join("file.key").exists(), "{name} made a key");
    }
}

/// Writes `dir/bin/TOOL` for each tool: a script that tries to read its parent's (slipway's)
/// initial environment from `/proc`, records what it got (or `unreadable`) in `dir/env/TOOL`,
/// and fails.
fn environ_readers(dir: &Path, tools: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    let dumps = dir.join("env");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&dumps).unwrap();
    for tool in tools {
        let dump = dumps.join(tool);
        let script = bin.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nparent=$(cat /proc/$PPID/comm)\n\
                 if environ=$(tr '\\0' '\\n' < /proc/$PPID/environ); then\n  \
                 printf '%s\\n%s\\n' \"$parent\" \"$environ\" > '{dump}'\n\
                 else\n  printf '%s\\nunreadable\\n' \"$parent\" > '{dump}'\nfi\n\
                 echo 'spy: no archive here' >&2\nexit 1\n",
                dump = dump.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dumps
}

/// An unprivileged user to run slipway as (the tests run as root, where every process's
/// `/proc/PID/environ` is readable anyway).
const NOBODY: &str = "65534";

#[test]
fn a_tool_run_by_slipway_as_the_same_user_cannot_read_the_passphrase_from_proc() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run slipway as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    encrypted_key_and_recipe(d);
    let dumps = environ_readers(d, &["apt-cache", "apt-get"]);
    // Everything the unprivileged slipway touches belongs to it.
    let chown = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(d)
        .status()
        .unwrap();
    assert!(chown.success());
    let path = format!(
        "{}:{}",
        d.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let build = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_slipway"),
            "build",
            "tiny-linux.toml",
            "--key",
            "release.key",
            "--passphrase-env",
            VAR,
        ])
        .current_dir(d)
        .env("SLIPWAY_CACHE", d.join("cache"))
        .env("HOME", d)
        .env(VAR, PASSPHRASE)
        .env("PATH", &path)
        .output()
        .unwrap();
    let seen = spy_reports(&dumps, &build);
    for (tool, dump) in &seen {
        // The spy's parent is slipway itself, running as the spy's own user...
        assert!(dump.starts_with("slipway\n"), "{tool}: {dump}");
        // ...and its initial environment (where the variable still is) is closed to the spy.
        assert!(
            !dump.contains(PASSPHRASE),
            "{tool} read the passphrase from /proc:\n{dump}"
        );
        assert!(dump.ends_with("unreadable\n"), "{tool}: {dump}");
    }
}
