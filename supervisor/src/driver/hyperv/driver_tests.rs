//! The Hyper-V driver through a real OpenSSH server whose `powershell` is the fake Hyper-V host
//! (`tests::sshd::FakeHyperV`): a node's whole life (make, boot, beacon, stop, swap to another
//! image, drop the old disk, remove) as the daemon drives it, and a failing plan as a status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use ::tests::sshd::{FakeHyperV, Fault};
use serde_json::json;
use sha2::Digest as _;

use super::*;
use crate::config::hyperv::{Executor as HostExecutor, SshTarget};
use crate::driver::NetSpec;

const ROOT: &str = r"C:\Slipway";

fn host(fake: &FakeHyperV) -> HyperVHost {
    HyperVHost {
        executor: HostExecutor::Ssh(SshTarget {
            target: fake.target(),
            port: Some(fake.port()),
            identity: Some(fake.identity()),
            known_hosts: Some(fake.known_hosts()),
        }),
        switch: "Cluster Switch".to_owned(),
        root: ROOT.to_owned(),
    }
}

/// A raw NoCloud seed as the daemon writes it: a FAT volume with kubeadm.yaml and a
/// network-config.
fn raw_seed(path: &Path, kubeadm: &str, address: &str) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    ::tests::run(Command::new("mkfs.vfat").args(["-n", "CIDATA"]).arg(path));
    let network =
        format!("version: 2\nethernets:\n  node:\n    addresses:\n      - {address}/24\n");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("kubeadm.yaml", kubeadm), ("network-config", &network)] {
        std::fs::write(dir.path().join(name), text).unwrap();
        ::tests::run(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(path)
                .arg(dir.path().join(name))
                .arg(format!("::/{name}")),
        );
    }
}

/// A small VHDX standing for a node image, distinct per `fill`.
fn image(path: &Path, fill: u8) -> String {
    let raw = path.with_extension("raw");
    std::fs::write(&raw, vec![fill; 1 << 20]).unwrap();
    ::tests::convert(
        &raw,
        path,
        &images::vhdx::Options::new(images::vhdx::Identity::derived(&fill.to_string())),
    );
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn spec(state: &Path, base: &Path, image: &str, seed: &Path, secure_boot: &str) -> VmSpec {
    VmSpec {
        name: "w-1".into(),
        dir: state.join("nodes/w-1"),
        base: base.to_owned(),
        image: image.to_owned(),
        seed: seed.to_owned(),
        state_disk: 1 << 30,
        cpus: 2,
        memory: 2 << 30,
        mac: "02:ab:00:00:00:01".into(),
        network: NetSpec {
            cluster: "lab".into(),
            gateway: "10.44.0.1".parse().unwrap(),
            prefix: 24,
        },
        secure_boot: secure_boot.to_owned(),
    }
}

/// The beacon line the polled port hands on first, within a minute.
async fn first_beacon(port: &Port) -> crate::beacon::Beacon {
    let Port::Poll(source) = port else {
        panic!("Hyper-V beacons are polled, got {port:?}");
    };
    let start = Instant::now();
    loop {
        if let Some(line) = source.read().await.unwrap() {
            return serde_json::from_str(&line).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no beacon");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lives_and_swaps_through_the_plans() {
    let fake = FakeHyperV::start_with(0.5);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    std::fs::create_dir_all(state.join("nodes/w-1")).unwrap();
    let (old_base, new_base) = (work.path().join("old.vhdx"), work.path().join("new.vhdx"));
    let (old, new) = (image(&old_base, 1), image(&new_base, 2));
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_owned();
    fake.set_images(&json!({
        hex(&old): {"name": "win-node", "version": "1", "root_hash": "r1"},
        hex(&new): {"name": "win-node", "version": "2", "root_hash": "r2"},
    }));
    let kubeadm = "kind: JoinConfiguration\n";
    let seed = work.path().join("seed.img");
    raw_seed(&seed, kubeadm, "10.44.0.21");
    let driver = HyperV::open(&host(&fake), &state);
    driver.vlans.lock().unwrap().insert("lab".into(), 12);
    let dir = state.join("nodes/w-1");
    let first = spec(&state, &old_base, &old, &seed, "MicrosoftWindows");

    driver.prepare(&first).await.unwrap();
    let vm = &fake.state()["vms"]["w-1"];
    assert_eq!(vm["vlan"], 12, "the cluster's VLAN: {vm}");
    assert_eq!(vm["mac"], "02AB00000001");
    assert_eq!(vm["secure_boot_template"], "MicrosoftWindows");
    assert_eq!(vm["directory"], r"C:\Slipway\vms\w-1");
    let uploaded = fake.host_path(&format!(r"{ROOT}\images\{}.vhdx", hex(&old)));
    assert_eq!(
        std::fs::read(&uploaded).unwrap(),
        std::fs::read(&old_base).unwrap(),
        "the image arrives whole"
    );
    assert_eq!(driver.status("w-1", &dir).await, VmStatus::Stopped);

    let pid = driver.start(&first).await.unwrap();
    assert!(pid > 0);
    assert_eq!(driver.status("w-1", &dir).await, VmStatus::Running { pid });
    let beacon = first_beacon(&driver.beacon(&dir)).await;
    assert_eq!(
        (beacon.event.as_str(), beacon.version.as_str()),
        ("ready", "1")
    );
    let kubeadm_sha: String = sha2::Sha256::digest(kubeadm.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        beacon.kubeadm_sha256, kubeadm_sha,
        "the guest read our seed"
    );
    assert_eq!(beacon.address, "10.44.0.21");
    let local_seed = dir.join("seed.vhdx");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&local_seed).unwrap().permissions().mode() & 0o777,
        0o600,
        "the seed holds a bootstrap token"
    );

    // The swap: stop, a second OS disk over the new image, boot it, then drop the old one.
    let deadlines = StopDeadlines {
        powerdown: Duration::from_secs(30),
        quit: Duration::from_secs(5),
        kill: Duration::from_secs(5),
    };
    let stopped = driver.stop("w-1", &dir, deadlines).await.unwrap();
    assert!(
        matches!(stopped, Stopped::PoweredDown | Stopped::Killed),
        "{stopped:?}"
    );
    assert_eq!(driver.status("w-1", &dir).await, VmStatus::Stopped);
    assert_eq!(
        driver.stop("w-1", &dir, deadlines).await.unwrap(),
        Stopped::AlreadyStopped
    );
    driver.overlay(&dir, &new_base, &new).await.unwrap();
    let seeds = |dir: &str| -> Vec<String> {
        let mut seeds: Vec<String> = std::fs::read_dir(fake.host_path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with("seed"))
            .collect();
        seeds.sort();
        seeds
    };
    let first_seed = seeds(&format!(r"{ROOT}\vms\w-1"));
    assert_eq!(first_seed.len(), 1, "{first_seed:?}");
    // A new seed (a new token) is a new file: the attached one is never rewritten in place.
    raw_seed(&seed, "kind: JoinConfiguration\n", "10.44.0.21");
    let second = spec(&state, &new_base, &new, &seed, "MicrosoftWindows");
    driver.start(&second).await.unwrap();
    let second_seed = seeds(&format!(r"{ROOT}\vms\w-1"));
    assert_eq!(
        second_seed.len(),
        1,
        "the old seed is removed: {second_seed:?}"
    );
    assert_ne!(first_seed, second_seed);
    let beacon = first_beacon(&driver.beacon(&dir)).await;
    assert_eq!(beacon.version, "2", "the VM boots the new image");
    assert_eq!(beacon.boot_count, 2, "on the same state disk");
    let old_disk = fake.host_path(&format!(r"{ROOT}\vms\w-1\os-{}.vhdx", &hex(&old)[..16]));
    assert!(
        old_disk.exists(),
        "kept for a rollback until the swap commits"
    );
    driver.drop_overlays(&dir, &new).await.unwrap();
    assert!(
        !old_disk.exists(),
        "a committed swap drops the previous disk"
    );
    // An image pruned on the host by hand: the disk over it fails once, then the image is
    // looked for and uploaded again.
    let old_image = fake.host_path(&format!(r"{ROOT}\images\{}.vhdx", hex(&old)));
    std::fs::remove_file(&old_image).unwrap();
    let err = driver.overlay(&dir, &old_base, &old).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot find the file"),
        "{err:#}"
    );
    driver.overlay(&dir, &old_base, &old).await.unwrap();
    assert!(old_image.is_file());
    assert!(old_disk.exists());
    driver.drop_overlays(&dir, &new).await.unwrap();

    // A plan failing is a status the daemon reads as "not known", never as stopped.
    fake.inject(Fault {
        action: "status".into(),
        name: None,
        mode: "exit".into(),
        times: 1,
    });
    match driver.status("w-1", &dir).await {
        VmStatus::Paused { status, .. } => assert!(status.starts_with("unknown: "), "{status}"),
        other => panic!("a failed status plan read as {other:?}"),
    }

    driver.stop("w-1", &dir, deadlines).await.unwrap();
    // A removal that fails is an error (the purge keeps its records and can be run again),
    // and leaves the VM and its state disk where they were.
    fake.inject(Fault {
        action: "remove-vm".into(),
        name: None,
        mode: "exit".into(),
        times: 1,
    });
    let err = driver.forget(&dir).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot remove VM w-1 and its disks from the Hyper-V host"),
        "{err:#}"
    );
    assert!(fake.state()["vms"].get("w-1").is_some());
    assert!(fake.host_path(r"C:\Slipway\vms\w-1\state.vhdx").is_file());
    driver.forget(&dir).await.unwrap();
    assert!(fake.state()["vms"].get("w-1").is_none(), "the VM is gone");
    assert!(
        !fake.host_path(r"C:\Slipway\vms\w-1").exists(),
        "with its disks"
    );
}

/// Images the store no longer keeps leave the host, but never one an OS disk rests on (a disk
/// kept for a rollback); one removed is uploaded again when it is wanted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_the_store_no_longer_keeps_leave_the_host_but_no_disks_parent() {
    let fake = FakeHyperV::start_with(0.0);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    std::fs::create_dir_all(state.join("nodes/w-1")).unwrap();
    let bases: Vec<_> = (0..3)
        .map(|i| work.path().join(format!("image-{i}.vhdx")))
        .collect();
    let digests: Vec<String> = (0u8..3)
        .map(|i| image(&bases[i as usize], 10 + i))
        .collect();
    let (kept, unused, parent) = (&digests[0], &digests[1], &digests[2]);
    let driver = HyperV::open(&host(&fake), &state);
    let dir = state.join("nodes/w-1");
    let seed = work.path().join("seed.img");
    raw_seed(&seed, "kind: JoinConfiguration\n", "10.44.0.21");
    // The VM's first OS disk rests on `parent`; a swap to `kept` keeps it for a rollback.
    driver
        .prepare(&spec(&state, &bases[2], parent, &seed, "none"))
        .await
        .unwrap();
    driver.overlay(&dir, &bases[0], kept).await.unwrap();
    driver.stage(&bases[1], unused).await.unwrap();
    let on_host = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fake.host_path(&format!(r"{ROOT}\images\{hex}.vhdx"))
    };
    // Not an image's name: never Slipway's to remove.
    let other = fake.host_path(&format!(r"{ROOT}\images\notes.vhdx"));
    std::fs::write(&other, b"someone's").unwrap();
    for digest in &digests {
        assert!(on_host(digest).is_file(), "{digest}");
    }
    let prunes = || {
        fake.plans()
            .into_iter()
            .filter(|p| p["action"] == "prune-images")
            .collect::<Vec<_>>()
    };

    // A store that keeps nothing prunes nothing: no plan runs.
    driver.prune_images(&BTreeSet::new()).await.unwrap();
    assert!(prunes().is_empty());

    let keep = BTreeSet::from([Digest::new(kept.clone()).unwrap()]);
    // While an image is being uploaded (or a disk made over one) the prune waits for a later
    // pull: it never runs between an upload and the disk over it, nor holds either up. One
    // image's gate never holds up another's.
    {
        let _uploading = driver.using.read().await;
        let gate = driver.images.gate(&driver.image_path(kept).unwrap());
        let _held = gate.lock().await;
        driver.prune_images(&keep).await.unwrap();
        assert!(prunes().is_empty());
        assert!(on_host(unused).is_file());
        let other_gate = driver.images.gate(&driver.image_path(unused).unwrap());
        assert!(other_gate.try_lock().is_ok());
    }
    driver.prune_images(&keep).await.unwrap();
    let plans = prunes();
    assert_eq!(plans.len(), 1);
    assert_eq!(
        plans[0]["params"]["Keep"],
        kept.strip_prefix("sha256:").unwrap()
    );
    assert!(on_host(kept).is_file(), "kept by the store");
    assert!(!on_host(unused).exists(), "kept by nothing: removed");
    assert!(
        on_host(parent).is_file(),
        "the parent of the OS disk kept for a rollback stays"
    );
    assert!(other.is_file());
    // A rollback to the old disk still boots: its parent is there.
    let old = spec(&state, &bases[2], parent, &seed, "none");
    driver.start(&old).await.unwrap();

    // Wanted again, the removed image is uploaded again: the driver forgot it was there.
    driver.stage(&bases[1], unused).await.unwrap();
    assert_eq!(
        std::fs::read(on_host(unused)).unwrap(),
        std::fs::read(&bases[1]).unwrap()
    );

    // A plan that fails is an error for the caller to log.
    fake.inject(Fault {
        action: "prune-images".into(),
        name: None,
        mode: "exit".into(),
        times: 1,
    });
    let err = driver.prune_images(&keep).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot prune the node images on the Hyper-V host"),
        "{err:#}"
    );
    assert!(
        on_host(unused).is_file(),
        "nothing removed by a failed plan"
    );
}

#[test]
fn run_directories_name_their_vms_and_no_node_is_anothers_replacement() {
    let host = HyperVHost {
        executor: HostExecutor::Local,
        switch: "s".into(),
        root: r"D:\Slipway\".into(),
    };
    let driver = HyperV::open(&host, Path::new("/var/lib/slipway"));
    let name = |dir: &str| driver.vm_name(Path::new(dir));
    assert_eq!(name("/var/lib/slipway/nodes/w-1").unwrap(), "w-1");
    assert_eq!(
        name("/var/lib/slipway/nodes/w-1/gen-2").unwrap(),
        "w-1.gen-2"
    );
    assert!(name("/var/lib/slipway/other/w-1").is_err());
    assert!(name("/var/lib/slipway/nodes").is_err());
    assert_eq!(
        driver.vm_dir("w-1"),
        r"D:\Slipway\vms\w-1",
        "no doubled backslash"
    );
    assert!(driver.image_path("sha256:00").is_err());
}

#[test]
fn an_image_asks_for_a_secure_boot_template_hyperv_has() {
    assert_eq!(secure_boot_template("none").unwrap(), "None");
    assert_eq!(
        secure_boot_template("MicrosoftWindows").unwrap(),
        "MicrosoftWindows"
    );
    let error = secure_boot_template("OwnKeys").unwrap_err().to_string();
    assert!(error.contains("OwnKeys"), "{error}");
}

#[test]
fn vm_states_read_as_the_daemon_needs_them() {
    let vm = |exists: bool, state: Option<&str>| parse::VmState {
        exists,
        state: state.map(str::to_owned),
        status: None,
        uptime: None,
        pid: Some(7),
        heartbeat: None,
    };
    assert_eq!(vm_status(&vm(false, None)), VmStatus::Stopped);
    assert_eq!(vm_status(&vm(true, Some("Off"))), VmStatus::Stopped);
    assert_eq!(
        vm_status(&vm(true, Some("Starting"))),
        VmStatus::Running { pid: 7 }
    );
    assert_eq!(
        vm_status(&vm(true, Some("Saved"))),
        VmStatus::Paused {
            pid: 7,
            status: "saved".into()
        }
    );
}
