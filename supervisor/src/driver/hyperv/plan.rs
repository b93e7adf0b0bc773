//! The lifecycle actions as plans: one PowerShell script per action (`plans/*.ps1`, each with a
//! `param()` block) and the values it is given as parameters. A value is never written into a
//! script's text: the executor passes each one as `-Name value` after `-File`, the way Packer's
//! Hyper-V plugin runs its scripts.

/// One action: its script and the values bound to the script's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The action's name, also the script's first line (`# slipway-plan: NAME`).
    pub action: &'static str,
    /// The script's text.
    pub script: &'static str,
    /// Parameter name (without the dash) and value, in the script's `param()` order.
    pub params: Vec<(&'static str, Param)>,
}

/// A parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// A string parameter.
    Text(String),
    /// An integer parameter (`[long]` or `[int]` in the script).
    Int(i64),
}
