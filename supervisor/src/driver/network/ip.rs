//! iproute2's `ip`, run as a program: every change to links and addresses goes through it, and
//! every look at them reads its JSON (`ip -j`), never `/sys` or `/proc`. So the same code runs
//! in slipwayd's own network namespace or, through `Ip::in_netns` (`ip -n NAME`, for tests), in
//! one a test made: the tests never touch the namespace they run in.

use std::net::Ipv4Addr;
use std::process::Command;

use serde::Deserialize;

/// A failure of one `ip` command.
#[derive(Debug, thiserror::Error)]
pub enum IpError {
    /// `ip` could not be run.
    #[error("cannot run `{command}` (is iproute2 installed? ./scripts/setup)")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `ip` ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// What `ip -j` printed is not the JSON expected.
    #[error("cannot read what `{command}` printed")]
    ReadJson {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Where `ip` commands run: this process's network namespace, or a named one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ip {
    netns: Option<String>,
}

/// One network device as `ip -d -j link show` describes it (the fields read here).
#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    /// Its index: a device deleted and made again gets a new one.
    #[cfg_attr(not(test), allow(dead_code))] // Read by the tests' idempotence check.
    pub ifindex: u32,
    /// Its name.
    pub ifname: String,
    /// The bridge it is a port of.
    pub master: Option<String>,
    /// The device it sits on (a VLAN's uplink), when that is in the same namespace.
    pub link: Option<String>,
    /// Its kind and the kind's settings.
    pub linkinfo: Option<LinkInfo>,
}

/// A device's kind (`bridge`, `vlan`, `vxlan`, `tun`, `veth`...) and its settings.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkInfo {
    /// The kind.
    pub info_kind: Option<String>,
    /// The kind's settings (a VLAN's `id`, a VXLAN's `id`, `link` and `port`, a tun's `type`
    /// and `user`).
    #[serde(default)]
    pub info_data: serde_json::Value,
}

impl Link {
    /// Its kind, `""` when `ip` names none (a physical NIC).
    pub fn kind(&self) -> &str {
        self.linkinfo
            .as_ref()
            .and_then(|i| i.info_kind.as_deref())
            .unwrap_or("")
    }

    /// One setting of its kind (`id`, `user`...).
    pub fn data(&self, key: &str) -> Option<&serde_json::Value> {
        self.linkinfo.as_ref().and_then(|i| i.info_data.get(key))
    }
}

#[derive(Deserialize)]
struct Addresses {
    #[serde(default)]
    addr_info: Vec<Address>,
}

#[derive(Deserialize)]
struct Address {
    family: String,
    local: String,
    prefixlen: u8,
}

impl Ip {
    /// `ip` in this process's network namespace (slipwayd's).
    pub fn host() -> Ip {
        Ip { netns: None }
    }

    /// `ip -n NAME`: every command runs in the named network namespace (a test's).
    #[cfg(test)]
    pub fn in_netns(name: &str) -> Ip {
        Ip {
            netns: Some(name.to_owned()),
        }
    }

    fn command_line(&self, args: &[&str]) -> (Command, String) {
        let mut words: Vec<&str> = Vec::new();
        if let Some(netns) = &self.netns {
            words.extend(["-n", netns.as_str()]);
        }
        words.extend(args);
        let mut command = Command::new("ip");
        command.args(&words);
        (command, format!("ip {}", words.join(" ")))
    }

    /// Runs `ip ARGS`; its standard output, or its stderr as the error.
    pub fn run(&self, args: &[&str]) -> Result<String, IpError> {
        self.output(args).map(|(_, stdout)| stdout)
    }

    fn output(&self, args: &[&str]) -> Result<(String, String), IpError> {
        let (mut command, line) = self.command_line(args);
        let output = command.output().map_err(|source| IpError::Spawn {
            command: line.clone(),
            source,
        })?;
        if output.status.success() {
            Ok((line, String::from_utf8_lossy(&output.stdout).into_owned()))
        } else {
            Err(IpError::Failed {
                command: line,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T, IpError> {
        let (command, stdout) = self.output(args)?;
        serde_json::from_str(&stdout).map_err(|source| IpError::ReadJson { command, source })
    }

    /// The device `name`, if it exists.
    pub fn link(&self, name: &str) -> Result<Option<Link>, IpError> {
        match self.json::<Vec<Link>>(&["-d", "-j", "link", "show", "dev", name]) {
            Ok(links) => Ok(links.into_iter().find(|l| l.ifname == name)),
            // iproute2 6.1: `Device "NAME" does not exist.`
            Err(IpError::Failed { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every device of this namespace.
    pub fn links(&self) -> Result<Vec<Link>, IpError> {
        self.json(&["-d", "-j", "link", "show"])
    }

    /// The ports of bridge `bridge`.
    pub fn ports(&self, bridge: &str) -> Result<Vec<Link>, IpError> {
        Ok(self
            .links()?
            .into_iter()
            .filter(|l| l.master.as_deref() == Some(bridge))
            .collect())
    }

    /// The IPv4 addresses of device `name`, with their prefix lengths.
    pub fn ipv4_addresses(&self, name: &str) -> Result<Vec<(Ipv4Addr, u8)>, IpError> {
        let devices: Vec<Addresses> = self.json(&["-j", "address", "show", "dev", name])?;
        Ok(devices
            .into_iter()
            .flat_map(|d| d.addr_info)
            .filter(|a| a.family == "inet")
            .filter_map(|a| Some((a.local.parse().ok()?, a.prefixlen)))
            .collect())
    }
}
