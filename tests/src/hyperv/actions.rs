//! The fake's Hyper-V: each plan action against the state and the fake host's files. Disks are
//! small placeholder files holding JSON (`{"fake_vhdx": "dynamic"|"differencing", ...}`); a
//! differencing disk's names its parent, the state disk's keeps what the guest writes there.

use serde_json::{Value, json};

use super::{Failure, Host, Params, State, Vm, guest, now, read_json, write_json};

/// Runs `action`; returns its answer.
pub(super) fn act(
    host: &Host,
    state: &mut State,
    action: &str,
    params: &Params,
) -> Result<Value, Failure> {
    match action {
        "create-vm" => create_vm(host, state, params),
        "os-disk" => os_disk(host, params),
        "drop-os-disks" => drop_os_disks(host, state, params),
        "start-vm" => start_vm(host, state, params),
        "stop-vm" => stop_vm(host, state, params),
        "status" => status(state, params),
        "beacon" => {
            params.only(&["Name"])?;
            let name = params.text("Name")?;
            Ok(match ours("beacon", state, name)? {
                None => json!({"exists": false, "running": false, "items": []}),
                Some(vm) => json!({
                    "exists": true,
                    "running": vm.state == "Running",
                    "items": guest::items(host, name, vm),
                }),
            })
        }
        "remove-vm" => remove_vm(host, state, params),
        "prune-images" => prune_images(host, state, params),
        other => Err(format!("fake-powershell: no such plan action {other:?}")),
    }
}

/// Slipway's tag for node `name`'s VM: its Notes once create-vm has finished it.
fn tag(name: &str) -> String {
    format!("slipway-node:{name}")
}

/// The Notes of a VM create-vm has begun and not finished.
fn partial_tag(name: &str) -> String {
    format!("slipway-node:{name}:partial")
}

/// The VM of this name, as every plan finds it: refused when its Notes are not Slipway's (the
/// scripts' own message), None when there is none or create-vm has not finished it.
fn ours<'s>(action: &str, state: &'s State, name: &str) -> Result<Option<&'s Vm>, Failure> {
    match state.vms.get(name) {
        None => Ok(None),
        Some(vm) if vm.notes == tag(name) => Ok(Some(vm)),
        Some(vm) if vm.notes == partial_tag(name) => Ok(None),
        Some(_) => Err(foreign(action, name)),
    }
}

/// [`ours`], to change the VM.
fn ours_mut<'s>(
    action: &str,
    state: &'s mut State,
    name: &str,
) -> Result<Option<&'s mut Vm>, Failure> {
    ours(action, state, name)?;
    Ok(state.vms.get_mut(name).filter(|vm| vm.notes == tag(name)))
}

fn foreign(action: &str, name: &str) -> Failure {
    format!("{action}: a VM named {name} exists that Slipway did not make; rename or remove it")
}

/// What the `killed` fault leaves of the VM create-vm just made: New-VM's VM with its partial
/// tag and the state disk, nothing after (no COM1, no disk attached, no final tag).
pub(super) fn leave_partial(state: &mut State, name: &str) {
    if let Some(vm) = state.vms.get_mut(name) {
        vm.notes = partial_tag(name);
        vm.com1 = String::new();
        vm.disks.clear();
    }
}

fn create_vm(host: &Host, state: &mut State, p: &Params) -> Result<Value, Failure> {
    p.only(&[
        "Name",
        "Directory",
        "MemoryBytes",
        "Processors",
        "SwitchName",
        "MacAddress",
        "VlanId",
        "SecureBootTemplate",
        "StateDisk",
        "StateDiskBytes",
    ])?;
    let name = p.text("Name")?;
    let template = p.text("SecureBootTemplate")?;
    let mac = p.text("MacAddress")?;
    let (memory, processors, vlan) = (
        p.int("MemoryBytes")?,
        p.int("Processors")?,
        p.int("VlanId")?,
    );
    let (state_disk, state_bytes) = (p.text("StateDisk")?, p.int("StateDiskBytes")?);
    let directory = p.text("Directory")?;
    let switch = p.text("SwitchName")?;
    // The param() block's validation, before anything runs.
    if mac.len() != 12 || !mac.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "create-vm : Cannot validate argument on parameter 'MacAddress'. The argument \
             \"{mac}\" does not match the \"^[0-9A-Fa-f]{{12}}$\" pattern."
        ));
    }
    if ![
        "MicrosoftWindows",
        "MicrosoftUEFICertificateAuthority",
        "None",
    ]
    .contains(&template)
    {
        return Err(format!(
            "create-vm : Cannot validate argument on parameter 'SecureBootTemplate'. The \
             argument \"{template}\" does not belong to the set \"MicrosoftWindows,\
             MicrosoftUEFICertificateAuthority,None\" specified by the ValidateSet attribute."
        ));
    }
    if !(0..=4094).contains(&vlan) {
        return Err(format!(
            "create-vm : Cannot validate argument on parameter 'VlanId'. The {vlan} argument \
             is greater than the maximum allowed range of 4094."
        ));
    }
    if let Some(vm) = state.vms.get(name) {
        if vm.notes == tag(name) {
            let mut differs = Vec::new();
            if vm.memory_bytes != memory {
                differs.push("MemoryBytes");
            }
            if vm.processors != processors {
                differs.push("Processors");
            }
            if vm.switch != switch {
                differs.push("SwitchName");
            }
            if !vm.mac.eq_ignore_ascii_case(mac) {
                differs.push("MacAddress");
            }
            if vm.vlan != vlan {
                differs.push("VlanId");
            }
            if vm.secure_boot_template != template {
                differs.push("SecureBootTemplate");
            }
            return Ok(json!({"created": false, "differs": differs}));
        }
        let untagged_here =
            vm.notes.is_empty() && vm.state == "Off" && at_home(&vm.directory, directory, name);
        if vm.notes != partial_tag(name) && !untagged_here {
            return Err(foreign("create-vm", name));
        }
        // A killed run's VM: removed (its files, the state disk among them, stay) and remade.
        state.vms.remove(name);
    }
    if memory <= 0 || processors <= 0 {
        return Err("New-VM : The parameter is incorrect.".to_owned());
    }
    std::fs::create_dir_all(host.path(directory)?).map_err(|e| format!("New-VM : {e}"))?;
    let state_file = host.path(state_disk)?;
    if !state_file.exists() {
        std::fs::create_dir_all(state_file.parent().unwrap()).unwrap();
        write_json(
            &state_file,
            &json!({"fake_vhdx": "dynamic", "size": state_bytes}),
        );
    }
    let vm = Vm {
        directory: directory.to_owned(),
        memory_bytes: memory,
        processors,
        switch: switch.to_owned(),
        mac: mac.to_ascii_uppercase(),
        vlan,
        secure_boot_template: template.to_owned(),
        com1: format!("\\\\.\\pipe\\slipway-{name}"),
        disks: [("1".to_owned(), state_disk.to_owned())].into(),
        first_boot: None,
        state: "Off".to_owned(),
        started_at: None,
        pid: 0,
        guest: None,
        notes: tag(name),
    };
    state.vms.insert(name.to_owned(), vm);
    Ok(json!({"created": true, "differs": []}))
}

/// Whether a VM's Path `path` is node `name`'s `directory` (what create-vm's New-VM -Path gives
/// it), or the folder named after the VM under it, as the script compares them: without
/// trailing backslashes, case-insensitively.
fn at_home(path: &str, directory: &str, name: &str) -> bool {
    let (path, here) = (
        path.trim_end_matches('\\'),
        directory.trim_end_matches('\\'),
    );
    path.eq_ignore_ascii_case(here) || path.eq_ignore_ascii_case(&format!("{here}\\{name}"))
}

fn os_disk(host: &Host, p: &Params) -> Result<Value, Failure> {
    p.only(&["Parent", "Path"])?;
    let (parent, path) = (p.text("Parent")?, p.text("Path")?);
    let file = host.path(path)?;
    if file.exists() {
        return Ok(json!({"created": false}));
    }
    if !host.path(parent)?.is_file() {
        return Err(format!(
            "New-VHD : Failed to create the virtual hard disk. The system cannot find the file \
             specified. ('{parent}')"
        ));
    }
    let Some(dir) = file.parent().filter(|d| d.is_dir()) else {
        return Err(format!(
            "New-VHD : The system cannot find the path specified. ('{path}')"
        ));
    };
    let part = dir.join(format!(
        "{}.part",
        file.file_name().unwrap().to_string_lossy()
    ));
    write_json(
        &part,
        &json!({"fake_vhdx": "differencing", "parent": parent}),
    );
    std::fs::rename(&part, &file).map_err(|e| format!("Move-Item : {e}"))?;
    Ok(json!({"created": true}))
}

fn drop_os_disks(host: &Host, state: &State, p: &Params) -> Result<Value, Failure> {
    p.only(&["Name", "Directory", "Keep"])?;
    let (name, directory, keep) = (p.text("Name")?, p.text("Directory")?, p.text("Keep")?);
    let dir = host.path(directory)?;
    let attached: Vec<std::path::PathBuf> = ours("drop-os-disks", state, name)?
        .map(|vm| {
            vm.disks
                .values()
                .filter_map(|d| host.path(d).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut drop = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            if file.starts_with("os-")
                && file.ends_with(".vhdx")
                && !file.eq_ignore_ascii_case(keep)
            {
                drop.push(file);
            }
        }
    }
    drop.sort();
    if let Some(busy) = drop.iter().find(|f| attached.contains(&dir.join(f))) {
        return Err(format!(
            "{busy} is attached to VM '{name}': detach it before removing it"
        ));
    }
    for file in &drop {
        std::fs::remove_file(dir.join(file)).map_err(|e| format!("Remove-Item : {e}"))?;
    }
    Ok(json!({"removed": drop}))
}

fn start_vm(host: &Host, state: &mut State, p: &Params) -> Result<Value, Failure> {
    p.only(&["Name", "OsDisk", "Seed"])?;
    let (name, os, seed) = (p.text("Name")?, p.text("OsDisk")?, p.text("Seed")?);
    let vm = ours_mut("start-vm", state, name)?
        .ok_or_else(|| format!("start-vm: no VM named {name}; create it first"))?;
    if vm.state != "Off" {
        return Err(format!(
            "Start-VM : '{name}' failed to change state. The operation cannot be performed \
             while the object is in its current state ({}).",
            vm.state
        ));
    }
    for disk in [os, seed] {
        if !host.path(disk)?.is_file() {
            return Err(format!(
                "Add-VMHardDiskDrive : Failed to add device 'Virtual Hard Disk'. The system \
                 cannot find the file specified. ('{disk}')"
            ));
        }
    }
    let placeholder: Value = read_json(&host.path(os)?).unwrap_or_default();
    if let Some(parent) = placeholder["parent"].as_str()
        && !host.path(parent)?.is_file()
    {
        return Err(format!(
            "Start-VM : '{name}' failed to start. The chain of virtual hard disks is broken: \
             cannot find the parent '{parent}' of '{os}'."
        ));
    }
    vm.disks.insert("0".to_owned(), os.to_owned());
    vm.disks.insert("2".to_owned(), seed.to_owned());
    // The seeds no longer attached go, as the plan removes them.
    let seed_file = host.path(seed)?;
    if let (Some(dir), Some(keep)) = (seed_file.parent(), seed_file.file_name())
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with("seed") && file.ends_with(".vhdx") && entry.file_name() != keep {
                std::fs::remove_file(entry.path()).map_err(|e| format!("Remove-Item : {e}"))?;
            }
        }
    }
    vm.first_boot = Some(os.to_owned());
    vm.guest = Some(guest::boot(host, vm)?);
    vm.state = "Running".to_owned();
    vm.started_at = Some(now());
    vm.pid = 4000 + u32::try_from(state_len_hash(name)).unwrap_or(0);
    Ok(json!({"state": "Running", "pid": vm.pid}))
}

/// A stable small number from a name, for a worker's pid.
fn state_len_hash(name: &str) -> u64 {
    name.bytes()
        .fold(7u64, |h, b| (h * 31 + u64::from(b)) % 50_000)
}

fn stop_vm(host: &Host, state: &mut State, p: &Params) -> Result<Value, Failure> {
    p.only(&["Name", "TimeoutSeconds"])?;
    let name = p.text("Name")?;
    p.int("TimeoutSeconds")?;
    if let Some(partial) = state.vms.get_mut(name)
        && partial.notes == partial_tag(name)
    {
        partial.state = "Off".to_owned();
    }
    // Never made, or left unfinished (now off): nothing of the node runs.
    let Some(vm) = ours_mut("stop-vm", state, name)? else {
        return Ok(json!({"stopped": "already-stopped"}));
    };
    if vm.state == "Off" {
        return Ok(json!({"stopped": "already-stopped"}));
    }
    let how = if guest::hears_shutdown(host, vm) {
        "shut-down"
    } else {
        "turned-off"
    };
    vm.state = "Off".to_owned();
    vm.started_at = None;
    vm.pid = 0;
    Ok(json!({"stopped": how}))
}

fn status(state: &State, p: &Params) -> Result<Value, Failure> {
    p.only(&["Name"])?;
    let Some(vm) = ours("status", state, p.text("Name")?)? else {
        return Ok(json!({"exists": false}));
    };
    let uptime = vm
        .started_at
        .map_or(0.0, |t| ((now() - t) * 10.0).round() / 10.0);
    let heartbeat = match vm.started_at {
        Some(t) if now() - t >= guest::boot_seconds() => json!("OkApplicationsUnknown"),
        _ => Value::Null,
    };
    Ok(json!({
        "exists": true,
        "state": vm.state,
        "status": "Operating normally",
        "uptime": uptime,
        "pid": vm.pid,
        "heartbeat": heartbeat,
    }))
}

fn remove_vm(host: &Host, state: &mut State, p: &Params) -> Result<Value, Failure> {
    p.only(&["Name", "Directory"])?;
    let (name, directory) = (p.text("Name")?, p.text("Directory")?);
    // Finished or partial, ours is removed; someone else's is refused.
    if state
        .vms
        .get(name)
        .is_some_and(|vm| vm.notes != tag(name) && vm.notes != partial_tag(name))
    {
        return Err(foreign("remove-vm", name));
    }
    let had_vm = state.vms.remove(name).is_some();
    let dir = host.path(directory)?;
    let had_dir = dir.exists();
    if had_dir {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("Remove-Item : {e}"))?;
    }
    Ok(json!({"removed": had_vm || had_dir}))
}

/// What prune-images removes: each `HEX.vhdx` in Images that Keep does not name, unless a VM
/// holds it or a disk under Vms has it for its parent (compared by file name, as the script
/// does). Beyond the script, the fake refuses outright to remove a file that a disk it knows
/// (any VM's, any under Vms) has for its parent, or that a VM holds, comparing whole paths: an
/// emulation or a plan that went wrong then fails a test loudly instead of leaving a disk
/// without its parent.
fn prune_images(host: &Host, state: &State, p: &Params) -> Result<Value, Failure> {
    p.only(&["Images", "Vms", "Keep"])?;
    let (images, vms, keep) = (p.text("Images")?, p.text("Vms")?, p.text("Keep")?);
    let digest = |d: &str| d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit());
    if !keep.split(',').all(digest) {
        return Err(format!(
            "prune-images : Cannot validate argument on parameter 'Keep'. The argument \
             \"{keep}\" does not match the \"^[0-9a-f]{{64}}(,[0-9a-f]{{64}})*$\" pattern."
        ));
    }
    let keep: Vec<String> = keep.split(',').map(str::to_ascii_lowercase).collect();
    // Every disk a VM holds and every parent a disk under Vms names, as Windows paths.
    let mut held: Vec<(String, String)> = Vec::new();
    for (name, vm) in &state.vms {
        for disk in vm.disks.values() {
            held.push((disk.clone(), format!("VM '{name}'")));
        }
    }
    let ours = state
        .vms
        .values()
        .any(|vm| vm.notes.starts_with("slipway-node:"));
    if !host.path(vms)?.is_dir() && ours {
        return Err(format!(
            "prune-images: {vms} is not there but Slipway's VMs exist; nothing removed"
        ));
    }
    let mut pending = vec![host.path(vms)?];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "vhdx") {
                // A real VHDX (an uploaded seed) is no placeholder: it has no parent.
                let placeholder: Option<Value> = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                if let Some(parent) = placeholder.as_ref().and_then(|v| v["parent"].as_str()) {
                    held.push((parent.to_owned(), path.display().to_string()));
                }
            }
        }
    }
    let leaf = |win: &str| {
        win.rsplit(['\\', '/'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let held_names: Vec<String> = held.iter().map(|(win, _)| leaf(win)).collect();
    let dir = host.path(images)?;
    let mut unkept: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| {
                    f.strip_suffix(".vhdx").is_some_and(|stem| {
                        digest(stem) && !keep.contains(&stem.to_ascii_lowercase())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    unkept.sort();
    let mut removed = Vec::new();
    for file in unkept {
        if held_names.contains(&file.to_ascii_lowercase()) {
            continue;
        }
        let local = dir.join(&file);
        if let Some((_, by)) = held
            .iter()
            .find(|(win, _)| host.path(win).is_ok_and(|p| p == local))
        {
            return Err(format!(
                "fake-powershell: prune-images would remove {}, which {by} rests on",
                local.display()
            ));
        }
        std::fs::remove_file(&local).map_err(|e| format!("Remove-Item : {e}"))?;
        removed.push(file.trim_end_matches(".vhdx").to_ascii_lowercase());
    }
    Ok(json!({"removed": removed}))
}
