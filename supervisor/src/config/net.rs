//! IPv4 networks and address pools as host.toml writes them.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 network, `10.44.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub address: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `A.B.C.D/N`; the host bits must be zero.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an IPv4 network like 10.44.0.0/24");
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
        let cidr = Cidr { address, prefix };
        if u32::from(address) & !cidr.mask() != 0 {
            return Err(format!(
                "{text:?} has host bits set: the network is {}/{prefix}",
                Ipv4Addr::from(u32::from(address) & cidr.mask())
            ));
        }
        Ok(cidr)
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.address)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// An inclusive range of addresses, `10.44.0.10-10.44.0.50`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// First address.
    pub first: Ipv4Addr,
    /// Last address.
    pub last: Ipv4Addr,
}

impl Pool {
    /// Parses `FIRST-LAST`.
    pub fn parse(text: &str) -> Result<Pool, String> {
        let bad = || format!("{text:?} is not an address range like 10.44.0.10-10.44.0.50");
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let first: Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
        let last: Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
        if u32::from(first) > u32::from(last) {
            return Err(format!("{text:?}: the first address comes after the last"));
        }
        Ok(Pool { first, last })
    }

    /// The `n`th address (from 0), if the pool has it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let ip = u32::from(self.first).checked_add(n)?;
        (ip <= u32::from(self.last)).then(|| Ipv4Addr::from(ip))
    }

    /// Whether `ip` is in the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}
