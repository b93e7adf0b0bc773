//! Hypervisor drivers and the node network.

pub mod network;
pub mod qemu;
