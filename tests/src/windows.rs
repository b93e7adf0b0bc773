//! A synthetic Windows install.wim: no Windows media can be had here, so the Windows image
//! tests and the benchmark capture one with `wimlib-imagex capture` from a tree made here. The
//! tree holds Windows-shaped paths, SYSTEM, SOFTWARE and BCD-Template hives written by
//! `images::regf`, and stand-in boot files (bytes that say what they stand in for: nothing
//! here boots).

use std::path::{Path, PathBuf};
use std::process::Command;

use images::regf::{Key, kind, utf16z, write};
use sha2::Digest as _;

/// The edition name the synthetic image carries.
pub const EDITION: &str = "Windows Server 2022 SERVERDATACENTERCORE";

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Bytes of incompressible filler under `Windows\WinSxS` (for the benchmark).
    pub filler: u64,
    /// Make `Windows\Boot\EFI` a symbolic link to this host path instead of a directory.
    pub linked_boot_dir: Option<String>,
    /// Leave the SOFTWARE hive out.
    pub without_software: bool,
    /// wimlib's compression (`none`, `xpress`, `lzx`); `lzx` (install.wim's) when unset.
    pub compress: Option<&'static str>,
}

/// The sources recipes/windows-node.toml needs, made here in a directory of their own: its
/// in-guest files, a synthetic install.wim, stand-in kubelet/kubeadm/kubectl and containerd and
/// CNI tarballs.
pub struct NodeSources {
    dir: tempfile::TempDir,
}

impl NodeSources {
    /// Makes them, the install.wim as `spec` says.
    pub fn new(spec: &Spec) -> NodeSources {
        let sources = NodeSources {
            dir: tempfile::tempdir().unwrap(),
        };
        let files = sources.path("windows-node");
        std::fs::create_dir(&files).unwrap();
        for entry in std::fs::read_dir(recipes().join("windows-node")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), files.join(entry.file_name())).unwrap();
        }
        install_wim(&files, spec);
        for exe in ["kubelet.exe", "kubeadm.exe", "kubectl.exe"] {
            std::fs::write(files.join(exe), format!("stand-in: {exe}\n")).unwrap();
        }
        tarball(
            &sources.path("containerd.tar.gz"),
            "bin",
            &["containerd.exe", "ctr.exe", "containerd-shim-runhcs-v1.exe"],
        );
        tarball(
            &sources.path("cni.tgz"),
            ".",
            &["win-bridge.exe", "win-overlay.exe", "host-local.exe"],
        );
        sources
    }

    /// `rel` in their directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes the reference recipe with its sources pinned to these, a 1 GiB disk, and `edit`
    /// applied; returns its path.
    pub fn recipe(&self, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
        let text = std::fs::read_to_string(recipes().join("windows-node.toml")).unwrap();
        let mut recipe: toml::Table = text.parse().unwrap();
        let sources = recipe["sources"].as_table_mut().unwrap();
        let local = |path: &str, unpack: bool| {
            let mut t = toml::Table::new();
            t.insert("path".into(), path.into());
            let digest = sha2::Sha256::digest(std::fs::read(self.path(path)).unwrap());
            t.insert("sha256".into(), images::oci::artifact::hex(&digest).into());
            if unpack {
                t.insert("unpack".into(), true.into());
            }
            toml::Value::Table(t)
        };
        sources.insert("base".into(), local("windows-node/install.wim", false));
        for exe in ["kubelet", "kubeadm", "kubectl"] {
            sources.insert(exe.into(), local(&format!("windows-node/{exe}.exe"), false));
        }
        sources.insert("containerd".into(), local("containerd.tar.gz", true));
        sources.insert("cni".into(), local("cni.tgz", true));
        recipe["disk"]
            .as_table_mut()
            .unwrap()
            .insert("size".into(), "1G".into());
        edit(&mut recipe);
        let path = self.path("windows-node.toml");
        std::fs::write(&path, toml::to_string(&recipe).unwrap()).unwrap();
        path
    }
}

/// The workspace's recipes/ directory.
fn recipes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes")
}

/// A gzipped tarball at `path` of stand-in files `names` under `prefix`.
fn tarball(path: &Path, prefix: &str, names: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(prefix)).unwrap();
    let mut tar = Command::new("tar");
    tar.arg("czf").arg(path).arg("-C").arg(dir.path());
    for name in names {
        std::fs::write(
            dir.path().join(prefix).join(name),
            format!("stand-in: {name}\n"),
        )
        .unwrap();
        tar.arg(format!("{prefix}/{name}"));
    }
    crate::run(&mut tar);
}

/// Captures a synthetic install.wim at `dir/install.wim`; returns its path.
pub fn install_wim(dir: &Path, spec: &Spec) -> PathBuf {
    let tree = dir.join("wim-tree");
    let file = |rel: &str, bytes: &[u8]| {
        let path = tree.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    let epoch = 1_700_000_000;
    file(
        "Windows/System32/config/SYSTEM",
        &write(&system_hive(), epoch).unwrap(),
    );
    if !spec.without_software {
        file(
            "Windows/System32/config/SOFTWARE",
            &write(&software_hive(), epoch).unwrap(),
        );
    }
    file(
        "Windows/System32/config/BCD-Template",
        &write(&bcd_template(), epoch).unwrap(),
    );
    file("Windows/System32/winload.efi", b"stand-in: winload.efi\n");
    file("Windows/System32/ntoskrnl.exe", b"stand-in: ntoskrnl.exe\n");
    file(
        "Windows/System32/drivers/etc/hosts",
        b"# stand-in hosts file\r\n",
    );
    match &spec.linked_boot_dir {
        Some(target) => {
            std::fs::create_dir_all(tree.join("Windows/Boot")).unwrap();
            std::os::unix::fs::symlink(target, tree.join("Windows/Boot/EFI")).unwrap();
        }
        None => {
            file("Windows/Boot/EFI/bootmgfw.efi", b"stand-in: bootmgfw.efi\n");
            file("Windows/Boot/EFI/bootmgr.efi", b"stand-in: bootmgr.efi\n");
            file("Windows/Boot/EFI/memtest.efi", b"stand-in: memtest.efi\n");
            file(
                "Windows/Boot/EFI/en-US/bootmgfw.efi.mui",
                b"stand-in: bootmgfw.efi.mui\n",
            );
        }
    }
    file("Windows/Boot/Fonts/segmono_boot.ttf", b"stand-in: font\n");
    for empty in [
        "Program Files",
        "ProgramData/Microsoft",
        "Users/Default",
        "Windows/Temp",
    ] {
        std::fs::create_dir_all(tree.join(empty)).unwrap();
    }
    if spec.filler > 0 {
        filler(&tree.join("Windows/WinSxS"), spec.filler);
    }
    let wim = dir.join("install.wim");
    let out = Command::new("wimlib-imagex")
        .arg("capture")
        .arg(&tree)
        .arg(&wim)
        .arg(EDITION)
        .arg(format!("--compress={}", spec.compress.unwrap_or("lzx")))
        .arg("--no-acls")
        .output()
        .expect("wimlib-imagex (scripts/setup installs wimtools)");
    assert!(
        out.status.success(),
        "wimlib-imagex capture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&tree).unwrap();
    wim
}

/// SYSTEM: the current control set, a service, the computer name.
fn system_hive() -> Key {
    let mut root = Key::new("ROOT");
    root.key(&["Select"])
        .set_dword("Current", 1)
        .set_dword("Default", 1)
        .set_dword("LastKnownGood", 1);
    let set = root.key(&["ControlSet001"]);
    set.key(&["Control", "ComputerName", "ComputerName"])
        .set_string("ComputerName", "MINWINPC");
    set.key(&["Services", "Tcpip", "Parameters"])
        .set_string("Hostname", "minwinpc");
    set.key(&["Services", "W32Time"])
        .set_dword("Start", 3)
        .set_dword("Type", 0x20)
        .set(
            "ImagePath",
            kind::EXPAND_SZ,
            utf16z("%SystemRoot%\\system32\\svchost.exe -k LocalService"),
        );
    root
}

/// SOFTWARE: the product's name and build.
fn software_hive() -> Key {
    let mut root = Key::new("ROOT");
    root.key(&["Microsoft", "Windows NT", "CurrentVersion"])
        .set_string("ProductName", "Windows Server 2022 Datacenter")
        .set_string("CurrentBuild", "20348")
        .set_string("EditionID", "ServerDatacenter");
    root
}

/// BCD-Template: the settings objects Windows' template carries, no boot manager or loader
/// (bcdboot adds those).
fn bcd_template() -> Key {
    let mut root = Key::new("NewStoreRoot");
    root.key(&["Description"])
        .set_string("KeyName", "BCD00000000")
        .set_dword("System", 1)
        .set_dword("TreatAsSystem", 1);
    let objects = [
        // {globalsettings}: inherits {dbgsettings}, {emssettings}, {badmemory}.
        (
            "{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}",
            0x1000_0000u32,
            vec![
                "{4636856e-540f-4170-a130-a84776f4c654}",
                "{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}",
                "{5189b25c-5558-4bf2-bca4-289b11bd29e2}",
            ],
        ),
        // {bootloadersettings}: inherits {globalsettings}, {hypervisorsettings}.
        (
            "{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}",
            0x2020_0003,
            vec![
                "{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}",
                "{7ff607e0-4395-11db-b0de-0800200c9a66}",
            ],
        ),
    ];
    for (id, kind_of, inherits) in objects {
        let object = root.key(&["Objects", id]);
        object.key(&["Description"]).set_dword("Type", kind_of);
        let mut list: Vec<u8> = inherits.iter().flat_map(|g| utf16z(g)).collect();
        list.extend_from_slice(&[0, 0]);
        object
            .key(&["Elements", "14000006"])
            .set("Element", kind::MULTI_SZ, list);
    }
    root
}

/// `bytes` of filler in 64 MiB files, like a system's binaries: half of every 64 KiB is
/// xorshift output no compressor shrinks, half a repeating low-entropy pattern.
fn filler(dir: &Path, bytes: u64) {
    const FILE: u64 = 64 << 20;
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut left = bytes;
    let mut n = 0;
    while left > 0 {
        let len = left.min(FILE);
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap());
        while (data.len() as u64) < len {
            let word = if (data.len() >> 15) % 2 == 0 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            } else {
                (data.len() as u64 / 64) % 251
            };
            data.extend_from_slice(&word.to_le_bytes());
        }
        data.truncate(usize::try_from(len).unwrap());
        std::fs::write(dir.join(format!("filler-{n:04}.bin")), data).unwrap();
        left -= len;
        n += 1;
    }
}
