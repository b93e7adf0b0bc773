//! A private key's passphrase: read once, while the arguments are parsed, and kept out of every
//! child process, log line and `Debug` output.
//!
//! A passphrase given as `--passphrase-env VAR` is read when clap parses the arguments, and
//! `main` then takes `VAR` out of the process environment ([`remove_from_env`]) before anything
//! else runs: a build starts mmdebstrap (whose maintainer scripts run as root), apt and mkfs,
//! and none of them inherits the variable. Removing it changes only libc's list: the kernel
//! still shows the initial environment, variable and all, in `/proc/PID/environ`, which every
//! process of the same user may read (the tools of a build run by an unprivileged user are such
//! processes). So `main` first makes the process non-dumpable (`PR_SET_DUMPABLE` 0, see
//! [`hide_process`]), on every run: that leaves that file, and `/proc/PID/mem` (a build holds
//! decrypted private keys in memory), to root (`CAP_SYS_PTRACE`) alone, whatever
//! `kernel.yama.ptrace_scope` says; it also stops core dumps, which could hold them too.
//! `--passphrase-file` keeps the passphrase out of any environment and is the better choice
//! where it can be used.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args};
use images::sign::PrivateKey;
use zeroize::Zeroizing;

/// The clap id of `--passphrase-env` (the field's name in [`Passphrase`]).
const PASSPHRASE_ENV: &str = "passphrase_env";

/// Errors reading a passphrase or taking it out of the environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The variable is unset.
    #[error("the environment variable {var} (the key's passphrase) is not set")]
    FindVariable {
        /// The variable.
        var: String,
    },
    /// The variable is not UTF-8 (its value, the passphrase, is never shown: no `#[source]`).
    #[error("the environment variable {var} (the key's passphrase) is not valid UTF-8")]
    DecodeVariable {
        /// The variable.
        var: String,
    },
    /// The variable is set but empty.
    #[error(
        "the environment variable {var} (the key's passphrase) is empty: set it, or give no \
         passphrase option for an unencrypted key"
    )]
    EmptyVariable {
        /// The variable.
        var: String,
    },
    /// The passphrase file could not be read.
    #[error("cannot read the passphrase file {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The passphrase file's first line is empty.
    #[error(
        "the passphrase file {} is empty (its first line is the passphrase): write the \
         passphrase there, or give no passphrase option for an unencrypted key",
        path.display()
    )]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// The threads of this process could not be counted.
    #[error("cannot count this process's threads in /proc/self/task")]
    CountThreads {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be made non-dumpable.
    #[error(
        "cannot make this process non-dumpable: its memory (decrypted keys) and \
         /proc/PID/environ would stay readable by other processes of this user"
    )]
    HideProcess {
        /// The cause.
        #[source]
        source: rustix::io::Errno,
    },
    /// Other threads run, so the environment cannot be changed safely.
    #[error("cannot take {var} out of the environment: {threads} threads run (only the first may)")]
    ShareEnvironment {
        /// The variable.
        var: String,
        /// How many threads run.
        threads: usize,
    },
}

/// Secret bytes: zeroed when dropped, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// The secret's bytes (to hand to the key's decryption, never to a log).
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A secret read from an environment variable while the arguments were parsed.
#[derive(Clone, Debug)]
pub struct EnvSecret {
    var: String,
    secret: Secret,
}

impl EnvSecret {
    /// Reads `var` now; an unset or empty variable is refused (clap's value parser).
    fn read(var: &str) -> Result<EnvSecret, Error> {
        EnvSecret::from_value(var, std::env::var(var))
    }

    /// Checks `value`, the variable `var` as read; the error never holds the value.
    fn from_value(
        var: &str,
        value: Result<String, std::env::VarError>,
    ) -> Result<EnvSecret, Error> {
        let value = match value {
            Ok(value) => Zeroizing::new(value),
            Err(std::env::VarError::NotPresent) => {
                return Err(Error::FindVariable {
                    var: var.to_owned(),
                });
            }
            Err(std::env::VarError::NotUnicode(value)) => {
                // Zeroed as it is dropped.
                drop(Zeroizing::new(value.into_vec()));
                return Err(Error::DecodeVariable {
                    var: var.to_owned(),
                });
            }
        };
        if value.is_empty() {
            return Err(Error::EmptyVariable {
                var: var.to_owned(),
            });
        }
        Ok(EnvSecret {
            var: var.to_owned(),
            secret: Secret(Zeroizing::new(value.as_bytes().to_vec())),
        })
    }
}

/// Where a private key's passphrase comes from.
#[derive(Debug, Args)]
pub struct Passphrase {
    /// Read the key's passphrase from this file (first line).
    #[arg(long, value_name = "FILE", conflicts_with = PASSPHRASE_ENV)]
    passphrase_file: Option<PathBuf>,
    /// Read the key's passphrase from this environment variable (which slipway then removes
    /// from its environment, so no tool it runs sees it).
    #[arg(long, value_name = "VAR", value_parser = EnvSecret::read)]
    passphrase_env: Option<EnvSecret>,
}

impl Passphrase {
    /// The passphrase, if one was given; an empty one is refused.
    pub fn get(&self) -> Result<Option<Secret>, Error> {
        if let Some(path) = &self.passphrase_file {
            return read_file(path).map(Some);
        }
        Ok(self.passphrase_env.as_ref().map(|e| e.secret.clone()))
    }

    /// Reads the private key at `path` with this passphrase.
    pub fn read_key(&self, path: &Path) -> anyhow::Result<PrivateKey> {
        let passphrase = self.get()?;
        Ok(PrivateKey::read(
            path,
            passphrase.as_ref().map(Secret::as_slice),
        )?)
    }
}

/// The first line of `path`, refused when empty.
fn read_file(path: &Path) -> Result<Secret, Error> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?,
    );
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(Error::EmptyFile {
            path: path.to_owned(),
        });
    }
    Ok(Secret(Zeroizing::new(line.as_bytes().to_vec())))
}

/// The variables secrets were read from in `matches` (at any subcommand depth).
pub fn variables_read(matches: &ArgMatches) -> Vec<String> {
    let mut vars = Vec::new();
    let mut level = Some(matches);
    while let Some(m) = level {
        // An unknown id (a command without the option) is an error here, not a panic.
        if let Ok(Some(secret)) = m.try_get_one::<EnvSecret>(PASSPHRASE_ENV) {
            vars.push(secret.var.clone());
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    vars
}

/// Makes this process non-dumpable, so that no other process but root's can read its memory
/// (`/proc/PID/mem`, ptrace: decrypted private keys) or its initial environment
/// (`/proc/PID/environ`: a `--passphrase-env` variable), and no core dump is written. Call it
/// first thing in `main`, on every run, before any tool is started. It applies to the whole
/// process whatever its threads; the tools it runs are dumpable again once they `exec`.
pub fn hide_process() -> Result<(), Error> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|source| Error::HideProcess { source })
}

/// Removes `vars` from this process's environment, so that no child process inherits them
/// ([`hide_process`] closes `/proc/PID/environ`, which keeps the initial environment). Refused
/// unless this is the process's only thread (when there are variables to remove): call it
/// first thing in `main`.
#[allow(unsafe_code)]
pub fn remove_from_env(vars: &[String]) -> Result<(), Error> {
    let Some(first) = vars.first() else {
        return Ok(());
    };
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|source| Error::CountThreads { source })?
        .count();
    if threads != 1 {
        return Err(Error::ShareEnvironment {
            var: first.clone(),
            threads,
        });
    }
    for var in vars {
        // SAFETY: changing the environment is unsound only while another thread may read or
        // write it. This thread is the process's only one (counted above), and only it could
        // start another, which it does not do before the call returns.
        unsafe { std::env::remove_var(var) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Sign {
            #[command(flatten)]
            passphrase: Passphrase,
        },
        Verify,
    }

    fn parse(args: &[&str]) -> (Cli, ArgMatches) {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        (Cli::from_arg_matches(&matches).unwrap(), matches)
    }

    #[test]
    fn the_variable_read_is_named_for_removal_and_its_value_kept() {
        // PATH is set wherever tests run, and reading it changes nothing.
        let path = std::env::var("PATH").unwrap();
        let (cli, matches) = parse(&["slipway", "sign", "--passphrase-env", "PATH"]);
        assert_eq!(variables_read(&matches), ["PATH"]);
        let Sub::Sign { passphrase } = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let secret = passphrase.get().unwrap().unwrap();
        assert_eq!(secret.as_slice(), path.as_bytes());

        let (_, matches) = parse(&["slipway", "verify"]);
        assert!(variables_read(&matches).is_empty());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let passphrase = Passphrase {
            passphrase_file: None,
            passphrase_env: Some(EnvSecret {
                var: "RELEASE_PASSPHRASE".into(),
                secret: Secret(Zeroizing::new(b"hunter2".to_vec())),
            }),
        };
        let shown = format!("{passphrase:?} {:#?}", passphrase.get().unwrap());
        assert!(shown.contains("RELEASE_PASSPHRASE"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn an_unset_variable_is_refused_with_its_name() {
        let err = Cli::command()
            .try_get_matches_from([
                "slipway",
                "sign",
                "--passphrase-env",
                "SLIPWAY_SURELY_UNSET_VARIABLE",
            ])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the environment variable SLIPWAY_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
    }

    #[test]
    fn a_variable_that_is_not_utf8_is_refused_without_its_value() {
        let value = std::ffi::OsString::from_vec(b"hunter2-marker\xff".to_vec());
        let err = EnvSecret::from_value(
            "RELEASE_PASSPHRASE",
            Err(std::env::VarError::NotUnicode(value)),
        )
        .unwrap_err();
        let mut shown = format!("{err:?}");
        let mut cause: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = cause {
            shown.push_str(&format!("\n{e}"));
            cause = e.source();
        }
        assert!(shown.contains("RELEASE_PASSPHRASE"), "{shown}");
        assert!(shown.contains("not valid UTF-8"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_environment_is_not_changed_while_other_threads_run() {
        // The test harness runs this test on a thread of its own (and the others beside it).
        let err = remove_from_env(&["SLIPWAY_SURELY_UNSET_VARIABLE".into()]).unwrap_err();
        assert!(matches!(err, Error::ShareEnvironment { threads, .. } if threads > 1));
    }
}
