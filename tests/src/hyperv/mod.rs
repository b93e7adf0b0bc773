//! A fake Hyper-V host's `powershell`: the `fake-powershell` binary runs [`main`]. Hyper-V
//! and PowerShell cannot run here, so this stands in for `powershell.exe` running one of
//! slipwayd's plans (supervisor/src/driver/hyperv): it checks the command line is exactly
//! `-NoProfile -NonInteractive -ExecutionPolicy Bypass -File PATH` and `-Param value` pairs,
//! records the plan in `$FAKE_HYPERV_ROOT/plans.jsonl`, emulates the plan's action against
//! `$FAKE_HYPERV_ROOT/hyperv.json` (VMs, their disks and a fake guest's KVP items) and answers
//! between the markers the way the real script does. Failures look like PowerShell's: a
//! message on stderr and exit status 1.
//!
//! The fake host's filesystem: the Windows path `C:\a\b` is `$FAKE_HYPERV_DRIVES/C:/a/b`, the
//! drives' directory defaulting to `$FAKE_HYPERV_ROOT` (an absolute Unix path is taken as it
//! is, for the Local executor's test). Behind the test's sshd the drives are at `/` (`/C:` is
//! the fake's `C:` drive, bind-mounted in sshd's own mount namespace), where Windows'
//! sftp-server puts them too: see `crate::sshd`.
//!
//! Like Hyper-V with Slipway's plans, a VM is the node's when its Notes are
//! `slipway-node:NAME` (`...:partial` while create-vm makes it); a VM of the name with other
//! Notes (a test puts one with [`crate::sshd::FakeHyperV::put_foreign_vm`]) is refused by every
//! plan with the scripts' own message, but for create-vm's one exception: a VM with no Notes
//! whose Path is the node's own directory is its unfinished VM, remade.
//!
//! Test knobs under the root: `images.json` (64-hex image digest -> `{name, version,
//! root_hash, never_ready, no_shutdown_service}`, what the guest booted from that image says),
//! `faults.json` (see [`Fault`]), and env `FAKE_BOOT_SECONDS` (default 3), how long a guest
//! takes to boot; its shutdown integration service works from then on, unless its image says
//! `no_shutdown_service`.

mod actions;
mod guest;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The begin marker of a plan's answer.
pub const BEGIN: &str = "<<<slipway-begin>>>";
/// The end marker of a plan's answer.
pub const END: &str = "<<<slipway-end>>>";
/// The arguments before the script's path, exactly as the executor must pass them.
const FIXED_ARGS: [&str; 5] = [
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-File",
];

/// A fault a test injects (`faults.json` is a list of them, consumed in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// The action it hits.
    pub action: String,
    /// The VM (`-Name`) it hits; any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `exit` (a message on stderr, exit 1, nothing done), `stderr` (done and answered, plus a
    /// line on stderr), `garbage` (done, broken JSON between the markers), `no-markers` (done,
    /// the JSON without markers), `hang` (sleeps 5 s first, then answers: for deadlines; short, so
    /// the process a killed ssh leaves behind on the far side ends soon), `bom-crlf` (done, the
    /// answer as Windows PowerShell 5.1 may write it: a byte-order mark first, CRLF line ends),
    /// `killed` (create-vm only: killed midway, as by a dropped connection or a host reboot:
    /// the VM is left as New-VM and the state disk made it, its Notes still
    /// `slipway-node:NAME:partial`; no answer, exit status 137).
    pub mode: String,
    /// How many runs it hits.
    pub times: u32,
}

/// The fake host's state (`hyperv.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The VMs by name.
    pub vms: BTreeMap<String, Vm>,
}

/// One VM as Hyper-V holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    /// `New-VM -Path`.
    pub directory: String,
    /// Startup memory.
    pub memory_bytes: i64,
    /// Virtual processors.
    pub processors: i64,
    /// The virtual switch.
    pub switch: String,
    /// The static MAC (12 hex digits).
    pub mac: String,
    /// The access VLAN (0: untagged).
    pub vlan: i64,
    /// The Secure Boot template.
    pub secure_boot_template: String,
    /// COM1's named pipe.
    pub com1: String,
    /// Disk paths by SCSI 0 location ("0" OS, "1" state, "2" seed).
    pub disks: BTreeMap<String, String>,
    /// The first boot device (a disk path).
    pub first_boot: Option<String>,
    /// `Off` or `Running`.
    pub state: String,
    /// Unix time of its last start.
    pub started_at: Option<f64>,
    /// Its worker process id while running.
    pub pid: u32,
    /// What its guest read from the seed at its last start.
    pub guest: Option<guest::Guest>,
    /// `Set-VM -Notes`: Slipway's tag, or anything else for a VM someone else made.
    #[serde(default)]
    pub notes: String,
}

impl Vm {
    /// A VM as someone other than Slipway made it: off, no disks, no Notes.
    pub fn foreign(directory: &str) -> Vm {
        Vm {
            directory: directory.to_owned(),
            memory_bytes: 1 << 30,
            processors: 1,
            switch: "Default Switch".to_owned(),
            mac: "00155D000001".to_owned(),
            vlan: 0,
            secure_boot_template: "MicrosoftWindows".to_owned(),
            com1: String::new(),
            disks: BTreeMap::new(),
            first_boot: None,
            state: "Off".to_owned(),
            started_at: None,
            pid: 0,
            guest: None,
            notes: String::new(),
        }
    }
}

/// A PowerShell-style failure: the message goes to stderr, the exit status is 1.
pub(crate) type Failure = String;

/// Runs the fake with `args` (without the program name); returns the exit status.
pub fn main(args: Vec<String>) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

fn run(args: Vec<String>) -> Result<(), Failure> {
    let (script_path, params) = parse_args(&args)?;
    let root = PathBuf::from(
        std::env::var_os("FAKE_HYPERV_ROOT").ok_or("fake-powershell: FAKE_HYPERV_ROOT is unset")?,
    );
    let drives = std::env::var_os("FAKE_HYPERV_DRIVES").map_or_else(|| root.clone(), PathBuf::from);
    let host = Host { root, drives };
    let script_file = host.path(&script_path)?;
    let script = std::fs::read_to_string(&script_file).map_err(|e| {
        format!(
            "The argument '{script_path}' to the -File parameter does not exist. ({e}) Provide \
             the path to an existing '.ps1' file as an argument to the -File parameter."
        )
    })?;
    let action = script
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# slipway-plan: "))
        .ok_or_else(|| {
            format!("fake-powershell: {script_path} does not start with '# slipway-plan: ACTION'")
        })?
        .trim()
        .to_owned();
    let file_name = script_path
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or_default()
        .to_owned();

    let _lock = host.lock();
    host.record(&action, &params, &file_name);
    let fault = host.take_fault(&action, params.get("Name").map(String::as_str));
    let mode = fault.as_ref().map(|f| f.mode.as_str());
    match mode {
        Some("exit") => return Err(format!("{action} : fault injected by the test")),
        Some("hang") => {
            drop(_lock);
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        _ => {}
    }
    let mut state = host.load();
    let name = params.get("Name").cloned().unwrap_or_default();
    let answer = actions::act(&host, &mut state, &action, &Params(params))?;
    // Killed midway through making the VM: one that was there already is left as it was.
    if mode == Some("killed") && action == "create-vm" && answer["created"] == true {
        actions::leave_partial(&mut state, &name);
        host.save(&state);
        // What ssh reports for a far side killed by SIGKILL: no answer, status 128 + 9.
        std::process::exit(137);
    }
    host.save(&state);
    let text = answer.to_string();
    match mode {
        Some("garbage") => println!("{BEGIN}\n{}\n{END}", &text[..text.len() / 2]),
        Some("no-markers") => println!("{text}"),
        Some("bom-crlf") => print!("\u{feff}{BEGIN}\r\n{text}\r\n{END}\r\n"),
        _ => println!("{BEGIN}\n{text}\n{END}"),
    }
    if mode == Some("stderr") {
        eprintln!("WARNING: fault injected by the test into {action}");
    }
    Ok(())
}

/// Checks the command line and splits it into the script's path and its parameters.
fn parse_args(args: &[String]) -> Result<(String, BTreeMap<String, String>), Failure> {
    let usage = "fake-powershell: expected exactly -NoProfile -NonInteractive -ExecutionPolicy \
                 Bypass -File PATH [-Param value]...";
    if args.len() < FIXED_ARGS.len() + 1 || args[..FIXED_ARGS.len()] != FIXED_ARGS {
        return Err(format!("{usage}; got {args:?}"));
    }
    let mut params = BTreeMap::new();
    let mut rest = args[FIXED_ARGS.len() + 1..].chunks(2);
    for pair in &mut rest {
        let [name, value] = pair else {
            return Err(format!("{usage}; a parameter without a value in {args:?}"));
        };
        let name = name
            .strip_prefix('-')
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| format!("{usage}; {name:?} is not a parameter name"))?;
        if params.insert(name.to_owned(), value.clone()).is_some() {
            return Err(format!(
                "Cannot bind parameter because parameter '{name}' is specified more than once."
            ));
        }
    }
    Ok((args[FIXED_ARGS.len()].clone(), params))
}

/// A plan's parameters, read the way its `param()` block types them.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    /// A mandatory text parameter.
    pub(crate) fn text(&self, name: &str) -> Result<&str, Failure> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "Cannot process command because of one or more missing mandatory \
                     parameters: {name}."
                )
            })
    }

    /// A mandatory integer parameter.
    pub(crate) fn int(&self, name: &str) -> Result<i64, Failure> {
        let text = self.text(name)?;
        text.parse().map_err(|_| {
            format!(
                "Cannot process argument transformation on parameter '{name}'. Cannot convert \
                 value \"{text}\" to type \"System.Int64\"."
            )
        })
    }

    /// Refuses parameters the action's script does not declare.
    pub(crate) fn only(&self, names: &[&str]) -> Result<(), Failure> {
        match self.0.keys().find(|k| !names.contains(&k.as_str())) {
            Some(extra) => Err(format!(
                "A parameter cannot be found that matches parameter name '{extra}'."
            )),
            None => Ok(()),
        }
    }
}

/// The fake host's filesystem and files.
pub(crate) struct Host {
    /// The fake's own files (state, records, knobs).
    pub(crate) root: PathBuf,
    /// The directory holding the drives (`C:` ...).
    pub(crate) drives: PathBuf,
}

impl Host {
    /// Where the Windows path `win` is on this machine.
    pub(crate) fn path(&self, win: &str) -> Result<PathBuf, Failure> {
        if win.starts_with('/') {
            return Ok(PathBuf::from(win));
        }
        let bytes = win.as_bytes();
        if bytes.len() < 3 || !bytes[0].is_ascii_alphabetic() || &bytes[1..3] != b":\\" {
            return Err(format!(
                "fake-powershell: {win:?} is not an absolute Windows path (X:\\...)"
            ));
        }
        if win.split('\\').any(|part| part == "..") {
            return Err(format!("fake-powershell: {win:?} holds '..'"));
        }
        Ok(self.drives.join(win.replace('\\', "/")))
    }

    /// Holds the fake host's lock until dropped (slipwayd runs plans concurrently).
    fn lock(&self) -> File {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("hyperv.lock"))
            .unwrap();
        file.lock().unwrap();
        file
    }

    fn record(&self, action: &str, params: &BTreeMap<String, String>, script: &str) {
        let line = json!({"action": action, "params": params, "script": script});
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("plans.jsonl"))
            .unwrap();
        writeln!(file, "{line}").unwrap();
    }

    fn take_fault(&self, action: &str, name: Option<&str>) -> Option<Fault> {
        let path = self.root.join("faults.json");
        let mut faults: Vec<Fault> = read_json(&path).unwrap_or_default();
        let at = faults.iter().position(|f| {
            f.action == action && f.times > 0 && (f.name.is_none() || f.name.as_deref() == name)
        })?;
        let fault = faults[at].clone();
        faults[at].times -= 1;
        if faults[at].times == 0 {
            faults.remove(at);
        }
        write_json(&path, &json!(faults));
        Some(fault)
    }

    fn load(&self) -> State {
        read_json(&self.root.join("hyperv.json")).unwrap_or_default()
    }

    fn save(&self, state: &State) {
        write_json(
            &self.root.join("hyperv.json"),
            &serde_json::to_value(state).unwrap(),
        );
    }
}

/// Reads a JSON file; None when it is missing.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("fake-powershell: {}: {e}", path.display())),
    )
}

/// Writes a JSON file through a temporary file and a rename.
pub(crate) fn write_json(path: &Path, value: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Unix time now, in seconds.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
