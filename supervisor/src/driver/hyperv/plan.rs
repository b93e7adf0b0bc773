//! The lifecycle actions as plans: one PowerShell script per action (`plans/*.ps1`, each with a
//! `param()` block) and the values it is given as parameters. A value is never written into a
//! script's text: the executor passes each one as `-Name value` after `-File`, the way Packer's
//! Hyper-V plugin runs its scripts.

use std::time::Duration;

use super::exec::{ASK_DEADLINE, RUN_DEADLINE};

/// One action: its script and the values bound to the script's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The action's name, also the script's first line (`# slipway-plan: NAME`).
    pub action: &'static str,
    /// The script's text.
    pub script: &'static str,
    /// Parameter name (without the dash) and value, in the script's `param()` order.
    pub params: Vec<(&'static str, Param)>,
    /// How long the executor lets it run before killing it: [`RUN_DEADLINE`], or more for a
    /// plan that waits itself (`stop-vm`: its own timeout plus [`STOP_MARGIN`]).
    pub deadline: Duration,
}

/// What `stop-vm`'s deadline adds to its own timeout: the turn-off after it, and the cmdlets
/// before and after the wait.
pub const STOP_MARGIN: Duration = Duration::from_secs(60);

/// The prefix of the Notes that mark a VM as Slipway's (the plans spell it out; these name it
/// for the tests): a complete node VM's Notes are exactly
/// `slipway-node:NAME` ([`vm_tag`]); `slipway-node:NAME:partial` while `create-vm` makes it.
/// Every plan matches a VM by its name AND this tag: a VM of the node's name with other Notes
/// is someone else's, refused with "a VM named NAME exists that Slipway did not make; rename
/// or remove it" (but by `create-vm` when it has no Notes and its Path is the node's own
/// directory: one a run killed before its first Set-VM left). Operators must not edit a node
/// VM's Notes.
#[cfg(test)]
pub const TAG_PREFIX: &str = "slipway-node:";

/// The suffix of the Notes of a VM `create-vm` has begun and not finished (a killed run):
/// other plans take such a VM as absent, the next `create-vm` removes it (its state disk is
/// kept) and makes it again.
#[cfg(test)]
pub const PARTIAL_SUFFIX: &str = ":partial";

/// The Notes of node `name`'s VM once `create-vm` has finished it: `slipway-node:NAME`.
#[cfg(test)]
pub fn vm_tag(name: &str) -> String {
    format!("{TAG_PREFIX}{name}")
}

/// A parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// A string parameter.
    Text(String),
    /// An integer parameter (`[long]` or `[int]` in the script).
    Int(i64),
}

impl Plan {
    /// The script's file name on the host: `ACTION-HEX.ps1`, HEX the first 16 hex digits of the
    /// script's sha256 (a changed script is a new file; an unchanged one is uploaded once).
    pub fn file_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.script.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}.ps1", self.action)
    }
}

/// The program the executor runs (Windows PowerShell 5.1, on every Hyper-V host), and the
/// switches before `-File`: no profile (a host's profile must not change a plan), no prompts
/// (nobody answers them), and no execution policy in the way of an unsigned script.
pub const POWERSHELL: &str = "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass";

/// A value the command line cannot carry as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the value of {param} cannot be passed to a plan on a command line: it {why}; \
     rename the node or choose a path on the Hyper-V host without it"
)]
pub struct BadValue {
    /// The parameter (`-Name`, ...) or `the plans directory`.
    pub param: String,
    /// What is wrong with it.
    pub why: String,
}

/// The command line that runs `plan`, its script being `PLANS_DIR\FILE_NAME` on the host:
/// [`POWERSHELL`] `-File "PATH" -Param "text" -Count 12`. The same string is run by cmd.exe
/// (Windows' OpenSSH server, or a local executor's `cmd /c`) and by /bin/sh (the tests' sshd),
/// so a text value is refused when either would read something in it rather than pass it on:
/// see [`check_value`]. Integers go unquoted.
pub fn command_line(plan: &Plan, plans_dir: &str) -> Result<String, BadValue> {
    check_value("the plans directory", plans_dir)?;
    let mut line = format!("{POWERSHELL} -File \"{plans_dir}\\{}\"", plan.file_name());
    for (name, value) in &plan.params {
        match value {
            Param::Text(text) => {
                check_value(&format!("-{name}"), text)?;
                line.push_str(&format!(" -{name} \"{text}\""));
            }
            Param::Int(number) => line.push_str(&format!(" -{name} {number}")),
        }
    }
    Ok(line)
}

/// Refuses a text value that cannot be double-quoted safely for both cmd.exe and /bin/sh:
/// - `"` ends the quoting; `%` and `!` expand variables in cmd.exe even inside quotes, and
///   `^ & | < >` are its escape and operators (a stray `"` elsewhere would expose them);
/// - `$` and `` ` `` expand inside double quotes in /bin/sh (the SSH tests' far side);
/// - a control character or newline ends or splits the command;
/// - a trailing `\` would escape the closing quote (Windows' argument rules and sh alike);
/// - an empty value, which a mandatory PowerShell parameter refuses with a less clear message.
///
/// Our values are node names, MACs, Windows paths and template names: none needs any of these.
pub fn check_value(param: &str, value: &str) -> Result<(), BadValue> {
    let bad = |why: String| BadValue {
        param: param.to_owned(),
        why,
    };
    if value.is_empty() {
        return Err(bad("is empty".to_owned()));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(bad(format!(
            "holds the control character U+{:04X}",
            u32::from(c)
        )));
    }
    if let Some(c) = value.chars().find(|c| "\"%!^&|<>".contains(*c)) {
        return Err(bad(format!("holds `{c}`, which cmd.exe would interpret")));
    }
    if let Some(c) = value.chars().find(|c| "$`".contains(*c)) {
        return Err(bad(format!("holds `{c}`, which /bin/sh would expand")));
    }
    // PowerShell reads the typographic quotes as quotes too (when it is the SSH server's shell).
    if let Some(c) = value
        .chars()
        .find(|c| ('\u{2018}'..='\u{201F}').contains(c))
    {
        return Err(bad(format!(
            "holds `{c}`, which PowerShell reads as a quote"
        )));
    }
    // After -File, PowerShell binds a word starting with a dash as a parameter name, quoted or
    // not; it takes the en dash, em dash and horizontal bar for one too.
    if let Some(c) = value
        .chars()
        .next()
        .filter(|c| *c == '-' || ('\u{2013}'..='\u{2015}').contains(c))
    {
        return Err(bad(format!(
            "starts with `{c}`, which PowerShell would bind as a parameter name"
        )));
    }
    if value.ends_with('\\') {
        return Err(bad(
            "ends in `\\`, which would escape the closing quote".to_owned()
        ));
    }
    Ok(())
}

/// The example root the golden files and tests use for `R`.
#[cfg(test)]
pub const EXAMPLE_ROOT: &str = r"C:\Slipway";

/// What `create-vm` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm<'a> {
    /// The VM's (and node's) name.
    pub name: &'a str,
    /// The VM's own directory, `R\vms\NAME` (New-VM `-Path`).
    pub directory: &'a str,
    /// Its memory, fixed (no dynamic memory).
    pub memory_bytes: u64,
    /// Its virtual processors.
    pub processors: u32,
    /// The Hyper-V virtual switch its one network adapter is connected to.
    pub switch: &'a str,
    /// Its MAC: 12 hex digits, with or without `:`/`-` separators (dropped; the digits are
    /// passed upper-case, as Hyper-V shows them).
    pub mac: &'a str,
    /// Its VLAN (access mode); 0 leaves the adapter untagged.
    pub vlan: u16,
    /// The Secure Boot template its image's manifest asks for (`boot.secure_boot`):
    /// `MicrosoftWindows`, `MicrosoftUEFICertificateAuthority`, or `None` for an image that asks
    /// for no Secure Boot (Linux images' `"none"`), which turns Secure Boot off
    /// (`Set-VMFirmware -EnableSecureBoot Off`). Anything else is refused by the script's
    /// `ValidateSet`.
    pub secure_boot_template: &'a str,
    /// The state disk's path, `R\vms\NAME\state.vhdx`: made when missing, never replaced.
    pub state_disk: &'a str,
    /// The state disk's size when it is made.
    pub state_disk_bytes: u64,
}

/// Scripts, embedded: the file a host runs is exactly the text hashed into its name.
mod scripts {
    pub const CREATE_VM: &str = include_str!("plans/create-vm.ps1");
    pub const OS_DISK: &str = include_str!("plans/os-disk.ps1");
    pub const DROP_OS_DISKS: &str = include_str!("plans/drop-os-disks.ps1");
    pub const START_VM: &str = include_str!("plans/start-vm.ps1");
    pub const STOP_VM: &str = include_str!("plans/stop-vm.ps1");
    pub const STATUS: &str = include_str!("plans/status.ps1");
    pub const BEACON: &str = include_str!("plans/beacon.ps1");
    pub const REMOVE_VM: &str = include_str!("plans/remove-vm.ps1");
    pub const PRUNE_IMAGES: &str = include_str!("plans/prune-images.ps1");
}

fn text(value: &str) -> Param {
    Param::Text(value.to_owned())
}

/// An unsigned count as a parameter; beyond `i64` it saturates (no host has that much of anything).
fn int(value: u64) -> Param {
    Param::Int(i64::try_from(value).unwrap_or(i64::MAX))
}

/// `create-vm`: the VM of `vm`, with its state disk, tagged as Slipway's ([`vm_tag`]) as its
/// very last step. Answers `{"created":bool,"differs":[...]}` (see
/// [`crate::driver::hyperv::parse::Created`]): `created` when this run made it (also when it
/// removed a partial VM a killed run left, and made it again); for a complete VM that was
/// there, `differs` names each setting that is not what `vm` asks for (`MemoryBytes`,
/// `Processors`, `SwitchName`, `MacAddress`, `VlanId`, `SecureBootTemplate`), changed by
/// nothing: the caller reports it. A VM of that name with no Notes whose Path is `vm.directory`
/// is one a run killed right after New-VM left: made again like a partial one. Any other VM
/// of that name that is not Slipway's is refused.
pub fn create_vm(vm: &NewVm<'_>) -> Plan {
    let mac: String = vm
        .mac
        .chars()
        .filter(|c| !matches!(c, ':' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Plan {
        action: "create-vm",
        script: scripts::CREATE_VM,
        deadline: RUN_DEADLINE,
        params: vec![
            ("Name", text(vm.name)),
            ("Directory", text(vm.directory)),
            ("MemoryBytes", int(vm.memory_bytes)),
            ("Processors", int(u64::from(vm.processors))),
            ("SwitchName", text(vm.switch)),
            ("MacAddress", Param::Text(mac)),
            ("VlanId", int(u64::from(vm.vlan))),
            ("SecureBootTemplate", text(vm.secure_boot_template)),
            ("StateDisk", text(vm.state_disk)),
            ("StateDiskBytes", int(vm.state_disk_bytes)),
        ],
    }
}

/// `os-disk`: a differencing disk at `path` over the node image `parent`, unless `path` exists;
/// `{"created":bool}`.
pub fn os_disk(parent: &str, path: &str) -> Plan {
    Plan {
        action: "os-disk",
        script: scripts::OS_DISK,
        deadline: RUN_DEADLINE,
        params: vec![("Parent", text(parent)), ("Path", text(path))],
    }
}

/// `drop-os-disks`: removes every `os-*.vhdx` of `directory` but `keep` (a file name), refusing
/// when one is attached to VM `name`; `{"removed":[file names]}`.
pub fn drop_os_disks(name: &str, directory: &str, keep: &str) -> Plan {
    Plan {
        action: "drop-os-disks",
        script: scripts::DROP_OS_DISKS,
        deadline: RUN_DEADLINE,
        params: vec![
            ("Name", text(name)),
            ("Directory", text(directory)),
            ("Keep", text(keep)),
        ],
    }
}

/// `start-vm`: boots the stopped VM `name` from `os_disk` (SCSI 0:0) with `seed` (SCSI 0:2);
/// also the swap's disk switch. `{"state":"Running","pid":N}`.
pub fn start_vm(name: &str, os_disk: &str, seed: &str) -> Plan {
    Plan {
        action: "start-vm",
        script: scripts::START_VM,
        deadline: RUN_DEADLINE,
        params: vec![
            ("Name", text(name)),
            ("OsDisk", text(os_disk)),
            ("Seed", text(seed)),
        ],
    }
}

/// `stop-vm`: a guest shutdown, turned off after `timeout` (whole seconds, at most `i32::MAX`);
/// `{"stopped":"already-stopped"|"shut-down"|"turned-off"}`. Its deadline is the timeout plus
/// [`STOP_MARGIN`], so the executor never kills it while it waits as asked.
pub fn stop_vm(name: &str, timeout: Duration) -> Plan {
    let seconds = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
    let seconds = i64::from(seconds);
    Plan {
        action: "stop-vm",
        script: scripts::STOP_VM,
        deadline: Duration::from_secs(seconds.unsigned_abs()) + STOP_MARGIN,
        params: vec![
            ("Name", text(name)),
            ("TimeoutSeconds", Param::Int(seconds)),
        ],
    }
}

/// `status`: the VM's state, status, uptime, worker pid and heartbeat, or `{"exists":false}`.
pub fn status(name: &str) -> Plan {
    Plan {
        action: "status",
        script: scripts::STATUS,
        deadline: ASK_DEADLINE,
        params: vec![("Name", text(name))],
    }
}

/// `beacon`: the VM's KVP guest exchange items as CIM-XML texts.
pub fn beacon(name: &str) -> Plan {
    Plan {
        action: "beacon",
        script: scripts::BEACON,
        deadline: ASK_DEADLINE,
        params: vec![("Name", text(name))],
    }
}

/// `remove-vm`: turns VM `name` off, removes it and deletes `directory` (state disk included);
/// `{"removed":bool}`.
pub fn remove_vm(name: &str, directory: &str) -> Plan {
    Plan {
        action: "remove-vm",
        script: scripts::REMOVE_VM,
        deadline: RUN_DEADLINE,
        params: vec![("Name", text(name)), ("Directory", text(directory))],
    }
}

/// `prune-images`: removes each image `images\HEX.vhdx` whose HEX is not one of `keep` (64-hex
/// digests, passed as one comma-separated value), but none that a VM holds or that a disk under
/// `vms` has for its parent; `{"removed":[HEX...]}` (see
/// [`crate::driver::hyperv::parse::Pruned`]). `keep` must not be empty: an empty value cannot be
/// passed ([`check_value`]), and the script's pattern refuses anything but digests.
pub fn prune_images(images: &str, vms: &str, keep: &[&str]) -> Plan {
    Plan {
        action: "prune-images",
        script: scripts::PRUNE_IMAGES,
        deadline: RUN_DEADLINE,
        params: vec![
            ("Images", text(images)),
            ("Vms", text(vms)),
            ("Keep", Param::Text(keep.join(","))),
        ],
    }
}

/// One plan per action with fixed example values under [`EXAMPLE_ROOT`], in the order of the
/// protocol: what the golden files show and the grammar tests parse.
#[cfg(test)]
pub fn all_examples() -> Vec<Plan> {
    let image = concat!(
        r"C:\Slipway\images\",
        "5f2b8c1e9d4a7f3b6c0e2d8a1b4f7c9e3a6d0b2c5e8f1a4d7b0c3e6f9a2d5b8c.vhdx"
    );
    let dir = r"C:\Slipway\vms\cp-1";
    let os = r"C:\Slipway\vms\cp-1\os-5f2b8c1e9d4a7f3b.vhdx";
    vec![
        create_vm(&NewVm {
            name: "cp-1",
            directory: dir,
            memory_bytes: 4 << 30,
            processors: 2,
            switch: "Slipway",
            mac: "00:15:5d:00:01:01",
            vlan: 20,
            secure_boot_template: "MicrosoftUEFICertificateAuthority",
            state_disk: r"C:\Slipway\vms\cp-1\state.vhdx",
            state_disk_bytes: 20 << 30,
        }),
        os_disk(image, os),
        drop_os_disks("cp-1", dir, "os-5f2b8c1e9d4a7f3b.vhdx"),
        start_vm(
            "cp-1",
            os,
            r"C:\Slipway\vms\cp-1\seed-3c9a0e17b24d58f6.vhdx",
        ),
        stop_vm("cp-1", Duration::from_secs(120)),
        status("cp-1"),
        beacon("cp-1"),
        remove_vm("cp-1", dir),
        prune_images(
            r"C:\Slipway\images",
            r"C:\Slipway\vms",
            &[
                "5f2b8c1e9d4a7f3b6c0e2d8a1b4f7c9e3a6d0b2c5e8f1a4d7b0c3e6f9a2d5b8c",
                "0e4a9d2c7b1f5e8a3d6c9b2e5f8a1d4c7b0e3f6a9d2c5b8e1f4a7d0c3b6e9f2a",
            ],
        ),
    ]
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod plan_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_file_is_named_by_its_action_and_content() {
        let plan = |script| Plan {
            action: "status",
            script,
            params: Vec::new(),
            deadline: RUN_DEADLINE,
        };
        let name = plan("# slipway-plan: status\n").file_name();
        assert!(name.starts_with("status-") && name.ends_with(".ps1") && name.len() == 27);
        assert_ne!(name, plan("# slipway-plan: status\n# v2\n").file_name());
    }

    fn golden_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/driver/hyperv/golden")
    }

    /// What a golden file holds: the command line the executor runs, then the script it runs.
    fn golden_text(plan: &Plan) -> String {
        let plans_dir = format!(r"{EXAMPLE_ROOT}\plans");
        format!(
            "{}\n{}",
            command_line(plan, &plans_dir).unwrap(),
            plan.script
        )
    }

    #[test]
    fn every_example_plan_matches_its_golden_file() {
        let bless = std::env::var_os("SLIPWAY_BLESS").is_some_and(|v| v == "1");
        let mut differ = Vec::new();
        let examples = all_examples();
        let actions: Vec<_> = examples.iter().map(|p| p.action).collect();
        assert_eq!(
            actions,
            [
                "create-vm",
                "os-disk",
                "drop-os-disks",
                "start-vm",
                "stop-vm",
                "status",
                "beacon",
                "remove-vm",
                "prune-images"
            ]
        );
        for plan in &examples {
            let path = golden_dir().join(format!("{}.txt", plan.action));
            let want = golden_text(plan);
            if bless {
                std::fs::write(&path, &want).unwrap();
                continue;
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            if have != want {
                differ.push(path.display().to_string());
            }
        }
        assert!(
            differ.is_empty(),
            "golden files differ (review, then rerun with SLIPWAY_BLESS=1): {differ:?}"
        );
        // Nothing stale: one golden file per action.
        let mut files: Vec<_> = std::fs::read_dir(golden_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut wanted: Vec<_> = actions.iter().map(|a| format!("{a}.txt")).collect();
        wanted.sort();
        assert_eq!(files, wanted);
    }

    /// Every plan finds the node's VM by its name and Slipway's tag, with the prefix and
    /// suffix the driver documents; create-vm marks a VM partial first and whole last.
    #[test]
    fn every_plan_matches_vms_by_slipways_tag() {
        let tag = format!("$tag = '{TAG_PREFIX}' + $Name");
        for plan in all_examples() {
            let uses_vms = plan.script.contains("Get-VM |");
            assert_eq!(uses_vms, plan.script.contains(&tag), "{}", plan.action);
            if uses_vms {
                assert!(
                    plan.script.contains(&format!("'{PARTIAL_SUFFIX}'")),
                    "{}",
                    plan.action
                );
                assert!(
                    plan.script
                        .contains("exists that Slipway did not make; rename or remove it"),
                    "{}",
                    plan.action
                );
            }
        }
        let create = scripts::CREATE_VM;
        let partial = create.find("Set-VM -VM $vm -Notes $partial").unwrap();
        let whole = create.find("Set-VM -VM $vm -Notes $tag").unwrap();
        assert!(create.find("New-VM -Name").unwrap() < partial);
        // Nothing is done to the new VM after it is marked whole.
        let rest = &create[whole..create.find("$created = $true").unwrap()];
        assert_eq!(rest.trim_end().lines().count(), 1, "{rest}");
        assert!(partial < whole);
    }

    #[test]
    fn the_command_line_quotes_text_and_leaves_integers_bare() {
        let plan = stop_vm("cp-1", Duration::from_millis(90_500));
        let line = command_line(&plan, r"C:\Slipway\plans").unwrap();
        assert_eq!(
            line,
            format!(
                "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -File \
                 \"C:\\Slipway\\plans\\{}\" -Name \"cp-1\" -TimeoutSeconds 90",
                plan.file_name()
            )
        );
        // Spaces and single quotes pass: they are inside the double quotes.
        let plan = os_disk(r"C:\Cluster Storage\it's\a.vhdx", r"C:\b.vhdx");
        assert!(
            command_line(&plan, r"C:\p")
                .unwrap()
                .ends_with(r#"-Parent "C:\Cluster Storage\it's\a.vhdx" -Path "C:\b.vhdx""#)
        );
    }

    #[test]
    fn each_refused_character_is_named_with_its_parameter() {
        for c in [
            '"', '%', '!', '^', '&', '|', '<', '>', '$', '`', '\n', '\r', '\t', '\0', '\u{201C}',
            '\u{201D}', '\u{2018}',
        ] {
            let name = format!("cp{c}1");
            let err = command_line(&status(&name), r"C:\p").unwrap_err();
            assert_eq!(err.param, "-Name", "{c:?}");
            let shown = if c.is_control() {
                format!("U+{:04X}", u32::from(c))
            } else {
                format!("`{c}`")
            };
            assert!(err.why.contains(&shown), "{c:?}: {}", err.why);
            assert!(err.to_string().contains("-Name"), "{err}");
        }
        let err = command_line(&remove_vm("cp-1", r"C:\vms\cp-1\"), r"C:\p").unwrap_err();
        assert_eq!(err.param, "-Directory");
        assert!(err.why.contains("ends in"), "{}", err.why);
        let err = command_line(&status(""), r"C:\p").unwrap_err();
        assert_eq!(err.why, "is empty");
        let err = command_line(&status("-VlanId:0"), r"C:\p").unwrap_err();
        assert!(err.why.contains("starts with `-`"), "{}", err.why);
        let err = command_line(&status("cp-1"), "C:\\%TEMP%").unwrap_err();
        assert_eq!(err.param, "the plans directory");
    }

    #[test]
    fn constructors_fill_every_parameter_in_order() {
        let plan = create_vm(&NewVm {
            name: "w-1",
            directory: r"C:\v\w-1",
            memory_bytes: u64::MAX,
            processors: 4,
            switch: "sw",
            mac: "00-15-5d-00-01-ab",
            vlan: 0,
            secure_boot_template: "MicrosoftWindows",
            state_disk: r"C:\v\w-1\state.vhdx",
            state_disk_bytes: 1 << 30,
        });
        assert_eq!(plan.params[2], ("MemoryBytes", Param::Int(i64::MAX)));
        assert_eq!(plan.params[5], ("MacAddress", text("00155D0001AB")));
        assert_eq!(plan.params[6], ("VlanId", Param::Int(0)));
        let plan = stop_vm("w-1", Duration::from_secs(u64::MAX));
        assert_eq!(
            plan.params[1],
            ("TimeoutSeconds", Param::Int(i64::from(i32::MAX)))
        );
        assert_eq!(
            plan.deadline,
            Duration::from_secs(i32::MAX.unsigned_abs().into()) + STOP_MARGIN
        );
        // stop-vm's own wait never outlasts the executor's deadline; the asks are shorter, so
        // a slow host holds the loop less; the others keep the default.
        let plan = stop_vm("w-1", Duration::from_secs(300));
        assert_eq!(plan.deadline, Duration::from_secs(360));
        assert!(plan.deadline > RUN_DEADLINE);
        assert_eq!(status("w-1").deadline, ASK_DEADLINE);
        assert_eq!(beacon("w-1").deadline, ASK_DEADLINE);
        assert!(ASK_DEADLINE < RUN_DEADLINE);
        assert_eq!(remove_vm("w-1", r"C:\v\w-1").deadline, RUN_DEADLINE);
        assert_eq!(vm_tag("w-1"), "slipway-node:w-1");
        for plan in all_examples() {
            assert!(
                plan.script
                    .starts_with(&format!("# slipway-plan: {}\n", plan.action)),
                "{}",
                plan.action
            );
        }
    }
}
