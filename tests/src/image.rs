//! Small node images for publishing tests: a real VHDX of random data with the manifest that
//! describes it, as `slipway build` would leave them, without the minute a build takes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use images::manifest::{self, Manifest};
use images::vhdx::{Identity, Options};

/// Writes `DIR/NAME-VERSION.vhdx` (`mib` MiB of random data from `seed`) and its manifest;
/// returns the manifest's path.
pub fn make(dir: &Path, name: &str, version: &str, mib: u64, seed: u64) -> PathBuf {
    let raw = dir.join(format!(".{name}-{version}.raw"));
    crate::make_raw(&raw, mib << 20, &[(0, mib << 20)], seed);
    let vhdx = dir.join(format!("{name}-{version}.vhdx"));
    let mut options = Options::new(Identity::derived(&format!("{name}-{version}")));
    options.block_size = 1 << 20;
    crate::convert(&raw, &vhdx, &options);
    std::fs::remove_file(&raw).unwrap();
    let (digest, size) = images::oci::digest_file(&vhdx).unwrap();
    let mut manifest = manifest(manifest::Os::Linux, name, version, None);
    manifest.disk.sha256 = digest.trim_start_matches("sha256:").into();
    manifest.disk.file_size = size;
    manifest.disk.virtual_size = mib << 20;
    let path = dir.join(format!("{name}-{version}.manifest.json"));
    std::fs::write(&path, manifest.to_json()).unwrap();
    path
}

/// A manifest of `os` that passes the manifest's own checks (the facts its OS needs).
pub fn manifest(os: manifest::Os, name: &str, version: &str, kubernetes: Option<&str>) -> Manifest {
    let linux = os == manifest::Os::Linux;
    Manifest {
        schema: manifest::SCHEMA.into(),
        name: name.into(),
        version: version.into(),
        os,
        arch: "x86_64".into(),
        kubernetes: kubernetes.map(Into::into),
        components: BTreeMap::new(),
        inputs: Vec::new(),
        packages: BTreeMap::new(),
        files: BTreeMap::new(),
        disk: manifest::DiskFacts {
            file: format!("{name}-{version}.vhdx"),
            sha256: "0".repeat(64),
            file_size: 0,
            virtual_size: 1 << 30,
            block_size: 1 << 20,
            logical_sector_size: 512,
            disk_guid: String::new(),
            partitions: Vec::new(),
            verity: linux.then(|| manifest::VerityFacts {
                root_hash: String::new(),
                salt: String::new(),
                algorithm: "sha256".into(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 0,
            }),
        },
        boot: manifest::Boot {
            firmware: "uefi".into(),
            secure_boot: if linux { "none" } else { "MicrosoftWindows" }.into(),
            kernel: linux.then(String::new),
            cmdline: linux.then(String::new),
            uki_sha256: linux.then(String::new),
        },
        build: manifest::BuildFacts {
            slipway: "test".into(),
            source_date_epoch: 0,
            tools: BTreeMap::new(),
        },
        windows: (!linux).then(|| manifest::WindowsFacts {
            edition: "Windows Server 2022 SERVERDATACENTERCORE".into(),
            index: 1,
            registry: BTreeMap::new(),
            services: BTreeMap::new(),
            loader: String::new(),
            bcd_sha256: String::new(),
        }),
    }
}
