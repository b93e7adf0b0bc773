//! Windows node images: recipes/windows-node.toml built from a synthetic install.wim (no Windows
//! media can be had here) with stand-in binaries, and read back only by independent tools:
//! wiminfo, sgdisk, ntfsls/ntfscat/ntfssecaudit and libfsntfs's fsntfsinfo, hivexget, mtools
//! and fsck.fat, qemu-img and vhdiinfo. The BCD's device elements are decoded and checked
//! against the GUIDs sgdisk reads. Hostile inputs are refused, leaving no output.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use images::bcd::{self, Device};
use images::guid::Guid;
use images::manifest::Manifest;
use tests::windows::{EDITION, NodeSources, Spec};

/// What a test works in: the recipe's sources ([`NodeSources`]) and the builder run on them.
struct Workspace(NodeSources);

impl Workspace {
    fn new(spec: &Spec) -> Workspace {
        Workspace(NodeSources::new(spec))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.path(rel)
    }

    fn recipe(&self, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
        self.0.recipe(edit)
    }

    fn slipway(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1764460800")
            .output()
            .unwrap()
    }

    fn build(&self, recipe: &Path, out: &str, cache: &str) -> Output {
        self.slipway(&[
            "build",
            recipe.to_str().unwrap(),
            "--out",
            self.path(out).to_str().unwrap(),
            "--cache",
            self.path(cache).to_str().unwrap(),
        ])
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_bytes(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256(path: &Path) -> String {
    run("sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The text after `label` on the line of `text` that has it, trimmed.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        .trim()
}

fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    run("hivexget", &[hive.to_str().unwrap(), key, value])
        .trim()
        .to_owned()
}

/// A partition of `raw` (from sgdisk's figures) copied to its own file.
fn partition(raw: &Path, number: u32, to: &Path) -> String {
    let info = run(
        "sgdisk",
        &["-i", &number.to_string(), raw.to_str().unwrap()],
    );
    let first: u64 = field(&info, "First sector:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let last: u64 = field(&info, "Last sector:")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    run(
        "dd",
        &[
            &format!("if={}", raw.display()),
            &format!("of={}", to.display()),
            "bs=512",
            &format!("skip={first}"),
            &format!("count={}", last - first + 1),
            "conv=sparse",
            "status=none",
        ],
    );
    info
}

fn guid_of(info: &str, label: &str) -> Guid {
    field(info, label)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_reference_recipe_builds_from_a_synthetic_wim_and_every_tool_reads_it_back() {
    let ws = Workspace::new(&Spec::default());
    // As if the agent had run (its state), for the VHDX-base build below to leave out.
    let recipe = ws.recipe(|r| {
        let mut file = toml::Table::new();
        file.insert(
            "path".into(),
            "C:\\ProgramData\\Slipway\\firstboot.state".into(),
        );
        file.insert("text".into(), "{\"next\":\"done\"}".into());
        let win = r["windows"].as_table_mut().unwrap();
        win["files"]
            .as_array_mut()
            .unwrap()
            .push(toml::Value::Table(file));
    });
    let built = ws.build(&recipe, "out", "cache");
    assert!(
        built.status.success(),
        "build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = ws.path("out");
    let vhdx = out.join("windows-node-2026.11.0.vhdx");
    let manifest = Manifest::read(&out.join("windows-node-2026.11.0.manifest.json")).unwrap();
    assert_eq!(manifest.schema, images::manifest::SCHEMA);
    assert_eq!(manifest.os, images::manifest::Os::Windows);
    assert!(manifest.disk.verity.is_none() && manifest.boot.uki_sha256.is_none());
    assert_eq!(manifest.boot.secure_boot, "MicrosoftWindows");
    assert_eq!(manifest.disk.block_size, 32 << 20);
    let facts = manifest.windows.clone().unwrap();
    assert_eq!(facts.edition, EDITION);
    assert_eq!(
        field(
            &run(
                "wiminfo",
                &[ws.path("windows-node/install.wim").to_str().unwrap(), "1"]
            ),
            "Name:"
        ),
        facts.edition,
        "wiminfo names the edition the manifest records"
    );

    // The VHDX: qemu-img and libvhdi agree it is sound.
    run("qemu-img", &["check", vhdx.to_str().unwrap()]);
    let vhdi = run("vhdiinfo", &[vhdx.to_str().unwrap()]);
    assert!(
        vhdi.contains("Dynamic") && vhdi.contains("1073741824 bytes"),
        "{vhdi}"
    );
    let info: serde_json::Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", vhdx.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(info["cluster-size"], 32 << 20, "Hyper-V's 32 MiB blocks");
    let raw = ws.path("disk.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            vhdx.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );

    // GPT: ESP, MSR, basic data, with the manifest's GUIDs.
    let verify = run("sgdisk", &["-v", raw.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let table = run("sgdisk", &["-p", raw.to_str().unwrap()]);
    let disk_guid: Guid = field(&table, "Disk identifier (GUID):").parse().unwrap();
    assert_eq!(disk_guid.to_string(), manifest.disk.disk_guid);
    let esp_info = partition(&raw, 1, &ws.path("esp.img"));
    let msr_info = run("sgdisk", &["-i", "2", raw.to_str().unwrap()]);
    let ntfs_info = partition(&raw, 3, &ws.path("ntfs.img"));
    assert!(
        esp_info.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)"),
        "{esp_info}"
    );
    assert!(
        msr_info.contains("E3C9E316-0B5C-4DB8-817D-F92DF00215AE (Microsoft reserved)"),
        "{msr_info}"
    );
    assert!(
        ntfs_info.contains("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 (Microsoft basic data)"),
        "{ntfs_info}"
    );
    assert_eq!(
        field(&msr_info, "Partition size:")
            .split_whitespace()
            .next(),
        Some("32768")
    );
    let esp_guid = guid_of(&esp_info, "Partition unique GUID:");
    let ntfs_guid = guid_of(&ntfs_info, "Partition unique GUID:");
    let recorded: Vec<String> = manifest
        .disk
        .partitions
        .iter()
        .map(|p| p.guid.clone())
        .collect();
    assert_eq!(recorded[0], esp_guid.to_string());
    assert_eq!(recorded[2], ntfs_guid.to_string());

    // The ESP: a sound FAT, the image's own boot manager at both paths, and a BCD store whose
    // devices name the partitions sgdisk reads.
    let esp = ws.path("esp.img");
    run("fsck.fat", &["-n", esp.to_str().unwrap()]);
    let esp_arg = esp.to_str().unwrap();
    let bootx64 = run_bytes("mtype", &["-i", esp_arg, "::/EFI/Boot/bootx64.efi"]);
    assert_eq!(bootx64, b"stand-in: bootmgfw.efi\n");
    let mui = run_bytes(
        "mtype",
        &[
            "-i",
            esp_arg,
            "::/EFI/Microsoft/Boot/en-US/bootmgfw.efi.mui",
        ],
    );
    assert_eq!(mui, b"stand-in: bootmgfw.efi.mui\n");
    let bcd_path = ws.path("BCD");
    run(
        "mcopy",
        &[
            "-n",
            "-i",
            esp_arg,
            "::/EFI/Microsoft/Boot/BCD",
            bcd_path.to_str().unwrap(),
        ],
    );
    assert_eq!(sha256(&bcd_path), facts.bcd_sha256);
    let bootmgr = "\\Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
    let loader = format!("\\Objects\\{{{}}}", facts.loader.to_lowercase());
    let element = |object: &str, element: &str| {
        let bytes = run_bytes(
            "hivexget",
            &[
                bcd_path.to_str().unwrap(),
                &format!("{object}\\Elements\\{element}"),
                "Element",
            ],
        );
        bcd::decode(u32::from_str_radix(element, 16).unwrap(), 3, &bytes).unwrap()
    };
    let device = |d: bcd::ElementValue| match d {
        bcd::ElementValue::Device(Device::Partition { disk, partition }) => (disk, partition),
        other => panic!("not a partition device: {other:?}"),
    };
    assert_eq!(
        device(element(bootmgr, "11000001")),
        (disk_guid, esp_guid),
        "{{bootmgr}} device"
    );
    assert_eq!(
        device(element(&loader, "11000001")),
        (disk_guid, ntfs_guid),
        "loader device"
    );
    assert_eq!(
        device(element(&loader, "21000001")),
        (disk_guid, ntfs_guid),
        "loader osdevice"
    );
    assert_eq!(
        hivexget(
            &bcd_path,
            &format!("{bootmgr}\\Elements\\12000002"),
            "Element"
        ),
        "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"
    );
    assert_eq!(
        hivexget(
            &bcd_path,
            &format!("{loader}\\Elements\\12000002"),
            "Element"
        ),
        "\\Windows\\system32\\winload.efi"
    );
    assert_eq!(
        hivexget(
            &bcd_path,
            &format!("{loader}\\Elements\\22000002"),
            "Element"
        ),
        "\\Windows"
    );
    assert_eq!(
        hivexget(
            &bcd_path,
            &format!("{bootmgr}\\Elements\\23000003"),
            "Element"
        )
        .to_lowercase(),
        format!("{{{}}}", facts.loader.to_lowercase())
    );
    // The template's own objects are still there.
    assert_eq!(
        hivexget(
            &bcd_path,
            "\\Objects\\{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}\\Description",
            "Type"
        ),
        "538968067"
    );

    // The Windows volume, read by ntfs-3g and by libfsntfs.
    let ntfs = ws.path("ntfs.img");
    let ntfs_arg = ntfs.to_str().unwrap();
    let cat = |path: &str| run_bytes("ntfscat", &[ntfs_arg, path]);
    assert_eq!(cat("/k/kubelet.exe"), b"stand-in: kubelet.exe\n");
    assert_eq!(
        cat("/Program Files/containerd/bin/containerd.exe"),
        b"stand-in: containerd.exe\n"
    );
    assert_eq!(
        cat("/opt/cni/bin/win-overlay.exe"),
        b"stand-in: win-overlay.exe\n"
    );
    assert_eq!(
        cat("/Windows/System32/winload.efi"),
        b"stand-in: winload.efi\n",
        "the base image is there"
    );
    assert_eq!(
        cat("/ProgramData/Slipway/firstboot.ps1"),
        std::fs::read(ws.path("windows-node/firstboot.ps1")).unwrap()
    );
    let unattend = String::from_utf8(cat("/Windows/Panther/Unattend.xml")).unwrap();
    assert!(unattend.contains("<Model>windows-node 2026.11.0</Model>") && !unattend.contains("{{"));
    let image_json: serde_json::Value =
        serde_json::from_slice(&cat("/ProgramData/Slipway/image.json")).unwrap();
    assert_eq!(image_json["kubernetes"], "v1.32.10");
    let setup = cat("/Windows/Setup/Scripts/SetupComplete.cmd");
    assert!(setup.windows(2).any(|w| w == b"\r\n"), "CRLF kept");
    let listing = run("ntfsls", &["-R", "-p", "/", ntfs_arg]);
    assert!(
        listing.contains("/etc/kubernetes") || listing.contains("kubernetes"),
        "{listing}"
    );
    for path in ["\\k\\kubelet.exe", "\\ProgramData\\Slipway\\firstboot.ps1"] {
        let info = run("fsntfsinfo", &["-F", path, ntfs_arg]);
        assert!(
            info.contains("Size") || info.contains("size"),
            "fsntfsinfo {path}: {info}"
        );
    }
    // What the build placed has its own security: Users may run the kubelet, and may not read
    // Slipway's directory (the join token will be there).
    const USERS: &str = "01020000 00000005 20000000 21020000";
    let kubelet_sd = run("ntfssecaudit", &["-v", ntfs_arg, "/k/kubelet.exe"]);
    assert!(
        kubelet_sd.contains("Windows owner S-1-5-32-544") && kubelet_sd.contains(USERS),
        "{kubelet_sd}"
    );
    let slipway_sd = run("ntfssecaudit", &["-v", ntfs_arg, "/ProgramData/Slipway"]);
    assert!(
        slipway_sd.contains("Windows owner S-1-5-32-544") && !slipway_sd.contains(USERS),
        "{slipway_sd}"
    );

    // The registry: every value and service the recipe set, and what the base had, kept.
    let system = ws.path("SYSTEM");
    std::fs::write(&system, cat("/Windows/System32/config/SYSTEM")).unwrap();
    let software = ws.path("SOFTWARE");
    std::fs::write(&software, cat("/Windows/System32/config/SOFTWARE")).unwrap();
    let kubelet = "\\ControlSet001\\Services\\kubelet";
    assert!(
        hivexget(&system, kubelet, "ImagePath")
            .starts_with("\"C:\\k\\kubelet.exe\" --windows-service ")
    );
    assert_eq!(hivexget(&system, kubelet, "Start"), "3");
    assert_eq!(hivexget(&system, kubelet, "Type"), "16");
    assert_eq!(hivexget(&system, kubelet, "ObjectName"), "LocalSystem");
    assert_eq!(hivexget(&system, kubelet, "DependOnService"), "containerd");
    assert_eq!(
        hivexget(
            &system,
            "\\ControlSet001\\Services\\containerd",
            "ImagePath"
        ),
        "\"C:\\Program Files\\containerd\\bin\\containerd.exe\" --run-service --log-file=C:\\ProgramData\\containerd\\containerd.log"
    );
    assert!(
        hivexget(
            &system,
            "\\ControlSet001\\Control\\Session Manager\\Environment",
            "Path"
        )
        .ends_with(";C:\\k;C:\\Program Files\\containerd\\bin")
    );
    assert_eq!(
        hivexget(
            &software,
            "\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU",
            "NoAutoUpdate"
        ),
        "1"
    );
    assert_eq!(
        hivexget(&system, "\\ControlSet001\\Services\\W32Time", "Start"),
        "3",
        "the base's own values are kept"
    );
    assert_eq!(
        hivexget(
            &software,
            "\\Microsoft\\Windows NT\\CurrentVersion",
            "CurrentBuild"
        ),
        "20348"
    );
    assert_eq!(
        facts.services["kubelet"],
        hivexget(&system, kubelet, "ImagePath")
    );

    // `slipway inspect` reads the same back from the VHDX alone.
    let inspect = ws.slipway(&["inspect", vhdx.to_str().unwrap(), "--json"]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(report["partitions"].as_array().unwrap().len(), 3);
    let entry = &report["boot_entries"][0];
    assert_eq!(entry["default"], true);
    assert_eq!(entry["path"], "\\Windows\\system32\\winload.efi");
    assert!(
        entry["os_device"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains(&ntfs_guid.to_string().to_lowercase()),
        "{entry}"
    );
    let services: BTreeMap<String, String> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["start"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(services["kubelet"], "demand");
    assert_eq!(services["W32Time"], "demand");
    for row in report["registry"].as_array().unwrap() {
        assert_eq!(row["found"], row["recorded"], "{row}");
    }
    assert_eq!(report["registry"].as_array().unwrap().len(), 2);

    // Signed, `slipway verify` checks the VHDX against its manifest and the signature; a
    // tampered copy is refused.
    let key = ws.path("release.key");
    let manifest_path = out.join("windows-node-2026.11.0.manifest.json");
    for args in [
        vec!["keygen", key.to_str().unwrap()],
        vec![
            "sign",
            manifest_path.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    ] {
        let done = ws.slipway(&args);
        assert!(
            done.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    let public = format!("{}.pub", key.display());
    let verified = ws.slipway(&["verify", manifest_path.to_str().unwrap(), "--key", &public]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let tampered = ws.path("tampered");
    std::fs::create_dir(&tampered).unwrap();
    for entry in std::fs::read_dir(&out).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tampered.join(entry.file_name())).unwrap();
    }
    let copy = tampered.join("windows-node-2026.11.0.vhdx");
    let mut bytes = std::fs::read(&copy).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&copy, bytes).unwrap();
    let refused = ws.slipway(&[
        "verify",
        tampered
            .join("windows-node-2026.11.0.manifest.json")
            .to_str()
            .unwrap(),
        "--key",
        &public,
    ]);
    assert!(!refused.status.success(), "a tampered VHDX verified");

    // A second build from nothing gives the same bytes.
    let again = ws.build(&recipe, "out2", "cache2");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        sha256(&ws.path("out2/windows-node-2026.11.0.vhdx")),
        sha256(&vhdx),
        "byte-identical rebuild"
    );

    // That image, as a sysprepped base VHDX, is the base of another build: its Windows
    // partition is captured and built from like an install.wim.
    std::fs::copy(&vhdx, ws.path("windows-node/base.vhdx")).unwrap();
    let layered = ws.recipe(|r| {
        r["image"]
            .as_table_mut()
            .unwrap()
            .insert("name".into(), "windows-layered".into());
        let mut base = toml::Table::new();
        base.insert("path".into(), "windows-node/base.vhdx".into());
        base.insert("sha256".into(), sha256(&vhdx).into());
        r["sources"]
            .as_table_mut()
            .unwrap()
            .insert("golden".into(), toml::Value::Table(base));
        let mut select = toml::Table::new();
        select.insert("source".into(), "golden".into());
        select.insert("vhdx".into(), true.into());
        let win = r["windows"].as_table_mut().unwrap();
        win.insert("base".into(), toml::Value::Table(select));
        let mut file = toml::Table::new();
        file.insert("path".into(), "C:\\k\\second.txt".into());
        file.insert("text".into(), "second build\n".into());
        win["files"]
            .as_array_mut()
            .unwrap()
            .push(toml::Value::Table(file));
    });
    let second = ws.build(&layered, "out-layered", "cache");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let layered_vhdx = ws.path("out-layered/windows-layered-2026.11.0.vhdx");
    let raw2 = ws.path("layered.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            layered_vhdx.to_str().unwrap(),
            raw2.to_str().unwrap(),
        ],
    );
    let ntfs2 = ws.path("layered-ntfs.img");
    partition(&raw2, 3, &ntfs2);
    let cat2 = |path: &str| run_bytes("ntfscat", &[ntfs2.to_str().unwrap(), path]);
    assert_eq!(cat2("/k/second.txt"), b"second build\n");
    assert_eq!(
        cat2("/k/kubelet.exe"),
        b"stand-in: kubelet.exe\n",
        "the base VHDX's files"
    );
    let state = Command::new("ntfscat")
        .args([
            ntfs2.to_str().unwrap(),
            "/ProgramData/Slipway/firstboot.state",
        ])
        .output()
        .unwrap();
    assert!(
        !state.status.success(),
        "a node's first-boot state is left out of the capture"
    );
    assert_eq!(
        cat2("/ProgramData/Slipway/firstboot.ps1"),
        std::fs::read(ws.path("windows-node/firstboot.ps1")).unwrap(),
        "the build places the agent again"
    );
    let system2 = ws.path("SYSTEM2");
    std::fs::write(&system2, cat2("/Windows/System32/config/SYSTEM")).unwrap();
    assert_eq!(hivexget(&system2, kubelet, "DependOnService"), "containerd");
    let sd = run(
        "ntfssecaudit",
        &["-v", ntfs2.to_str().unwrap(), "/ProgramData/Slipway"],
    );
    assert!(!sd.contains(USERS), "descriptors survive the capture: {sd}");

    // A changed registry value and service show in `slipway diff`.
    let changed = ws.recipe(|r| {
        r["image"]
            .as_table_mut()
            .unwrap()
            .insert("version".into(), "2026.12.0".into());
        let win = r["windows"].as_table_mut().unwrap();
        let registry = win["registry"].as_array_mut().unwrap();
        registry[0]
            .as_table_mut()
            .unwrap()
            .insert("value".into(), 0.into());
    });
    let rebuilt = ws.build(&changed, "out3", "cache");
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let diff = ws.slipway(&[
        "diff",
        out.join("windows-node-2026.11.0.manifest.json")
            .to_str()
            .unwrap(),
        ws.path("out3/windows-node-2026.12.0.manifest.json")
            .to_str()
            .unwrap(),
    ]);
    let diff = String::from_utf8_lossy(&diff.stdout).into_owned();
    assert!(
        diff.contains("Registry (Windows):")
            && diff.contains("SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU\\NoAutoUpdate dword:1 -> dword:0"),
        "{diff}"
    );
}

/// Builds `recipe` expecting failure: returns stderr, having checked nothing was published.
fn build_fails(ws: &Workspace, recipe: &Path) -> String {
    let built = ws.build(recipe, "out", "cache");
    let stderr = String::from_utf8_lossy(&built.stderr).into_owned();
    assert!(!built.status.success(), "built anyway: {stderr}");
    let out = ws.path("out");
    let published = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
    assert_eq!(published, 0, "a failed build left output: {stderr}");
    stderr
}

#[test]
fn hostile_bases_and_edits_are_refused_leaving_no_output() {
    // A base whose boot files are a link out of the image.
    let ws = Workspace::new(&Spec {
        linked_boot_dir: Some("/etc".into()),
        ..Spec::default()
    });
    let stderr = build_fails(&ws, &ws.recipe(|_| {}));
    assert!(
        stderr.contains("refusing the base image") && stderr.contains("link"),
        "{stderr}"
    );

    // A registry edit on a hive the base does not have.
    let ws = Workspace::new(&Spec {
        without_software: true,
        ..Spec::default()
    });
    let stderr = build_fails(&ws, &ws.recipe(|_| {}));
    assert!(
        stderr.contains("windows-node.toml:") && stderr.contains("no SOFTWARE hive"),
        "{stderr}"
    );

    // A layer whose link a recipe file would be written through: refused, the host file the
    // link names untouched.
    let ws = Workspace::new(&Spec::default());
    let victim = ws.path("victim");
    std::fs::write(&victim, "host file\n").unwrap();
    let linked = ws.path("linked");
    std::fs::create_dir_all(linked.join("bin")).unwrap();
    std::fs::write(linked.join("bin/containerd.exe"), "stand-in\n").unwrap();
    std::os::unix::fs::symlink(&victim, linked.join("config.toml")).unwrap();
    run(
        "tar",
        &[
            "czf",
            ws.path("containerd.tar.gz").to_str().unwrap(),
            "-C",
            linked.to_str().unwrap(),
            "bin",
            "config.toml",
        ],
    );
    let stderr = build_fails(&ws, &ws.recipe(|_| {}));
    assert!(stderr.contains("link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file\n");

    // Two spellings of one directory (Windows compares names ignoring case, wimlib does not).
    let ws = Workspace::new(&Spec::default());
    let recipe = ws.recipe(|r| {
        let win = r["windows"].as_table_mut().unwrap();
        let mut file = toml::Table::new();
        file.insert("path".into(), "C:\\K\\other.txt".into());
        file.insert("text".into(), "x".into());
        win["files"]
            .as_array_mut()
            .unwrap()
            .push(toml::Value::Table(file));
    });
    let stderr = build_fails(&ws, &recipe);
    assert!(stderr.contains("name the same file on Windows"), "{stderr}");

    // A base whose sha256 is not the pinned one.
    let ws = Workspace::new(&Spec::default());
    let recipe = ws.recipe(|r| {
        let base = r["sources"]["base"].clone();
        let mut base = base.as_table().unwrap().clone();
        base.insert("sha256".into(), "ab".repeat(32).into());
        r["sources"]
            .as_table_mut()
            .unwrap()
            .insert("base".into(), toml::Value::Table(base));
    });
    let stderr = build_fails(&ws, &recipe);
    assert!(
        stderr.contains("is pinned: refusing it") && stderr.contains("base"),
        "{stderr}"
    );

    // An edition the WIM does not hold.
    let recipe = ws.recipe(|r| {
        let mut base = toml::Table::new();
        base.insert("source".into(), "base".into());
        base.insert(
            "edition".into(),
            "Windows Server 2022 SERVERSTANDARD".into(),
        );
        r["windows"]
            .as_table_mut()
            .unwrap()
            .insert("base".into(), toml::Value::Table(base));
    });
    let stderr = build_fails(&ws, &recipe);
    assert!(
        stderr.contains("has no image Windows Server 2022 SERVERSTANDARD")
            && stderr.contains(EDITION),
        "{stderr}"
    );
}
