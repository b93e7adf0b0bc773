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

impl Plan {
    /// The script's file name on the host: `ACTION-HEX.ps1`, HEX the first 16 hex digits of the
    /// script's sha256 (a changed script is a new file; an unchanged one is uploaded once).
    pub fn file_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.script.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}.ps1", self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_file_is_named_by_its_action_and_content() {
        let plan = |script| Plan {
            action: "status",
            script,
            params: Vec::new(),
        };
        let name = plan("# slipway-plan: status\n").file_name();
        assert!(name.starts_with("status-") && name.ends_with(".ps1") && name.len() == 27);
        assert_ne!(name, plan("# slipway-plan: status\n# v2\n").file_name());
    }
}
