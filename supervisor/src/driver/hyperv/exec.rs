//! Executors: run a [`super::plan::Plan`] on the Hyper-V host and copy files to it.
//!
//! Two ways to reach the host: [`Local`] runs `powershell.exe` itself (slipwayd on the Windows
//! host), [`Ssh`] runs the same command line through `ssh` and copies files with `sftp -b -`
//! (slipwayd on a Linux management VM, the host running Windows' OpenSSH server). Either way a
//! plan's script is copied to `R\plans\<file name>` once per process (again after a run of it
//! fails: the host may have lost the file), the values travel as `-Name "value"` parameters
//! after `-File`, and the answer is the JSON between the markers.
//!
//! Windows' sftp-server reads a path without a leading `/` relative to the account's home
//! directory: `C:\a\b` goes to sftp as `/C:/a/b`, never `C:/a/b` ([`sftp_path`]).
//!
//! Every call has a deadline (a plan's own [`Plan::deadline`]) and its child is killed when the
//! deadline passes (`kill_on_drop`): a hung host or connection never holds slipwayd. A non-zero
//! exit, or any text on stderr, is an error carrying that text (PowerShell writes a failing
//! script's own message there).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Mutex;

use super::plan::{Param, Plan};

/// The line before a plan's answer on stdout.
pub const BEGIN: &str = "<<<slipway-begin>>>";
/// The line after a plan's answer on stdout.
pub const END: &str = "<<<slipway-end>>>";
/// How long a plan may run, by default ([`Plan::deadline`]; `stop-vm`'s is longer).
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How long a plan that only asks (`status`, `beacon`) may run: the loop waits on statuses, so
/// a host that cannot say what a VM does within this is read as not answering (the VM's
/// status is unknown, which changes nothing) rather than holding the loop for minutes.
pub const ASK_DEADLINE: Duration = Duration::from_secs(30);
/// An upload's deadline is this plus its size at [`UPLOAD_FLOOR_RATE`]: only a transfer that
/// stalls far below any LAN's speed is killed.
pub const UPLOAD_BASE: Duration = Duration::from_secs(120);
/// Bytes per second an upload is allowed to fall to before its deadline passes (1 MiB/s).
pub const UPLOAD_FLOOR_RATE: u64 = 1 << 20;
/// Seconds ssh waits for the TCP connection (`ConnectTimeout`).
const CONNECT_TIMEOUT_SECS: u32 = 15;
/// The byte-order mark Windows PowerShell 5.1 may write before its first line (UTF-8 output).
const BOM: char = '\u{feff}';
/// The most of a tool's stderr kept in an error.
const STDERR_CAP: usize = 2048;
/// The most of stdout quoted when the answer's markers are missing.
const EXCERPT_CAP: usize = 300;
/// The PowerShell arguments before the script's own parameters.
const POWERSHELL_ARGS: [&str; 5] = [
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-File",
];

/// What went wrong running a plan or copying a file.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A value cannot be passed safely, so nothing ran.
    #[error(
        "refused to run plan {action}: {source}; names, MACs, templates and paths given to \
         Hyper-V must not hold \" % ! ^ & | < > or control characters: change the value in host.toml"
    )]
    Refused {
        /// The plan's action.
        action: &'static str,
        /// The value refused.
        #[source]
        source: super::plan::BadValue,
    },
    /// A path cannot be written into an sftp batch safely, so nothing ran.
    #[error(
        "refused to copy with sftp: {path:?} holds {found:?} (quotes, backslashes, wildcards and \
         control characters cannot be passed through an sftp batch): use another path"
    )]
    BadPath {
        /// The path.
        path: String,
        /// The character refused.
        found: char,
    },
    /// A path on the host that sftp cannot reach: not `X:\...` with a drive letter.
    #[error(
        "refused to copy with sftp: {path:?} is not an absolute Windows path with a drive letter \
         (C:\\...), the only kind Windows' sftp server reaches: set [hypervisor] root to one"
    )]
    NotDrivePath {
        /// The path.
        path: String,
    },
    /// The program could not be started.
    #[error("cannot start {program}: {source}; install it (ssh and sftp: the OpenSSH client)")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The call did not finish in time; its process was killed.
    #[error(
        "{action} did not finish in {secs} s and was killed: the Hyper-V host or the connection \
         to it hangs; check the host"
    )]
    Timeout {
        /// What was being done.
        action: String,
        /// The deadline in seconds.
        secs: u64,
    },
    /// ssh could not reach the host (ssh's own exit status 255).
    #[error(
        "cannot reach {target} over SSH: {stderr}; check [hypervisor] executor, the identity \
         and known_hosts files, and that the host's OpenSSH server runs"
    )]
    Connect {
        /// `user@host`.
        target: String,
        /// ssh's message.
        stderr: String,
    },
    /// The plan exited with a non-zero status.
    #[error("plan {action} failed (exit status {code:?}): {stderr}")]
    Exit {
        /// What was run.
        action: String,
        /// Its exit code (None when killed by a signal).
        code: Option<i32>,
        /// Its stderr (the script's own message).
        stderr: String,
    },
    /// The plan exited with 0 but wrote to stderr: taken as a failure, since PowerShell reports
    /// non-terminating errors there.
    #[error("plan {action} reported an error: {stderr}")]
    Stderr {
        /// What was run.
        action: String,
        /// What it wrote.
        stderr: String,
    },
    /// The plan's stdout had no single answer between the markers.
    #[error(
        "plan {action} gave no answer between {BEGIN} and {END} (is the script on the host \
         the one slipwayd uploaded?); its output began: {excerpt:?}"
    )]
    NoAnswer {
        /// What was run.
        action: String,
        /// The start of stdout.
        excerpt: String,
    },
    /// The text between the markers is not one JSON object.
    #[error("plan {action} answered with broken JSON ({source}): {excerpt:?}")]
    BadJson {
        /// What was run.
        action: String,
        /// The start of the answer.
        excerpt: String,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// sftp could not copy a file, or could not list one.
    #[error(
        "cannot copy to {remote} on the Hyper-V host: {stderr}; check that the path's drive \
         exists and the SSH account may write there"
    )]
    Upload {
        /// The Windows path.
        remote: String,
        /// sftp's message (its last lines).
        stderr: String,
    },
    /// A local file operation failed (the Local executor, or a plan written for upload).
    #[error("cannot {action} {path}: {source}")]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where plans run.
#[derive(Debug)]
pub enum Executor {
    /// On this machine (slipwayd runs on the Hyper-V host).
    Local(Local),
    /// On a host reached over SSH.
    Ssh(Ssh),
}

/// Runs `powershell.exe` on this machine.
#[derive(Debug)]
pub struct Local {
    /// The PowerShell program (`powershell.exe`).
    pub program: PathBuf,
    /// The root directory R (plans go to `R\plans`).
    pub root: PathBuf,
    scripts: Gates,
}

/// Runs `powershell` on a host over SSH (`ssh`/`sftp` from PATH).
#[derive(Debug)]
pub struct Ssh {
    /// `user@host`.
    pub target: String,
    /// The SSH port, when not 22.
    pub port: Option<u16>,
    /// The private key file (`-i`), when not ssh's default.
    pub identity: Option<PathBuf>,
    /// The known_hosts file holding the host's key, when not ssh's default.
    pub known_hosts: Option<PathBuf>,
    /// The root directory R on the host, a Windows path (`C:\ClusterStorage\Volume1\Slipway`).
    pub root: String,
    scripts: Gates,
}

impl Local {
    /// An executor running `program` with plans under `root`.
    pub fn new(program: PathBuf, root: PathBuf) -> Local {
        Local {
            program,
            root,
            scripts: Gates::default(),
        }
    }
}

impl Ssh {
    /// An executor reaching `target` (`user@host`) on port 22 with ssh's default identity and
    /// known_hosts; set the public fields for others.
    pub fn new(target: String, root: String) -> Ssh {
        Ssh {
            target,
            port: None,
            identity: None,
            known_hosts: None,
            root,
            scripts: Gates::default(),
        }
    }

    /// The options shared by ssh and sftp: never prompt, never trust an unknown or changed host
    /// key, give up on a dead connection, and keep ssh's own warnings off stderr (stderr text
    /// is a plan's failure).
    fn options(&self, command: &mut Command, port_flag: &str) {
        command.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
        ]);
        command.arg(format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"));
        if let Some(port) = self.port {
            command.arg(port_flag).arg(port.to_string());
        }
        if let Some(identity) = &self.identity {
            command.arg("-i").arg(identity);
            command.args(["-o", "IdentitiesOnly=yes"]);
        }
        if let Some(known_hosts) = &self.known_hosts {
            let mut option = std::ffi::OsString::from("UserKnownHostsFile=");
            option.push(known_hosts);
            command.arg("-o").arg(option);
        }
    }

    /// The Windows path of the plans directory.
    fn plans_dir(&self) -> String {
        format!("{}\\plans", self.root.trim_end_matches('\\'))
    }

    /// Runs an sftp batch; the deadline bounds it.
    async fn sftp(
        &self,
        batch: String,
        deadline: Duration,
        action: &str,
    ) -> Result<Output, ExecError> {
        let mut command = Command::new("sftp");
        command.args(["-b", "-"]);
        self.options(&mut command, "-P");
        command.arg("--").arg(&self.target);
        finish(command, Some(batch.into_bytes()), deadline, action).await
    }

    async fn run(&self, plan: &Plan) -> Result<String, ExecError> {
        let plans_dir = self.plans_dir();
        let line =
            super::plan::command_line(plan, &plans_dir).map_err(|source| ExecError::Refused {
                action: plan.action,
                source,
            })?;
        let name = plan.file_name();
        let gate = self.scripts.gate(&name);
        {
            let mut there = gate.lock().await;
            let remote = format!("{plans_dir}\\{name}");
            // Named by its content, a script on the host is the right one: it is never replaced
            // (another run of it may be reading it), only copied again when it is gone.
            if !*there && !self.exists(&remote).await? {
                let local = tempfile::NamedTempFile::new().map_err(|source| ExecError::File {
                    action: "create a temporary file for plan",
                    path: std::env::temp_dir(),
                    source,
                })?;
                std::fs::write(local.path(), plan.script).map_err(|source| ExecError::File {
                    action: "write",
                    path: local.path().to_owned(),
                    source,
                })?;
                self.upload(local.path(), &remote).await?;
            }
            *there = true;
        }
        let result = self.run_uploaded(plan, line).await;
        forget_on(&result, &gate).await;
        result
    }

    /// Runs the command line of a plan whose script is on the host.
    async fn run_uploaded(&self, plan: &Plan, line: String) -> Result<String, ExecError> {
        let mut command = Command::new("ssh");
        command.arg("-T");
        self.options(&mut command, "-p");
        command.arg("--").arg(&self.target).arg(line);
        let output = finish(command, None, plan.deadline, plan.action).await?;
        if output.status.code() == Some(255) {
            return Err(ExecError::Connect {
                target: self.target.clone(),
                stderr: cap(&output.stderr, false),
            });
        }
        answer(plan.action, &output)
    }

    async fn upload(&self, local: &Path, remote: &str) -> Result<(), ExecError> {
        let local_text = local.to_string_lossy();
        check_sftp_path(&local_text)?;
        let remote_sftp = sftp_path(remote)?;
        let size = tokio::fs::metadata(local)
            .await
            .map_err(|source| ExecError::File {
                action: "read the size of",
                path: local.to_owned(),
                source,
            })?
            .len();
        let mut batch = String::new();
        let levels: Vec<&str> = remote_sftp.split('/').collect();
        for depth in 1..levels.len() {
            let dir = levels[..depth].join("/");
            if !dir.is_empty() {
                let _ = writeln!(batch, "-mkdir \"{dir}\"");
            }
        }
        let _ = writeln!(batch, "put \"{local_text}\" \"{remote_sftp}.part\"");
        let _ = writeln!(batch, "-rm \"{remote_sftp}\"");
        let _ = writeln!(batch, "rename \"{remote_sftp}.part\" \"{remote_sftp}\"");
        let deadline = UPLOAD_BASE + Duration::from_secs(size / UPLOAD_FLOOR_RATE);
        let output = self
            .sftp(batch, deadline, &format!("upload to {remote}"))
            .await?;
        if output.status.code() == Some(255) {
            return Err(ExecError::Connect {
                target: self.target.clone(),
                stderr: cap(&output.stderr, true),
            });
        }
        if !output.status.success() {
            return Err(ExecError::Upload {
                remote: remote.to_owned(),
                stderr: cap(&output.stderr, true),
            });
        }
        Ok(())
    }

    async fn exists(&self, remote: &str) -> Result<bool, ExecError> {
        let remote_sftp = sftp_path(remote)?;
        let output = self
            .sftp(
                format!("ls \"{remote_sftp}\"\n"),
                RUN_DEADLINE,
                &format!("look for {remote}"),
            )
            .await?;
        let stderr = cap(&output.stderr, true);
        match output.status.code() {
            Some(0) => Ok(true),
            Some(255) => Err(ExecError::Connect {
                target: self.target.clone(),
                stderr,
            }),
            // sftp's own message for a path that is not there, whatever the server.
            _ if stderr.contains("not found") => Ok(false),
            _ => Err(ExecError::Upload {
                remote: remote.to_owned(),
                stderr,
            }),
        }
    }
}

impl Local {
    async fn run(&self, plan: &Plan) -> Result<String, ExecError> {
        let plans_dir = self.root.join("plans");
        // The command line itself is not used here (no shell between us and PowerShell), but
        // its refusals are: the same values fail the same way on both executors.
        super::plan::command_line(plan, &plans_dir.to_string_lossy()).map_err(|source| {
            ExecError::Refused {
                action: plan.action,
                source,
            }
        })?;
        let name = plan.file_name();
        let script = plans_dir.join(&name);
        let gate = self.scripts.gate(&name);
        {
            let mut there = gate.lock().await;
            // Named by its content: never replaced while another run may read it.
            if !*there && !tokio::fs::try_exists(&script).await.unwrap_or(false) {
                write_atomically(&script, plan.script.as_bytes()).await?;
            }
            *there = true;
        }
        let mut command = Command::new(&self.program);
        command.args(POWERSHELL_ARGS).arg(&script);
        for (name, value) in &plan.params {
            command.arg(format!("-{name}"));
            match value {
                Param::Text(text) => command.arg(text),
                Param::Int(n) => command.arg(n.to_string()),
            };
        }
        let result = match finish(command, None, plan.deadline, plan.action).await {
            Ok(output) => answer(plan.action, &output),
            Err(err) => Err(err),
        };
        forget_on(&result, &gate).await;
        result
    }

    async fn upload(&self, local: &Path, remote: &str) -> Result<(), ExecError> {
        let remote = Path::new(remote);
        let part = part_path(remote);
        create_parent(remote).await?;
        tokio::fs::copy(local, &part)
            .await
            .map_err(|source| ExecError::File {
                action: "copy to",
                path: part.clone(),
                source,
            })?;
        rename_over(&part, remote).await
    }
}

impl Executor {
    /// Runs `plan` and returns its answer: the text between the [`BEGIN`] and [`END`] lines,
    /// checked to be one JSON object.
    /// The plan's script is copied to `R\plans\<file name>` first, once per process and again
    /// after a run of it failed as a missing script would. The whole run (the look for the
    /// script included) is given up after its [`Plan::deadline`], its process killed.
    pub async fn run(&self, plan: &Plan) -> Result<String, ExecError> {
        // The deadline covers the whole run: a wait for the script's gate and a look for the
        // script on a host that hangs count too.
        let work = async {
            match self {
                Executor::Local(local) => local.run(plan).await,
                Executor::Ssh(ssh) => ssh.run(plan).await,
            }
        };
        match tokio::time::timeout(plan.deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout {
                action: plan.action.to_owned(),
                secs: plan.deadline.as_secs(),
            }),
        }
    }

    /// Copies the local file `local` to `remote` (a Windows path), creating its directories;
    /// the file appears under its name only once whole (copied to `NAME.part`, then renamed),
    /// replacing what was there. Over SSH the deadline is [`UPLOAD_BASE`] plus the size at
    /// [`UPLOAD_FLOOR_RATE`]; a local copy has none.
    pub async fn upload(&self, local: &Path, remote: &str) -> Result<(), ExecError> {
        match self {
            Executor::Local(executor) => executor.upload(local, remote).await,
            Executor::Ssh(ssh) => ssh.upload(local, remote).await,
        }
    }

    /// Whether `remote` (a Windows path) exists on the host.
    pub async fn exists(&self, remote: &str) -> Result<bool, ExecError> {
        match self {
            Executor::Local(_) => {
                tokio::fs::try_exists(remote)
                    .await
                    .map_err(|source| ExecError::File {
                        action: "look for",
                        path: PathBuf::from(remote),
                        source,
                    })
            }
            Executor::Ssh(ssh) => ssh.exists(remote).await,
        }
    }
}

/// Files known to be on the host (an executor's plan scripts, the driver's images): one gate
/// per file, holding whether it is there. Looks for (and copies of) one file are made one at a
/// time; those of other files never wait for them.
#[derive(Debug, Default)]
pub struct Gates {
    gates: std::sync::Mutex<HashMap<String, Arc<Mutex<bool>>>>,
}

impl Gates {
    /// File `name`'s gate.
    pub fn gate(&self, name: &str) -> Arc<Mutex<bool>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        gates.entry(name.to_owned()).or_default().clone()
    }
}

/// After a run that failed in a way a missing script would (`R\plans` cleaned: PowerShell
/// exits non-zero, or answers nothing), the next run looks for the script again and copies it
/// if it is gone, rather than fail the same way until slipwayd restarts. A host out of reach or
/// too slow (a timeout) says nothing of the script: the next run does not look again, so runs
/// that pile up on a hung host do not queue behind each other's looks.
async fn forget_on(result: &Result<String, ExecError>, gate: &Mutex<bool>) {
    if matches!(
        result,
        Err(ExecError::Exit { .. } | ExecError::Stderr { .. } | ExecError::NoAnswer { .. })
    ) {
        *gate.lock().await = false;
    }
}

/// The sftp form of the Windows path `win` (`X:\a\b` or `X:/a/b`): `/X:/a/b`. Windows'
/// sftp-server takes a path without the leading `/` as relative to the account's home
/// directory, so `C:/a` would land in `C:\Users\NAME\C:\a` (or fail); with it, the drive is
/// the root. Refuses a path without a drive letter (UNC, relative), and what
/// [`check_sftp_path`] refuses.
pub fn sftp_path(win: &str) -> Result<String, ExecError> {
    let bytes = win.as_bytes();
    let drive = bytes.first().is_some_and(u8::is_ascii_alphabetic)
        && bytes.get(1) == Some(&b':')
        && matches!(bytes.get(2), Some(b'\\' | b'/'));
    if !drive {
        return Err(ExecError::NotDrivePath {
            path: win.to_owned(),
        });
    }
    let path = format!("/{}", win.replace('\\', "/"));
    check_sftp_path(&path)?;
    Ok(path)
}

/// Refuses what an sftp batch line would interpret inside double quotes: quotes, escapes,
/// wildcards (`put`, `rm` and `ls` expand them) and control characters.
fn check_sftp_path(path: &str) -> Result<(), ExecError> {
    match path
        .chars()
        .find(|c| matches!(c, '"' | '\\' | '*' | '?' | '[' | ']') || c.is_control())
    {
        Some(found) => Err(ExecError::BadPath {
            path: path.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

/// Runs `command` with `stdin` (or none) to completion or the deadline, whichever is first;
/// on the deadline the child is killed.
async fn finish(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    deadline: Duration,
    action: &str,
) -> Result<Output, ExecError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| ExecError::Spawn {
        program: PathBuf::from(command.as_std().get_program()),
        source,
    })?;
    let feed = child.stdin.take();
    let work = async move {
        if let (Some(mut pipe), Some(bytes)) = (feed, stdin) {
            use tokio::io::AsyncWriteExt as _;
            // A child that exits early closes the pipe: its exit status tells why.
            let _ = pipe.write_all(&bytes).await;
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(deadline, work).await {
        Err(_) => Err(ExecError::Timeout {
            action: action.to_owned(),
            secs: deadline.as_secs(),
        }),
        Ok(Err(source)) => Err(ExecError::Spawn {
            program: PathBuf::from(command.as_std().get_program()),
            source,
        }),
        Ok(Ok(output)) => Ok(output),
    }
}

/// A plan's answer from its output: exit 0, nothing on stderr, one answer between the markers.
fn answer(action: &str, output: &Output) -> Result<String, ExecError> {
    if !output.status.success() {
        return Err(ExecError::Exit {
            action: action.to_owned(),
            code: output.status.code(),
            stderr: cap(&output.stderr, false),
        });
    }
    let stderr = cap(&output.stderr, false);
    if !stderr.is_empty() {
        return Err(ExecError::Stderr {
            action: action.to_owned(),
            stderr,
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Windows PowerShell 5.1 may begin its output with a byte-order mark, and ends lines with
    // CRLF: neither is part of a line.
    let lines: Vec<&str> = stdout
        .lines()
        .map(|l| l.trim_start_matches(BOM).trim_end_matches('\r'))
        .collect();
    let at =
        |marker: &str| -> Vec<usize> { (0..lines.len()).filter(|&i| lines[i] == marker).collect() };
    match (at(BEGIN).as_slice(), at(END).as_slice()) {
        ([begin], [end]) if begin < end => {
            let text = lines[begin + 1..*end].join("\n");
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text) {
                Ok(_) => Ok(text),
                Err(source) => Err(ExecError::BadJson {
                    action: action.to_owned(),
                    excerpt: text.chars().take(EXCERPT_CAP).collect(),
                    source,
                }),
            }
        }
        _ => Err(ExecError::NoAnswer {
            action: action.to_owned(),
            excerpt: stdout.chars().take(EXCERPT_CAP).collect(),
        }),
    }
}

/// Text of a tool's stderr, trimmed and capped at [`STDERR_CAP`] bytes (its start, or its end
/// for sftp whose last lines say what failed).
fn cap(bytes: &[u8], tail: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    // A byte-order mark alone is no message.
    let text = text.trim_matches(|c: char| c == BOM || c.is_whitespace());
    if text.len() <= STDERR_CAP {
        return text.to_owned();
    }
    if tail {
        let mut start = text.len() - STDERR_CAP;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!("...{}", &text[start..])
    } else {
        let mut end = STDERR_CAP;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    }
}

/// `PATH.part`.
fn part_path(path: &Path) -> PathBuf {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    PathBuf::from(part)
}

/// Makes the directory `path` is in, with its parents.
async fn create_parent(path: &Path) -> Result<(), ExecError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|source| ExecError::File {
            action: "create the directory",
            path: parent.to_owned(),
            source,
        })
}

/// Writes `bytes` to `path` through `path.part` and a rename.
async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExecError> {
    create_parent(path).await?;
    let part = part_path(path);
    tokio::fs::write(&part, bytes)
        .await
        .map_err(|source| ExecError::File {
            action: "write",
            path: part.clone(),
            source,
        })?;
    rename_over(&part, path).await
}

/// Renames `part` to `path`, replacing it.
async fn rename_over(part: &Path, path: &Path) -> Result<(), ExecError> {
    tokio::fs::rename(part, path)
        .await
        .map_err(|source| ExecError::File {
            action: "rename into place",
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
