//! An async QMP client over the VM's unix socket. Every read and write is bounded by a timeout:
//! a QEMU that is stopped or hung accepts the connection (the kernel queues it) and then never
//! speaks, and that must cost the caller the timeout, not forever.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The longest QMP message read (answers to the commands sent here are a few hundred bytes).
const MAX_MESSAGE: u64 = 1 << 20;

/// Errors of a QMP exchange.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket did not take the connection (no QEMU listens there).
    #[error("cannot connect to the QMP socket {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("QMP {command} on {path}: cannot {action}")]
    Exchange {
        /// The socket.
        path: PathBuf,
        /// The command (or `greeting`).
        command: String,
        /// `read` or `write`.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU did not answer in time.
    #[error("QMP {command} on {path}: no answer within {timeout:?} (is QEMU hung or stopped?)")]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
        /// The bound.
        timeout: Duration,
    },
    /// QEMU closed the connection.
    #[error("QMP {command} on {path}: QEMU closed the connection")]
    Closed {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
    },
    /// The answer was no JSON, or a QMP error.
    #[error("QMP {command} on {path} failed: {message}")]
    Refused {
        /// The socket.
        path: PathBuf,
        /// The command.
        command: String,
        /// QEMU's error, or why its answer could not be read.
        message: String,
    },
}

/// A QMP session in command mode.
pub struct Client {
    path: PathBuf,
    timeout: Duration,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to the QMP socket `path`, reads the greeting and leaves capabilities negotiation;
    /// each step, and each later answer, may take `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Client, Error> {
        let stream = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
            Ok(stream) => stream.map_err(|source| Error::Connect {
                path: path.to_owned(),
                source,
            })?,
            Err(_) => {
                return Err(Error::Timeout {
                    path: path.to_owned(),
                    command: "connect".into(),
                    timeout,
                });
            }
        };
        let (read, writer) = stream.into_split();
        let mut client = Client {
            path: path.to_owned(),
            timeout,
            reader: BufReader::new(read),
            writer,
        };
        client.read_message("greeting").await?;
        client.execute("qmp_capabilities").await?;
        Ok(client)
    }

    async fn read_message(&mut self, command: &str) -> Result<serde_json::Value, Error> {
        let mut line = String::new();
        // A line longer than any QMP answer is cut there and fails to parse.
        let mut bounded = (&mut self.reader).take(MAX_MESSAGE);
        let read = tokio::time::timeout(self.timeout, bounded.read_line(&mut line)).await;
        match read {
            Err(_) => Err(Error::Timeout {
                path: self.path.clone(),
                command: command.into(),
                timeout: self.timeout,
            }),
            Ok(Err(source)) => Err(Error::Exchange {
                path: self.path.clone(),
                command: command.into(),
                action: "read",
                source,
            }),
            Ok(Ok(0)) => Err(Error::Closed {
                path: self.path.clone(),
                command: command.into(),
            }),
            Ok(Ok(_)) => serde_json::from_str(&line).map_err(|e| Error::Refused {
                path: self.path.clone(),
                command: command.into(),
                message: format!("unreadable answer: {e}"),
            }),
        }
    }

    /// Runs `command` (no arguments); returns its `return` value. Events that arrive before the
    /// answer are skipped.
    pub async fn execute(&mut self, command: &str) -> Result<serde_json::Value, Error> {
        self.execute_with(command, serde_json::Value::Null).await
    }

    /// Runs `command` with `arguments` (an object; null for none); returns its `return` value.
    pub async fn execute_with(
        &mut self,
        command: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let mut request = serde_json::json!({ "execute": command });
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        let request = request.to_string() + "\n";
        let write = tokio::time::timeout(self.timeout, self.writer.write_all(request.as_bytes()));
        match write.await {
            Err(_) => {
                return Err(Error::Timeout {
                    path: self.path.clone(),
                    command: command.into(),
                    timeout: self.timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(Error::Exchange {
                    path: self.path.clone(),
                    command: command.into(),
                    action: "write",
                    source,
                });
            }
            Ok(Ok(())) => {}
        }
        // Events before the answer are skipped, but all of it within the timeout: a QEMU
        // sending an event now and then cannot hold the caller.
        let timeout = self.timeout;
        let path = self.path.clone();
        let answer = async {
            loop {
                let reply = self.read_message(command).await?;
                if let Some(value) = reply.get("return") {
                    return Ok(value.clone());
                }
                if let Some(error) = reply.get("error") {
                    return Err(Error::Refused {
                        path: self.path.clone(),
                        command: command.into(),
                        message: error.to_string(),
                    });
                }
            }
        };
        tokio::time::timeout(timeout, answer)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    path,
                    command: command.into(),
                    timeout,
                })
            })
    }

    /// `query-status`: QEMU's run state (`running`, `paused`, `internal-error`, ...).
    pub async fn status(&mut self) -> Result<String, Error> {
        let value = self.execute("query-status").await?;
        match value.get("status").and_then(serde_json::Value::as_str) {
            Some(status) => Ok(status.to_owned()),
            None => Err(Error::Refused {
                path: self.path.clone(),
                command: "query-status".into(),
                message: format!("no status in {value}"),
            }),
        }
    }
}
