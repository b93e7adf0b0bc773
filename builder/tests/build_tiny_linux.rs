//! `slipway build` end to end with the real tools: tiny-linux is built from Debian packages,
//! booted under QEMU + OVMF, refused when its root is tampered with, rebuilt byte for byte in
//! another directory, rebuilt from the cache, and diffed against a changed build.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::qemu::Guest;

const BOOTED: &str = "slipway-node: booted tiny-linux 2026.11.0";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A cache directory of its own whose downloads are shared by every test (and every run).
fn cache(dir: &Path) -> PathBuf {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slipway-downloads");
    std::fs::create_dir_all(shared.join("debs")).unwrap();
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(shared.join("debs"), cache.join("debs")).unwrap();
    cache
}

/// A copy of tiny-linux (recipe, its files, its lock) in `dir`.
fn recipe_copy(dir: &Path) -> PathBuf {
    let recipes = repo().join("recipes");
    std::fs::create_dir_all(dir.join("tiny-linux")).unwrap();
    std::fs::copy(recipes.join("tiny-linux/init"), dir.join("tiny-linux/init")).unwrap();
    std::fs::copy(recipes.join("tiny-linux.toml"), dir.join("tiny-linux.toml")).unwrap();
    let _ = std::fs::copy(recipes.join("tiny-linux.lock"), dir.join("tiny-linux.lock"));
    dir.join("tiny-linux.toml")
}

fn slipway(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_CACHE", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "slipway failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// Builds with `--json` and returns the events.
fn build(cache: &Path, recipe: &Path, out: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "build",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = ok(slipway(cache, &args));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stages(events: &[Value], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .map(|e| e["stage"].as_str().unwrap().to_owned())
        .collect()
}

fn manifest(out: &Path, stem: &str) -> Value {
    serde_json::from_slice(&std::fs::read(out.join(format!("{stem}.manifest.json"))).unwrap())
        .unwrap()
}

/// Exports `vhdx`, changes one byte of the root partition inside /sbin/init's `booted` line
/// (so a guest without verity would print it changed), and converts it back to VHDX.
fn tamper(vhdx: &Path, manifest: &Value, dir: &Path) -> PathBuf {
    let raw = dir.join("tampered.raw");
    ok(slipway(
        dir,
        &[
            "vhdx",
            "export",
            vhdx.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    ));
    let root = manifest["disk"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "slipway-root")
        .unwrap();
    let (offset, size) = (
        root["offset"].as_u64().unwrap(),
        root["size"].as_u64().unwrap(),
    );
    let bytes = std::fs::read(&raw).unwrap();
    let range = usize::try_from(offset).unwrap()..usize::try_from(offset + size).unwrap();
    let partition = &bytes[range];
    let needle = b"slipway-node: booted";
    let at = partition
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("init text in the root");
    let byte = offset + at as u64 + "slipway-node: ".len() as u64;
    tests::patch(&raw, byte, b"B");
    let tampered = dir.join("tampered.vhdx");
    ok(slipway(
        dir,
        &[
            "vhdx",
            "convert",
            raw.to_str().unwrap(),
            tampered.to_str().unwrap(),
        ],
    ));
    tampered
}

#[test]
fn tiny_linux_boots_refuses_tampering_and_rebuilds_identically() {
    let a = tempfile::tempdir().unwrap();
    let (cache_a, recipe_a, out_a) = (cache(a.path()), recipe_copy(a.path()), a.path().join("out"));
    // Resolve against today's archive, then build strictly from that lock.
    ok(slipway(&cache_a, &["lock", recipe_a.to_str().unwrap()]));
    let started = Instant::now();
    let events = build(&cache_a, &recipe_a, &out_a, &["--locked"]);
    let cold = started.elapsed();
    let stem = "tiny-linux-2026.11.0";
    let vhdx_a = out_a.join(format!("{stem}.vhdx"));
    let manifest_a = manifest(&out_a, stem);
    assert_eq!(
        stages(&events, "stage-done").len(),
        5,
        "root, initrd, esp, vhdx, disk ran: {events:?}"
    );

    // Every Debian input in the manifest has the digest the lock pinned.
    let lock: toml::Table = std::fs::read_to_string(recipe_a.with_extension("lock"))
        .unwrap()
        .parse()
        .unwrap();
    for input in manifest_a["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "deb")
    {
        let pinned = &lock["inputs"][input["name"].as_str().unwrap()]["sha256"];
        assert_eq!(input["sha256"].as_str(), pinned.as_str(), "{input}");
    }
    // The VHDX is what the manifest says, and sound.
    let digest = Command::new("sha256sum").arg(&vhdx_a).output().unwrap();
    assert!(
        String::from_utf8_lossy(&digest.stdout)
            .starts_with(manifest_a["disk"]["sha256"].as_str().unwrap())
    );
    ok(slipway(
        &cache_a,
        &["vhdx", "check", vhdx_a.to_str().unwrap()],
    ));
    let sbom: Value =
        serde_json::from_slice(&std::fs::read(out_a.join(format!("{stem}.spdx.json"))).unwrap())
            .unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert!(
        sbom["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "busybox-static")
    );

    // Boot the image and a tampered copy side by side.
    let tamper_dir = tempfile::tempdir().unwrap();
    let tampered = tamper(&vhdx_a, &manifest_a, tamper_dir.path());
    let mut good = Guest::boot_uefi(&vhdx_a, "vhdx");
    let mut bad = Guest::boot_uefi(&tampered, "vhdx");

    // The same image with an ext4 root, on request.
    let e = tempfile::tempdir().unwrap();
    let (cache_e, recipe_e, out_e) = (cache(e.path()), recipe_copy(e.path()), e.path().join("out"));
    std::fs::copy(
        recipe_a.with_extension("lock"),
        recipe_e.with_extension("lock"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&recipe_e)
        .unwrap()
        .replace("filesystem = \"erofs\"", "filesystem = \"ext4\"")
        .replace("modules = [", "modules = [\"ext4\", ");
    std::fs::write(&recipe_e, text).unwrap();
    build(&cache_e, &recipe_e, &out_e, &["--locked"]);
    let manifest_e = manifest(&out_e, stem);
    assert!(
        manifest_e["boot"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("slipway.rootfs=ext4")
    );
    assert_ne!(
        manifest_e["disk"]["verity"]["root_hash"],
        manifest_a["disk"]["verity"]["root_hash"]
    );
    let mut ext4 = Guest::boot_uefi(&out_e.join(format!("{stem}.vhdx")), "vhdx");

    // Meanwhile: the same recipe in another directory, later, with a cold stage cache.
    std::thread::sleep(Duration::from_secs(1));
    let b = tempfile::tempdir().unwrap();
    let (cache_b, recipe_b, out_b) = (
        cache(b.path()),
        recipe_copy(b.path()),
        b.path().join("elsewhere/out"),
    );
    std::fs::copy(
        recipe_a.with_extension("lock"),
        recipe_b.with_extension("lock"),
    )
    .unwrap();
    build(&cache_b, &recipe_b, &out_b, &["--locked"]);
    assert!(
        std::fs::read(&vhdx_a).unwrap()
            == std::fs::read(out_b.join(format!("{stem}.vhdx"))).unwrap(),
        "two builds of the same recipe and lock differ"
    );
    assert_eq!(manifest_a, manifest(&out_b, stem));

    // Nothing changed: every stage comes from the cache.
    let started = Instant::now();
    let events = build(&cache_a, &recipe_a, &out_a, &["--locked"]);
    let warm = started.elapsed();
    assert!(
        stages(&events, "stage-done").is_empty(),
        "a rebuild ran stages: {events:?}"
    );
    assert_eq!(stages(&events, "stage-cached").len(), 4);
    eprintln!(
        "tiny-linux build: cold {cold:.2?}, warm {warm:.2?} ({:.1}%)",
        100.0 * warm.as_secs_f64() / cold.as_secs_f64()
    );

    let (found, console) = good.wait_for(&[BOOTED], BOOT_TIMEOUT);
    assert_eq!(
        found.as_deref(),
        Some(BOOTED),
        "the image did not boot:\n{console}"
    );
    let (found, console) = ext4.wait_for(&[BOOTED], BOOT_TIMEOUT);
    assert_eq!(
        found.as_deref(),
        Some(BOOTED),
        "the ext4 image did not boot:\n{console}"
    );
    let (found, console) = bad.wait_for(
        &[
            "slipway-node: booted",
            "slipway-node: Booted",
            "slipway-initrd: powering off",
        ],
        BOOT_TIMEOUT,
    );
    assert_eq!(
        found.as_deref(),
        Some("slipway-initrd: powering off"),
        "tampered image:\n{console}"
    );
    assert!(
        console.contains("is corrupted"),
        "dm-verity did not report the corruption:\n{console}"
    );
    eprintln!(
        "tampered root refused: {}",
        console
            .lines()
            .find(|l| l.contains("is corrupted"))
            .unwrap_or("")
    );

    // A changed file reruns what depends on it, not the initrd; diff says what changed.
    let init = a.path().join("tiny-linux/init");
    let text = std::fs::read_to_string(&init)
        .unwrap()
        .replace("Nothing else to do yet", "Idle");
    std::fs::write(&init, text).unwrap();
    let recipe_text = std::fs::read_to_string(&recipe_a)
        .unwrap()
        .replace("2026.11.0", "2026.12.0");
    std::fs::write(&recipe_a, recipe_text).unwrap();
    let events = build(&cache_a, &recipe_a, &out_a, &["--locked"]);
    assert_eq!(stages(&events, "stage-cached"), ["initrd"], "{events:?}");
    let diff = ok(slipway(
        &cache_a,
        &[
            "diff",
            out_a
                .join(format!("{stem}.manifest.json"))
                .to_str()
                .unwrap(),
            out_a
                .join("tiny-linux-2026.12.0.manifest.json")
                .to_str()
                .unwrap(),
        ],
    ));
    let note = String::from_utf8(diff.stdout).unwrap();
    assert!(note.contains("~ version 2026.11.0 -> 2026.12.0"), "{note}");
    assert!(note.contains("~ /sbin/init "), "{note}");
    assert!(!note.contains("Packages:"), "no package changed:\n{note}");
}
