//! The executors against a real OpenSSH server whose `powershell` is the fake Hyper-V host
//! (`tests::sshd::FakeHyperV`): plans run, answers come back, failures become errors, values
//! that cannot pass are refused before anything runs, files arrive whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ::tests::sshd::{FakeHyperV, Fault};
use serde_json::{Value, json};

use super::*;
use crate::driver::hyperv::plan;

const ROOT: &str = r"C:\Slipway";
const DIR: &str = r"C:\Slipway\vms\w-1";
const STATE_DISK: &str = r"C:\Slipway\vms\w-1\state.vhdx";
const DIGEST: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// The message every plan gives for a VM of the node's name that Slipway did not make.
const FOREIGN: &str = "a VM named w-1 exists that Slipway did not make; rename or remove it";

/// What the tests' node VM asks for; `template` is its Secure Boot template.
fn new_vm<'a>(name: &'a str, template: &'a str) -> plan::NewVm<'a> {
    plan::NewVm {
        name,
        directory: DIR,
        memory_bytes: 2 << 30,
        processors: 2,
        switch: "Cluster Switch",
        mac: "02:ab:00:00:00:01",
        vlan: 12,
        secure_boot_template: template,
        state_disk: STATE_DISK,
        state_disk_bytes: 1 << 30,
    }
}

fn create_vm(name: &str) -> Plan {
    plan::create_vm(&new_vm(name, "MicrosoftWindows"))
}

fn status(name: &str) -> Plan {
    plan::status(name)
}

fn beacon(name: &str) -> Plan {
    plan::beacon(name)
}

fn start_vm(name: &str, os: &str) -> Plan {
    plan::start_vm(name, &format!(r"{DIR}\{os}"), &format!(r"{DIR}\seed.vhdx"))
}

fn os_disk(file: &str) -> Plan {
    plan::os_disk(
        &format!(r"{ROOT}\images\{DIGEST}.vhdx"),
        &format!(r"{DIR}\{file}"),
    )
}

fn drop_os_disks(keep: &str) -> Plan {
    plan::drop_os_disks("w-1", DIR, keep)
}

fn stop_vm() -> Plan {
    plan::stop_vm("w-1", Duration::from_secs(30))
}

fn remove_vm() -> Plan {
    plan::remove_vm("w-1", DIR)
}

fn ssh(fake: &FakeHyperV) -> Executor {
    let mut ssh = Ssh::new(fake.target(), ROOT.to_owned());
    ssh.port = Some(fake.port());
    ssh.identity = Some(fake.identity());
    ssh.known_hosts = Some(fake.known_hosts());
    Executor::Ssh(ssh)
}

async fn json(executor: &Executor, plan: &Plan) -> Value {
    let answer = executor
        .run(plan)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", plan.action));
    serde_json::from_str(&answer).unwrap()
}

/// A whole lifecycle through ssh with the real plans (`plan::*`, whose scripts and parameter
/// names the fake checks against what it emulates): every action's answer, the fake's state
/// after it, and the values as the far side received them (backslashes and spaces intact
/// through the shell).
#[tokio::test]
async fn a_node_lifecycle_runs_over_ssh() {
    let fake = FakeHyperV::start_with(0.5);
    let ex = ssh(&fake);
    let local = tempfile::tempdir().unwrap();
    fake.set_images(&json!({DIGEST: {"name": "windows-node", "version": "1.2.0", "root_hash": "ab".repeat(32)}}));
    let image = local.path().join("image.vhdx");
    std::fs::write(&image, b"a node image stands here").unwrap();
    ex.upload(&image, &format!(r"{ROOT}\images\{DIGEST}.vhdx"))
        .await
        .unwrap();
    let seed = local.path().join("seed.vhdx");
    FakeHyperV::write_seed(&seed, "kind: InitConfiguration\n", "10.44.0.12");
    ex.upload(&seed, &format!(r"{DIR}\seed.vhdx"))
        .await
        .unwrap();

    assert_eq!(
        json(&ex, &create_vm("w-1")).await,
        json!({"created": true, "differs": []})
    );
    assert_eq!(fake.state()["vms"]["w-1"]["notes"], plan::vm_tag("w-1"));
    assert_eq!(
        json(&ex, &create_vm("w-1")).await,
        json!({"created": false, "differs": []})
    );
    // A VM that is there is left as it is; what differs is named.
    let mut other = new_vm("w-1", "None");
    other.memory_bytes = 4 << 30;
    other.vlan = 0;
    assert_eq!(
        json(&ex, &plan::create_vm(&other)).await,
        json!({"created": false, "differs": ["MemoryBytes", "VlanId", "SecureBootTemplate"]})
    );
    assert_eq!(fake.state()["vms"]["w-1"]["memory_bytes"], 2u64 << 30);
    assert_eq!(json(&ex, &status("w-1")).await["state"], "Off");
    assert_eq!(
        json(&ex, &os_disk("os-1.vhdx")).await,
        json!({"created": true})
    );
    assert_eq!(
        json(&ex, &os_disk("os-0.vhdx")).await,
        json!({"created": true})
    );
    assert_eq!(
        json(&ex, &os_disk("os-1.vhdx")).await,
        json!({"created": false})
    );
    let started = json(&ex, &start_vm("w-1", "os-1.vhdx")).await;
    assert_eq!(started["state"], "Running");
    assert!(started["pid"].as_u64().unwrap() > 0);
    let err = ex.run(&start_vm("w-1", "os-1.vhdx")).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Exit { code: Some(1), stderr, .. } if stderr.contains("Start-VM")),
        "{err}"
    );

    // The guest answers once booted (the fake's guests take 0.5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut beacons = 0;
    let items = loop {
        beacons += 1;
        let items = json(&ex, &beacon("w-1")).await["items"].clone();
        if items != json!([]) || Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let item = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .find(|i| i.contains("<VALUE>SlipwayBeacon</VALUE>"))
        .unwrap();
    let data = item
        .split("<PROPERTY NAME=\"Data\" TYPE=\"string\"><VALUE>")
        .nth(1)
        .unwrap()
        .split("</VALUE>")
        .next()
        .unwrap()
        .replace("&quot;", "\"");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["event"], "ready");
    assert_eq!(data["version"], "1.2.0");
    assert_eq!(data["address"], "10.44.0.12");
    assert_eq!(data["boot_count"], 1);
    assert!(data["uptime"].as_f64().unwrap() >= 0.5);
    use sha2::{Digest, Sha256};
    let sha: String = Sha256::digest(b"kind: InitConfiguration\n")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(data["kubeadm_sha256"], sha);
    assert_eq!(
        json(&ex, &status("w-1")).await["heartbeat"],
        "OkApplicationsUnknown"
    );

    // The attached disk is refused; the other goes.
    let err = ex.run(&drop_os_disks("os-0.vhdx")).await.unwrap_err();
    assert!(err.to_string().contains("attached"), "{err}");
    assert_eq!(
        json(&ex, &drop_os_disks("os-1.vhdx")).await,
        json!({"removed": ["os-0.vhdx"]})
    );
    assert_eq!(json(&ex, &stop_vm()).await, json!({"stopped": "shut-down"}));
    assert_eq!(fake.state()["vms"]["w-1"]["state"], "Off");
    assert_eq!(
        json(&ex, &stop_vm()).await,
        json!({"stopped": "already-stopped"})
    );
    assert_eq!(json(&ex, &remove_vm()).await, json!({"removed": true}));
    assert_eq!(json(&ex, &remove_vm()).await, json!({"removed": false}));
    assert_eq!(json(&ex, &status("w-1")).await, json!({"exists": false}));
    assert!(!fake.host_path(DIR).exists());

    let plans = fake.plans();
    assert_eq!(plans.len(), 17 + beacons);
    let vm = &plans[0]["params"];
    assert_eq!(vm["Directory"], DIR);
    assert_eq!(vm["SwitchName"], "Cluster Switch");
    assert_eq!(vm["MemoryBytes"], (2u64 << 30).to_string());
    assert_eq!(vm["MacAddress"], "02AB00000001");
    assert_eq!(plans[0]["script"], create_vm("w-1").file_name());
    // Each script went up once, to R\plans on the C: drive (sftp's `/C:/...`); nothing landed
    // in the account's home directory, where a path without the leading `/` would have gone.
    let uploaded = std::fs::read_dir(fake.host_path(&format!(r"{ROOT}\plans")))
        .unwrap()
        .count();
    assert_eq!(uploaded, 8);
    let home = std::fs::read_dir(fake.host_path(r"C:\Users\root"))
        .unwrap()
        .count();
    assert_eq!(home, 0);
}

/// Each way a plan fails on the host is its own error, carrying the host's message.
#[tokio::test]
async fn faults_on_the_host_become_errors() {
    let fake = FakeHyperV::start_with(0.0);
    let ex = ssh(&fake);
    for mode in ["exit", "stderr", "garbage", "no-markers", "bom-crlf"] {
        fake.inject(Fault {
            action: "status".to_owned(),
            name: Some("w-1".to_owned()),
            mode: mode.to_owned(),
            times: 1,
        });
    }
    let err = ex.run(&status("w-1")).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Exit { code: Some(1), stderr, .. } if stderr == "status : fault injected by the test"),
        "{err:?}"
    );
    let err = ex.run(&status("w-1")).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Stderr { stderr, .. } if stderr.contains("fault injected")),
        "{err:?}"
    );
    let err = ex.run(&status("w-1")).await.unwrap_err();
    assert!(matches!(err, ExecError::BadJson { .. }), "{err:?}");
    let err = ex.run(&status("w-1")).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::NoAnswer { excerpt, .. } if excerpt.contains("exists")),
        "{err:?}"
    );
    // Windows PowerShell 5.1's byte-order mark and CRLF line ends: the answer still reads.
    assert_eq!(json(&ex, &status("w-1")).await, json!({"exists": false}));
    // A fault for another VM leaves this one alone; the faults are used up.
    fake.inject(Fault {
        action: "status".to_owned(),
        name: Some("w-2".to_owned()),
        mode: "exit".to_owned(),
        times: 1,
    });
    assert_eq!(json(&ex, &status("w-1")).await, json!({"exists": false}));

    // A hung host: killed at the deadline.
    fake.inject(Fault {
        action: "status".to_owned(),
        name: None,
        mode: "hang".to_owned(),
        times: 1,
    });
    let mut hung = status("w-1");
    hung.deadline = Duration::from_secs(1);
    let start = Instant::now();
    let err = ex.run(&hung).await.unwrap_err();
    assert!(matches!(err, ExecError::Timeout { secs: 1, .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A value cmd.exe would interpret is refused before ssh runs: nothing reaches the host.
#[tokio::test]
async fn values_that_cannot_pass_are_refused_before_anything_runs() {
    let fake = FakeHyperV::start();
    let ex = ssh(&fake);
    for bad in [
        "w\"-1",
        "w%PATH%",
        "a\nb",
        "x & y",
        "-w1",
        "\u{2013}w1",
        "\u{2015}w1",
    ] {
        let err = ex.run(&status(bad)).await.unwrap_err();
        assert!(matches!(err, ExecError::Refused { .. }), "{bad:?}: {err:?}");
    }
    let err = ex
        .upload(Path::new("/etc/hostname"), r"C:\Slipway\images\*.vhdx")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecError::BadPath { found: '*', .. }),
        "{err:?}"
    );
    assert!(fake.plans().is_empty());
    assert!(!fake.host_path(ROOT).exists());
}

/// A 10 MB file arrives byte for byte, replaces an older one, and no `.part` stays.
#[tokio::test]
async fn an_upload_arrives_whole() {
    let fake = FakeHyperV::start();
    let ex = ssh(&fake);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("image.vhdx");
    let mut bytes = vec![0u8; 10 << 20];
    ::tests::Rng::new(16).fill(&mut bytes);
    std::fs::write(&file, &bytes).unwrap();
    let remote = format!(r"{ROOT}\images\{DIGEST}.vhdx");
    assert!(!ex.exists(&remote).await.unwrap());
    let start = Instant::now();
    ex.upload(&file, &remote).await.unwrap();
    let took = start.elapsed();
    assert!(std::fs::read(fake.host_path(&remote)).unwrap() == bytes);
    assert!(ex.exists(&remote).await.unwrap());
    std::fs::write(&file, b"newer").unwrap();
    ex.upload(&file, &remote).await.unwrap();
    assert_eq!(std::fs::read(fake.host_path(&remote)).unwrap(), b"newer");
    let names: Vec<String> = std::fs::read_dir(fake.host_path(r"C:\Slipway\images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{DIGEST}.vhdx")]);
    eprintln!("10 MiB upload over ssh: {took:?}");
}

/// A host whose key is not the one in known_hosts is refused before anything runs.
#[tokio::test]
async fn an_unknown_host_key_is_refused() {
    let fake = FakeHyperV::start();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    ::tests::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other),
    );
    let known_hosts = dir.path().join("known_hosts");
    let key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{} {key}", fake.port())).unwrap();
    let mut ssh = Ssh::new(fake.target(), ROOT.to_owned());
    ssh.port = Some(fake.port());
    ssh.identity = Some(fake.identity());
    ssh.known_hosts = Some(known_hosts);
    let err = Executor::Ssh(ssh).run(&status("w-1")).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Connect { stderr, .. } if stderr.contains("IDENTIFICATION HAS CHANGED")),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot reach root@127.0.0.1 over SSH")
    );
    assert!(fake.plans().is_empty());
}

/// Runs asked of a host that hangs (it takes the connection and never speaks) each end at
/// their own deadline, together: none waits for another's look for its script, and a timeout
/// leaves nothing that makes the next run look again first.
#[tokio::test(flavor = "current_thread")]
async fn runs_on_a_hung_host_end_together_at_their_deadline() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Holds every connection open, silent.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let fake = FakeHyperV::start();
    let mut ssh = Ssh::new(fake.target(), ROOT.to_owned());
    ssh.port = Some(port);
    ssh.identity = Some(fake.identity());
    ssh.known_hosts = Some(fake.known_hosts());
    let ex = std::sync::Arc::new(Executor::Ssh(ssh));
    let deadline = Duration::from_secs(2);
    let start = Instant::now();
    let mut asks = tokio::task::JoinSet::new();
    for name in ["w-1", "w-2", "w-3", "w-4"] {
        let (ex, plan) = (
            ex.clone(),
            Plan {
                deadline,
                ..status(name)
            },
        );
        asks.spawn(async move { ex.run(&plan).await });
    }
    let results = asks.join_all().await;
    let took = start.elapsed();
    for result in &results {
        assert!(
            matches!(result, Err(ExecError::Timeout { secs: 2, .. })),
            "{result:?}"
        );
    }
    // One after another they would take four deadlines.
    assert!(took < deadline * 3, "{took:?}");
    assert!(fake.plans().is_empty());
}

/// The Local executor runs the program itself, no shell between: the fake's own check of its
/// command line passes, and the plan is copied under root\plans.
#[tokio::test]
async fn the_local_executor_runs_the_program_with_arguments() {
    let fake = FakeHyperV::start();
    let root = fake.root().join("local");
    let ex = Executor::Local(Local::new(fake.local_program(), root.clone()));
    // A Linux image's manifest asks for no Secure Boot: the template None.
    assert_eq!(
        json(&ex, &plan::create_vm(&new_vm("w-1", "None"))).await,
        json!({"created": true, "differs": []})
    );
    assert_eq!(fake.state()["vms"]["w-1"]["secure_boot_template"], "None");
    assert_eq!(json(&ex, &status("w-1")).await["state"], "Off");
    let plans = fake.plans();
    assert_eq!(plans[0]["params"]["SwitchName"], "Cluster Switch");
    assert!(root.join("plans").join(status("w-1").file_name()).is_file());
    let err = ex.run(&status("w-1%")).await.unwrap_err();
    assert!(matches!(err, ExecError::Refused { .. }), "{err:?}");
    let file = root.join("in.bin");
    std::fs::write(&file, b"bytes").unwrap();
    let remote = root.join("a/b/out.bin");
    ex.upload(&file, remote.to_str().unwrap()).await.unwrap();
    assert_eq!(std::fs::read(&remote).unwrap(), b"bytes");
    assert!(ex.exists(remote.to_str().unwrap()).await.unwrap());
}

/// The fixture's sftp behaves as Windows': a path without the leading `/` lands under the
/// account's home directory, not on the drive; the executor's `/C:/...` lands on the drive.
#[tokio::test]
async fn sftp_paths_are_absolute_on_the_drive() {
    let fake = FakeHyperV::start();
    let ex = ssh(&fake);
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("a.bin");
    std::fs::write(&file, b"where am I").unwrap();
    let Executor::Ssh(inner) = &ex else {
        unreachable!()
    };
    let batch = format!(
        "-mkdir C:\n-mkdir C:/Slipway\nput \"{}\" \"C:/Slipway/a.bin\"\n",
        file.display()
    );
    let output = inner
        .sftp(batch, RUN_DEADLINE, "relative put")
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!fake.host_path(r"C:\Slipway\a.bin").exists());
    assert!(fake.host_path(r"C:\Users\root\C:\Slipway\a.bin").is_file());
    ex.upload(&file, r"C:\Slipway\a.bin").await.unwrap();
    assert_eq!(
        std::fs::read(fake.host_path(r"C:\Slipway\a.bin")).unwrap(),
        b"where am I"
    );
    assert!(ex.exists(r"C:\Slipway\a.bin").await.unwrap());
    assert!(!ex.exists(r"C:\Slipway\b.bin").await.unwrap());

    assert_eq!(
        sftp_path(r"C:\Slipway\x.vhdx").unwrap(),
        "/C:/Slipway/x.vhdx"
    );
    assert_eq!(sftp_path("d:/v/x").unwrap(), "/d:/v/x");
    for bad in [r"\\server\share\x", r"Slipway\x", "C:x", "/C:/x", ""] {
        assert!(
            matches!(sftp_path(bad), Err(ExecError::NotDrivePath { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        ex.upload(&file, r"\\server\share\a.bin").await,
        Err(ExecError::NotDrivePath { .. })
    ));
}

/// A VM of the node's name that Slipway did not make is refused by every plan, and left alone.
#[tokio::test]
async fn a_vm_slipway_did_not_make_is_refused_by_every_plan() {
    let fake = FakeHyperV::start_with(0.0);
    let ex = ssh(&fake);
    fake.put_foreign_vm("w-1");
    let plans = [
        create_vm("w-1"),
        status("w-1"),
        beacon("w-1"),
        start_vm("w-1", "os-1.vhdx"),
        stop_vm(),
        drop_os_disks("os-1.vhdx"),
        remove_vm(),
    ];
    for plan in &plans {
        let err = ex.run(plan).await.unwrap_err();
        assert!(
            matches!(&err, ExecError::Exit { code: Some(1), stderr, .. }
                if *stderr == format!("{}: {FOREIGN}", plan.action)),
            "{}: {err}",
            plan.action
        );
    }
    let state = fake.state();
    assert_eq!(state["vms"]["w-1"]["notes"], "");
    assert_eq!(state["vms"]["w-1"]["directory"], r"C:\Hyper-V\w-1");
}

/// A create-vm killed midway leaves a partial VM: taken as absent by the other plans, removed
/// and made again by the next create-vm, its state disk kept.
#[tokio::test]
async fn a_create_vm_killed_midway_is_made_again() {
    let fake = FakeHyperV::start_with(0.0);
    let ex = ssh(&fake);
    fake.inject(Fault {
        action: "create-vm".to_owned(),
        name: Some("w-1".to_owned()),
        mode: "killed".to_owned(),
        times: 1,
    });
    let err = ex.run(&create_vm("w-1")).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Exit {
                code: Some(137),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        fake.state()["vms"]["w-1"]["notes"],
        format!("{}{}", plan::vm_tag("w-1"), plan::PARTIAL_SUFFIX)
    );
    assert_eq!(json(&ex, &status("w-1")).await, json!({"exists": false}));
    let answer = json(&ex, &beacon("w-1")).await;
    assert_eq!(answer["exists"], false);
    let err = ex.run(&start_vm("w-1", "os-1.vhdx")).await.unwrap_err();
    assert!(err.to_string().contains("no VM named w-1"), "{err}");
    // Nothing of the node runs: a stop (a swap's rollback, `slipwayd down`) is no error.
    assert_eq!(
        json(&ex, &stop_vm()).await,
        json!({"stopped": "already-stopped"})
    );
    // What the guest wrote on its state disk survives the remake.
    let disk = fake.host_path(STATE_DISK);
    let mut written: Value = serde_json::from_slice(&std::fs::read(&disk).unwrap()).unwrap();
    written["node_id"] = json!("kept-across-the-remake");
    std::fs::write(&disk, written.to_string()).unwrap();

    assert_eq!(
        json(&ex, &create_vm("w-1")).await,
        json!({"created": true, "differs": []})
    );
    let vm = &fake.state()["vms"]["w-1"];
    assert_eq!(vm["notes"], plan::vm_tag("w-1"));
    assert_eq!(vm["disks"]["1"], STATE_DISK);
    let kept: Value = serde_json::from_slice(&std::fs::read(&disk).unwrap()).unwrap();
    assert_eq!(kept["node_id"], "kept-across-the-remake");
    assert_eq!(json(&ex, &status("w-1")).await["state"], "Off");
}

/// A create-vm killed between New-VM and its first Set-VM leaves a VM with no Notes whose Path
/// is the node's own directory: the next create-vm takes it for its own unfinished VM, removes
/// it and makes it again, the state disk kept. A VM with no Notes anywhere else stays refused.
#[tokio::test]
async fn an_untagged_vm_is_remade_in_the_nodes_directory_and_refused_elsewhere() {
    let fake = FakeHyperV::start_with(0.0);
    let ex = ssh(&fake);
    // Elsewhere: another tool's folder, the directory above the node's, a neighbour's whose
    // name starts with the node's, and a folder inside the node's directory.
    for elsewhere in [
        r"C:\Hyper-V\w-1",
        r"C:\Slipway\vms",
        r"C:\Slipway\vms\w-10",
        r"C:\Slipway\vms\w-1\other",
    ] {
        fake.put_untagged_vm("w-1", elsewhere);
        let err = ex.run(&create_vm("w-1")).await.unwrap_err();
        assert!(
            matches!(&err, ExecError::Exit { code: Some(1), stderr, .. }
                if *stderr == format!("create-vm: {FOREIGN}")),
            "{elsewhere}: {err}"
        );
        let vm = &fake.state()["vms"]["w-1"];
        assert_eq!(
            (vm["notes"].as_str(), vm["directory"].as_str()),
            (Some(""), Some(elsewhere)),
            "left alone"
        );
    }
    // What a guest wrote on the state disk before the run that was killed.
    std::fs::create_dir_all(fake.host_path(DIR)).unwrap();
    let disk = fake.host_path(STATE_DISK);
    let written = json!({"fake_vhdx": "dynamic", "size": 1 << 30, "node_id": "kept"});
    std::fs::write(&disk, written.to_string()).unwrap();
    // The node's directory as given, in another case with a trailing backslash, and the folder
    // named after the VM that Hyper-V may show as its Path.
    for home in [DIR, r"c:\slipway\VMS\W-1\", r"C:\Slipway\vms\w-1\w-1"] {
        fake.put_untagged_vm("w-1", home);
        assert_eq!(
            json(&ex, &create_vm("w-1")).await,
            json!({"created": true, "differs": []}),
            "{home}"
        );
        let vm = &fake.state()["vms"]["w-1"];
        assert_eq!(vm["notes"], plan::vm_tag("w-1"), "{home}");
        assert_eq!(vm["directory"], DIR, "{home}");
        assert_eq!(vm["disks"]["1"], STATE_DISK, "{home}");
        let kept: Value = serde_json::from_slice(&std::fs::read(&disk).unwrap()).unwrap();
        assert_eq!(kept, written, "{home}: the state disk is kept");
    }
    // One that runs is not one New-VM just made: never turned off on a guess.
    fake.put_untagged_vm("w-1", DIR);
    let file = fake.root().join("hyperv.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    state["vms"]["w-1"]["state"] = json!("Running");
    std::fs::write(&file, state.to_string()).unwrap();
    let err = ex.run(&create_vm("w-1")).await.unwrap_err();
    assert!(err.to_string().contains(FOREIGN), "{err}");
    assert_eq!(fake.state()["vms"]["w-1"]["state"], "Running");
}

/// stop-vm says what happened: a guest that hears shutdown requests shuts down; one without the
/// shutdown integration service (or still booting) is turned off.
#[tokio::test]
async fn stop_vm_reports_a_turn_off_as_one() {
    let fake = FakeHyperV::start_with(0.0);
    let ex = ssh(&fake);
    let other = "b".repeat(64);
    fake.set_images(&json!({
        DIGEST: {"name": "windows-node", "version": "1", "root_hash": "ab".repeat(32)},
        other.clone(): {"name": "bare", "version": "1", "root_hash": "cd".repeat(32), "no_shutdown_service": true},
    }));
    for digest in [DIGEST, other.as_str()] {
        std::fs::create_dir_all(fake.host_path(r"C:\Slipway\images")).unwrap();
        std::fs::write(
            fake.host_path(&format!(r"{ROOT}\images\{digest}.vhdx")),
            b"image",
        )
        .unwrap();
    }
    json(&ex, &create_vm("w-1")).await;
    std::fs::write(fake.host_path(&format!(r"{DIR}\seed.vhdx")), b"no seed").unwrap();
    let os = |digest: &str| {
        plan::os_disk(
            &format!(r"{ROOT}\images\{digest}.vhdx"),
            &format!(r"{DIR}\os-{}.vhdx", &digest[..4]),
        )
    };
    let start = |digest: &str| start_vm("w-1", &format!("os-{}.vhdx", &digest[..4]));
    for (digest, how) in [(DIGEST, "shut-down"), (other.as_str(), "turned-off")] {
        json(&ex, &os(digest)).await;
        json(&ex, &start(digest)).await;
        assert_eq!(
            json(&ex, &stop_vm()).await,
            json!({"stopped": how}),
            "{digest}"
        );
    }
}

/// A run whose script the host lost (R\plans cleaned) fails once; the next uploads it again.
#[tokio::test]
async fn a_script_the_host_lost_is_uploaded_again() {
    let fake = FakeHyperV::start_with(0.0);
    let local_root = fake.root().join("local");
    let executors = [
        (ssh(&fake), fake.host_path(&format!(r"{ROOT}\plans"))),
        (
            Executor::Local(Local::new(fake.local_program(), local_root.clone())),
            local_root.join("plans"),
        ),
    ];
    for (ex, plans_dir) in &executors {
        assert_eq!(json(ex, &status("w-1")).await, json!({"exists": false}));
        std::fs::remove_dir_all(plans_dir).unwrap();
        let err = ex.run(&status("w-1")).await.unwrap_err();
        assert!(
            matches!(&err, ExecError::Exit { stderr, .. } if stderr.contains("-File")),
            "{err:?}"
        );
        assert_eq!(json(ex, &status("w-1")).await, json!({"exists": false}));
        let script = plans_dir.join(status("w-1").file_name());
        assert!(script.is_file());
        // A script still there is never replaced after a failure (another run may read it).
        use std::os::unix::fs::MetadataExt as _;
        let inode = std::fs::metadata(&script).unwrap().ino();
        fake.inject(Fault {
            action: "status".into(),
            name: None,
            mode: "exit".into(),
            times: 1,
        });
        ex.run(&status("w-1")).await.unwrap_err();
        assert_eq!(json(ex, &status("w-1")).await, json!({"exists": false}));
        assert_eq!(std::fs::metadata(&script).unwrap().ino(), inode);
    }
}

/// The answer is the one JSON object between the markers; other stdout is ignored.
#[test]
fn the_answer_is_between_the_markers() {
    use std::os::unix::process::ExitStatusExt as _;
    let output = |stdout: &str| Output {
        status: std::process::ExitStatus::from_raw(0),
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
    };
    let ok = output(&format!(
        "noise\r\n{BEGIN}\r\n{{\"a\":1}}\r\n{END}\r\nmore\r\n"
    ));
    assert_eq!(answer("status", &ok).unwrap(), "{\"a\":1}");
    // Windows PowerShell 5.1: a byte-order mark before the first line, CRLF line ends.
    let bom = output(&format!("\u{feff}{BEGIN}\r\n{{\"a\":2}}\r\n{END}\r\n"));
    assert_eq!(answer("status", &bom).unwrap(), "{\"a\":2}");
    let bom_json = output(&format!("{BEGIN}\n\u{feff}{{\"a\":3}}\n{END}\n"));
    assert_eq!(answer("status", &bom_json).unwrap(), "{\"a\":3}");
    // A byte-order mark alone on stderr is no error.
    let mut quiet = output(&format!("{BEGIN}\r\n{{}}\r\n{END}\r\n"));
    quiet.stderr = "\u{feff}\r\n".as_bytes().to_vec();
    assert_eq!(answer("status", &quiet).unwrap(), "{}");
    for bad in [
        format!("{END}\n{{}}\n{BEGIN}\n"),
        format!("{BEGIN}\n{{}}\n{END}\n{BEGIN}\n{{}}\n{END}\n"),
        "{}".to_owned(),
    ] {
        assert!(matches!(
            answer("status", &output(&bad)),
            Err(ExecError::NoAnswer { .. })
        ));
    }
    assert!(matches!(
        answer("status", &output(&format!("{BEGIN}\n[1]\n{END}\n"))),
        Err(ExecError::BadJson { .. })
    ));
}

/// Without the VMs' directory the disks resting on images are not known: while any VM of
/// Slipway's exists, prune-images removes nothing (another tool's VMs keep theirs elsewhere).
#[tokio::test]
async fn a_prune_that_cannot_see_the_vms_directory_removes_nothing() {
    let fake = FakeHyperV::start_with(0.0);
    let ex = ssh(&fake);
    let images = format!(r"{ROOT}\images");
    std::fs::create_dir_all(fake.host_path(&images)).unwrap();
    let unkept = fake.host_path(&format!(r"{images}\{DIGEST}.vhdx"));
    std::fs::write(&unkept, b"an image").unwrap();
    let keep = "c".repeat(64);
    // Another tool's VM alone: its disks are not under the VMs' directory, which is not made
    // before Slipway's first VM.
    fake.put_foreign_vm("other");
    let answer = json(
        &ex,
        &plan::prune_images(&images, r"D:\Gone\vms", &[keep.as_str()]),
    )
    .await;
    assert_eq!(answer, json!({"removed": [DIGEST]}));
    std::fs::write(&unkept, b"an image").unwrap();
    json(&ex, &create_vm("w-1")).await;
    let err = ex
        .run(&plan::prune_images(
            &images,
            r"D:\Gone\vms",
            &[keep.as_str()],
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not there but Slipway's VMs exist"),
        "{err}"
    );
    assert!(unkept.is_file());
    // With the VMs' directory there, the same image goes.
    let answer = json(
        &ex,
        &plan::prune_images(&images, &format!(r"{ROOT}\vms"), &[keep.as_str()]),
    )
    .await;
    assert_eq!(answer, json!({"removed": [DIGEST]}));
    assert!(!unkept.exists());
}
