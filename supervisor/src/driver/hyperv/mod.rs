//! Node VMs on Hyper-V hosts, as PowerShell plans: each lifecycle action is a script with a
//! `param()` block ([`plan`]), run by an executor ([`exec`]) on the Windows host itself or over
//! SSH from a Linux management VM; its answer is JSON between markers ([`parse`]).

// The driver that runs these plans for slipwayd is not written yet (`kind = "hyperv"` is refused
// when slipwayd starts, see `daemon::driver`): until it is, only their tests use them.
#![cfg_attr(not(test), allow(dead_code))]

pub mod exec;
pub mod parse;
pub mod plan;
