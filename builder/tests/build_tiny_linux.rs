//! `slipway build` end to end with the real tools: tiny-linux is built from Debian packages,
//! booted under QEMU + OVMF, refused when its root is tampered with, rebuilt byte for byte in
//! another directory (and under another umask, from another working directory), rebuilt from
//! the cache, and diffed against a changed build, whose disk identifiers must differ.

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

/// Runs slipway under `umask`, from `cwd`, and checks that it succeeded.
fn slipway_as(cache: &Path, umask: &str, cwd: &Path, args: &[&str]) -> Output {
    ok(Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .current_dir(cwd)
        .env("SLIPWAY_CACHE", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap())
}

/// Every identifier a built disk carries: the VHDX's FileWriteGuid, DataWriteGuid and disk
/// id, the GPT disk GUID, then each partition's GUID, read from the file itself.
#[derive(Debug, PartialEq, Eq)]
struct DiskIds {
    file_write: String,
    data_write: String,
    disk_id: String,
    gpt_disk: String,
    partitions: Vec<String>,
}

fn disk_ids(vhdx: &Path) -> DiskIds {
    use images::guid::Guid;
    let file = images::vhdx::Vhdx::open(vhdx).unwrap();
    let read =
        |offset: u64, buf: &mut [u8]| file.read_at(buf, offset).map_err(std::io::Error::other);
    // The primary GPT header is LBA 1; the disk GUID is its bytes 56..72.
    let mut header = [0u8; 512];
    read(512, &mut header).unwrap();
    assert_eq!(&header[..8], b"EFI PART");
    let gpt_disk = Guid::from_bytes(header[56..72].try_into().unwrap());
    DiskIds {
        file_write: file.header().file_write_guid.to_string(),
        data_write: file.header().data_write_guid.to_string(),
        disk_id: file.disk_id().to_string(),
        gpt_disk: gpt_disk.to_string(),
        partitions: images::disk::read_partitions(read)
            .unwrap()
            .iter()
            .map(|p| p.unique_guid.to_string())
            .collect(),
    }
}

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(output.stdout).unwrap()[..64].to_owned()
}

#[test]
fn tiny_linux_rebuilds_identically_under_umask_077_and_new_content_gets_new_disk_ids() {
    let stem = "tiny-linux-2026.11.0";
    // Build A: umask 022, run from one directory.
    let a = tempfile::tempdir().unwrap();
    let (cache_a, recipe_a, out_a) = (cache(a.path()), recipe_copy(a.path()), a.path().join("out"));
    let cwd_a = a.path().join("cwd");
    std::fs::create_dir(&cwd_a).unwrap();
    let recipe_arg = recipe_a.to_str().unwrap();
    slipway_as(&cache_a, "022", &cwd_a, &["lock", recipe_arg]);
    let build_a = [
        "build",
        recipe_arg,
        "--out",
        out_a.to_str().unwrap(),
        "--locked",
    ];
    slipway_as(&cache_a, "022", &cwd_a, &build_a);
    let vhdx_a = out_a.join(format!("{stem}.vhdx"));

    // Build B: the same recipe and lock elsewhere, with a cold stage cache, umask 077 and
    // another working directory. Files the build creates get other modes unless it sets them.
    let b = tempfile::tempdir().unwrap();
    let (cache_b, recipe_b, out_b) = (cache(b.path()), recipe_copy(b.path()), b.path().join("out"));
    std::fs::copy(
        recipe_a.with_extension("lock"),
        recipe_b.with_extension("lock"),
    )
    .unwrap();
    let cwd_b = b.path().join("somewhere/else");
    std::fs::create_dir_all(&cwd_b).unwrap();
    let build_b = [
        "build",
        recipe_b.to_str().unwrap(),
        "--out",
        out_b.to_str().unwrap(),
        "--locked",
    ];
    slipway_as(&cache_b, "077", &cwd_b, &build_b);
    let vhdx_b = out_b.join(format!("{stem}.vhdx"));
    assert_eq!(
        sha256(&vhdx_a),
        sha256(&vhdx_b),
        "a build under umask 077 from another directory differs from one under umask 022"
    );
    let manifest_a = manifest(&out_a, stem);
    assert_eq!(manifest_a, manifest(&out_b, stem));
    // The manifest names the tools that shaped the bytes, at their installed versions.
    let tools = manifest_a["build"]["tools"].as_object().unwrap();
    for package in [
        "erofs-utils",
        "cryptsetup-bin",
        "dosfstools",
        "mtools",
        "dpkg",
        "kmod",
    ] {
        let installed = Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", package])
            .output()
            .unwrap();
        assert_eq!(
            tools[package].as_str().unwrap().as_bytes(),
            installed.stdout,
            "{package}"
        );
    }
    assert!(!tools.contains_key("e2fsprogs"), "an EROFS root: {tools:?}");
    let ids_a = disk_ids(&vhdx_a);
    assert_eq!(ids_a, disk_ids(&vhdx_b));

    // Build C: the same name and version with one file changed. A differencing disk made
    // against A must not accept C as its parent: every identifier differs.
    let init = a.path().join("tiny-linux/init");
    let text = std::fs::read_to_string(&init)
        .unwrap()
        .replace("Nothing else to do yet", "Idle");
    std::fs::write(&init, text).unwrap();
    let out_c = a.path().join("out-c");
    let build_c = [
        "build",
        recipe_arg,
        "--out",
        out_c.to_str().unwrap(),
        "--locked",
    ];
    slipway_as(&cache_a, "022", &cwd_a, &build_c);
    let ids_c = disk_ids(&out_c.join(format!("{stem}.vhdx")));
    let pairs = [
        ("FileWriteGuid", &ids_a.file_write, &ids_c.file_write),
        ("DataWriteGuid", &ids_a.data_write, &ids_c.data_write),
        ("VHDX disk id", &ids_a.disk_id, &ids_c.disk_id),
        ("GPT disk GUID", &ids_a.gpt_disk, &ids_c.gpt_disk),
    ];
    for (what, old, new) in pairs {
        assert_ne!(old, new, "{what} is the same for other content");
    }
    assert_eq!(ids_a.partitions.len(), 3);
    for (old, new) in ids_a.partitions.iter().zip(&ids_c.partitions) {
        assert_ne!(old, new, "a partition GUID is the same for other content");
    }
    assert_eq!(
        manifest(&out_c, stem)["disk"]["disk_guid"].as_str(),
        Some(ids_c.gpt_disk.as_str())
    );
}
