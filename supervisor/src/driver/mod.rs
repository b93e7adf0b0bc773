//! Hypervisor drivers.

pub mod qemu;
