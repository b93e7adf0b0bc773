//! Node VMs on Hyper-V hosts, as PowerShell plans: each lifecycle action is a script with a
//! `param()` block ([`plan`]), run by an executor ([`exec`]) on the Windows host itself or over
//! SSH from a Linux management VM; its answer is JSON between markers ([`parse`]).

pub mod driver;
pub mod exec;
pub mod parse;
pub mod plan;
