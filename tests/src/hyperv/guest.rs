//! The fake guest: what a node booted on the fake host reads from its seed and state disk, and
//! the KVP guest exchange items it publishes (`beacon`), in the CIM-XML form Hyper-V's WMI
//! provider gives them.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Failure, Host, Vm, now, read_json, write_json};

/// What the guest read at its last boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guest {
    /// sha256 of the seed's `kubeadm.yaml`.
    pub kubeadm_sha256: String,
    /// The first address in the seed's network-config.
    pub address: String,
    /// Why the seed could not be read (the guest then reports `failed`).
    pub seed_error: Option<String>,
    /// The node id kept on the state disk.
    pub node_id: String,
    /// Boots with this state disk.
    pub boot_count: u64,
}

/// Seconds after its start before a guest answers (env `FAKE_BOOT_SECONDS`, default 3).
pub(super) fn boot_seconds() -> f64 {
    std::env::var("FAKE_BOOT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

/// Boots: counts the boot on the state disk (making the node id on the first) and reads the
/// seed.
pub(super) fn boot(host: &Host, vm: &Vm) -> Result<Guest, Failure> {
    let state_disk = vm
        .disks
        .get("1")
        .ok_or("Start-VM : the VM has no state disk")?;
    let state_file = host.path(state_disk)?;
    let mut disk: Value = read_json(&state_file).ok_or_else(|| {
        format!(
            "Start-VM : failed to start. The system cannot find the file specified. \
             ('{state_disk}')"
        )
    })?;
    if disk["node_id"].as_str().is_none() {
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        disk["node_id"] = json!(uuid.trim());
    }
    let boot_count = disk["boot_count"].as_u64().unwrap_or(0) + 1;
    disk["boot_count"] = json!(boot_count);
    write_json(&state_file, &disk);
    let node_id = disk["node_id"].as_str().unwrap_or_default().to_owned();
    let seed = vm
        .disks
        .get("2")
        .ok_or("Start-VM : the VM has no seed disk")?;
    let (kubeadm_sha256, address, seed_error) = match read_seed(&host.path(seed)?) {
        Ok((digest, address)) => (digest, address, None),
        Err(error) => (String::new(), String::new(), Some(error)),
    };
    Ok(Guest {
        kubeadm_sha256,
        address,
        seed_error,
        node_id,
        boot_count,
    })
}

/// Reads the seed VHDX (a FAT volume labelled CIDATA): sha256 of `kubeadm.yaml` and the first
/// address of `network-config`, through a raw copy and mtools.
fn read_seed(seed: &Path) -> Result<(String, String), String> {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("seed.raw");
    images::vhdx::export::export_file(seed, &raw, &mut |_| {})
        .map_err(|e| format!("seed {} is not a readable VHDX: {e}", seed.display()))?;
    let file = |name: &str| -> Result<Vec<u8>, String> {
        let out = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&raw)
            .arg(format!("::/{name}"))
            .arg("-")
            .output()
            .map_err(|e| format!("mcopy: {e} (install mtools)"))?;
        if !out.status.success() {
            return Err(format!(
                "seed has no {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out.stdout)
    };
    let kubeadm = file("kubeadm.yaml")?;
    let network = String::from_utf8_lossy(&file("network-config")?).into_owned();
    let address = network
        .lines()
        .skip_while(|l| l.trim() != "addresses:")
        .nth(1)
        .and_then(|l| l.trim().strip_prefix("- "))
        .map(|a| {
            a.split('/')
                .next()
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned()
        })
        .ok_or("seed's network-config has no addresses")?;
    let digest: String = Sha256::digest(&kubeadm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((digest, address))
}

/// What an image says once booted (`images.json`).
#[derive(Debug, Deserialize)]
struct ImageInfo {
    name: String,
    version: String,
    root_hash: String,
    #[serde(default)]
    never_ready: bool,
    /// Its guest has no working shutdown integration service (stop-vm must turn it off).
    #[serde(default)]
    no_shutdown_service: bool,
}

/// The image the VM's OS disk is over (its parent is `R\images\<digest>.vhdx`): its digest,
/// and what `images.json` says of it.
fn image(host: &Host, vm: &Vm) -> (String, Option<ImageInfo>) {
    let parent = vm
        .disks
        .get("0")
        .and_then(|os| host.path(os).ok())
        .and_then(|os| read_json::<Value>(&os))
        .and_then(|disk| disk["parent"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let digest = parent
        .rsplit('\\')
        .next()
        .and_then(|f| f.strip_suffix(".vhdx"))
        .unwrap_or_default()
        .to_owned();
    let images: serde_json::Map<String, Value> =
        read_json(&host.root.join("images.json")).unwrap_or_default();
    let info = images
        .get(&digest)
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    (digest, info)
}

/// Whether the VM's guest would hear a shutdown request: it runs, has booted, and its image's
/// guest has the shutdown integration service.
pub(super) fn hears_shutdown(host: &Host, vm: &Vm) -> bool {
    let booted = vm
        .started_at
        .is_some_and(|t| vm.state == "Running" && now() - t >= boot_seconds());
    booted && image(host, vm).1.is_some_and(|i| !i.no_shutdown_service)
}

/// The VM's KVP items: none until its guest has booted, then the host name, the OS name and
/// Slipway's beacon.
pub(super) fn items(host: &Host, name: &str, vm: &Vm) -> Vec<String> {
    let (Some(started), Some(guest)) = (vm.started_at, &vm.guest) else {
        return Vec::new();
    };
    let uptime = now() - started;
    if vm.state != "Running" || uptime < boot_seconds() {
        return Vec::new();
    }
    vec![
        item("FullyQualifiedDomainName", name),
        item("OSName", "Windows Server 2022 Datacenter"),
        item(
            "SlipwayBeacon",
            &beacon(host, vm, guest, uptime).to_string(),
        ),
    ]
}

fn beacon(host: &Host, vm: &Vm, guest: &Guest, uptime: f64) -> Value {
    let (digest, image) = image(host, vm);
    let (event, reason) = match (&image, &guest.seed_error) {
        (None, _) => (
            "failed",
            format!("fake guest: image {digest:?} is not in images.json"),
        ),
        (_, Some(error)) => ("failed", error.clone()),
        (Some(i), None) if i.never_ready => ("booting", String::new()),
        (Some(_), None) => ("ready", String::new()),
    };
    let (name, version, root_hash) = image
        .map(|i| (i.name, i.version, i.root_hash))
        .unwrap_or_default();
    json!({
        "event": event,
        "image": name,
        "version": version,
        "root_hash": root_hash,
        "kubeadm_sha256": guest.kubeadm_sha256,
        "address": guest.address,
        "endpoint": "reachable",
        "host": "reachable",
        "uptime": (uptime * 10.0).round() / 10.0,
        "node_id": guest.node_id,
        "boot_count": guest.boot_count,
        "state_disk": "mounted",
        "reason": reason,
    })
}

/// One `Msvm_KvpExchangeDataItem` as `GuestExchangeItems` holds it.
pub fn item(name: &str, data: &str) -> String {
    format!(
        "<INSTANCE CLASSNAME=\"Msvm_KvpExchangeDataItem\">\
         <PROPERTY NAME=\"Caption\" PROPAGATED=\"true\" TYPE=\"string\"></PROPERTY>\
         <PROPERTY NAME=\"Data\" TYPE=\"string\"><VALUE>{}</VALUE></PROPERTY>\
         <PROPERTY NAME=\"Description\" PROPAGATED=\"true\" TYPE=\"string\"></PROPERTY>\
         <PROPERTY NAME=\"ElementName\" PROPAGATED=\"true\" TYPE=\"string\"></PROPERTY>\
         <PROPERTY NAME=\"InstanceID\" PROPAGATED=\"true\" TYPE=\"string\"></PROPERTY>\
         <PROPERTY NAME=\"Name\" TYPE=\"string\"><VALUE>{}</VALUE></PROPERTY>\
         <PROPERTY NAME=\"Source\" TYPE=\"uint16\"><VALUE>2</VALUE></PROPERTY>\
         </INSTANCE>",
        escape(data),
        escape(name)
    )
}

/// XML-escapes text the way the WMI provider does.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push_str(&format!("&#{};", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}
