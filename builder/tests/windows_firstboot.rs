//! windows-node's in-guest files (recipes/windows-node/): the first-boot agent, its
//! SetupComplete.cmd and the unattend.xml template. No Windows or PowerShell can run here, so
//! what is proven is what can be read without them:
//! - every `.ps1` parses with a real PowerShell grammar (tree-sitter-powershell), with no ERROR
//!   or MISSING node (each one printed at its line and column);
//! - the scripts call only the cmdlets of [`ALLOWED`] (each documented by Microsoft for Windows
//!   PowerShell 5.1 / Windows Server 2022) or functions they define themselves;
//! - the beacon the agent sends carries every field slipwayd's `Beacon` reads;
//! - unattend.xml is well-formed XML (`xmllint --noout`, libxml2-utils) with only the
//!   placeholders the builder renders, and SetupComplete.cmd starts the script where the
//!   builder places it.
//!
//! Each check also runs once on a broken input, to show it can fail.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Cmdlets the agent may call: each is documented for Windows PowerShell 5.1 on Windows Server
/// 2022, in MicrosoftDocs/windows-powershell-docs (`docset/winserver2022-ps/MODULE/NAME.md`) for
/// the Windows modules, or MicrosoftDocs/PowerShell-Docs (`reference/5.1/MODULE/NAME.md`) for
/// PowerShell's own.
const ALLOWED: &[&str] = &[
    // windows-powershell-docs, docset/winserver2022-ps/...
    "Get-Volume",                   // storage/
    "Get-NetAdapter",               // netadapter/
    "Get-NetIPAddress",             // nettcpip/
    "New-NetIPAddress",             // nettcpip/
    "Remove-NetIPAddress",          // nettcpip/
    "Set-NetIPInterface",           // nettcpip/
    "Get-NetRoute",                 // nettcpip/
    "New-NetRoute",                 // nettcpip/
    "Remove-NetRoute",              // nettcpip/
    "Set-DnsClientServerAddress",   // dnsclient/
    "Get-WindowsFeature",           // ServerManager/
    "Install-WindowsFeature",       // ServerManager/
    "Get-NetFirewallRule",          // netsecurity/
    "New-NetFirewallRule",          // netsecurity/
    "New-ScheduledTaskAction",      // scheduledtasks/
    "New-ScheduledTaskTrigger",     // scheduledtasks/
    "New-ScheduledTaskPrincipal",   // scheduledtasks/
    "New-ScheduledTaskSettingsSet", // scheduledtasks/
    "Register-ScheduledTask",       // scheduledtasks/
    "Start-ScheduledTask",          // scheduledtasks/
    "Unregister-ScheduledTask",     // scheduledtasks/
    // PowerShell-Docs, reference/5.1/...
    "Get-LocalUser",     // Microsoft.PowerShell.LocalAccounts/
    "Set-LocalUser",     // Microsoft.PowerShell.LocalAccounts/
    "Disable-LocalUser", // Microsoft.PowerShell.LocalAccounts/
    "Add-Content",       // Microsoft.PowerShell.Management/
    "Get-Content",       // Microsoft.PowerShell.Management/
    "Test-Path",         // Microsoft.PowerShell.Management/
    "Remove-Item",       // Microsoft.PowerShell.Management/
    "Join-Path",         // Microsoft.PowerShell.Management/
    "New-Item",          // Microsoft.PowerShell.Management/
    "Get-ItemProperty",  // Microsoft.PowerShell.Management/
    "Set-ItemProperty",  // Microsoft.PowerShell.Management/
    "New-ItemProperty",  // Microsoft.PowerShell.Management/
    "Get-Service",       // Microsoft.PowerShell.Management/
    "Set-Service",       // Microsoft.PowerShell.Management/
    "Start-Service",     // Microsoft.PowerShell.Management/
    "Rename-Computer",   // Microsoft.PowerShell.Management/
    "Restart-Computer",  // Microsoft.PowerShell.Management/
    "Set-Acl",           // Microsoft.PowerShell.Security/
    "ConvertFrom-Json",  // Microsoft.PowerShell.Utility/
    "ConvertTo-Json",    // Microsoft.PowerShell.Utility/
    "Get-FileHash",      // Microsoft.PowerShell.Utility/
    "Select-Object",     // Microsoft.PowerShell.Utility/
    "Start-Sleep",       // Microsoft.PowerShell.Utility/
    "Set-StrictMode",    // Microsoft.PowerShell.Core/
    "ForEach-Object",    // Microsoft.PowerShell.Core/
    "Where-Object",      // Microsoft.PowerShell.Core/
    "Out-Null",          // Microsoft.PowerShell.Core/
];

/// Where the builder places the agent, and so where SetupComplete.cmd must find it.
const AGENT_PATH: &str = r"C:\ProgramData\Slipway\firstboot.ps1";

/// The placeholders the builder renders in unattend.xml.
const PLACEHOLDERS: &[&str] = &["{{image.name}}", "{{image.version}}"];

fn recipe_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("recipes/windows-node")
}

fn scripts() -> Vec<(PathBuf, String)> {
    let mut found: Vec<_> = std::fs::read_dir(recipe_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "ps1"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no .ps1 under {:?}", recipe_dir());
    found
}

fn parse(source: &str) -> tree_sitter::Tree {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_powershell::LANGUAGE.into())
        .unwrap();
    parser.parse(source, None).unwrap()
}

/// Every node of `tree`, depth first.
fn nodes(tree: &tree_sitter::Tree) -> Vec<tree_sitter::Node<'_>> {
    let mut all = Vec::new();
    let mut cursor = tree.walk();
    loop {
        all.push(cursor.node());
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return all;
            }
        }
    }
}

fn at(node: tree_sitter::Node<'_>) -> String {
    let p = node.start_position();
    format!("{}:{}", p.row + 1, p.column + 1)
}

/// The ERROR and MISSING nodes of `source`, each as `line:column: what`.
fn syntax_errors(source: &str) -> Vec<String> {
    let tree = parse(source);
    nodes(&tree)
        .into_iter()
        .filter(|n| n.is_error() || n.is_missing())
        .map(|n| {
            let what = if n.is_missing() {
                format!("MISSING {}", n.kind())
            } else {
                let text = &source[n.byte_range()];
                let first = text.lines().next().unwrap_or("");
                format!("ERROR at `{}`", first.chars().take(60).collect::<String>())
            };
            format!("{}: {what}", at(n))
        })
        .collect()
}

/// What the grammar lets through but Windows PowerShell refuses: `$name:` followed by no name
/// (as in `"... $name: ..."`) reads as a drive-qualified variable with no name, a parse error
/// ("Variable reference is not valid"); `${name}:` or `` $name`: `` is what was meant.
fn drive_qualified_gotchas(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (row, line) in source.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        for (col, _) in chars.iter().enumerate().filter(|(_, c)| **c == '$') {
            let name_len = chars[col + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .count();
            let after = col + 1 + name_len;
            if name_len > 0
                && chars.get(after) == Some(&':')
                && !chars
                    .get(after + 1)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '{' | ':'))
            {
                found.push(format!(
                    "{}:{}: `${}:` names no variable",
                    row + 1,
                    col + 1,
                    chars[col + 1..after].iter().collect::<String>()
                ));
            }
        }
    }
    found
}

/// The commands `source` calls by name (not `& $program`), each with where, and the functions
/// it defines.
fn commands(source: &str) -> (Vec<(String, String)>, Vec<String>) {
    let tree = parse(source);
    let mut called = Vec::new();
    let mut defined = Vec::new();
    for node in nodes(&tree) {
        match node.kind() {
            "command" => {
                let Some(name) = node.child_by_field_name("command_name") else {
                    continue;
                };
                let text = source[name.byte_range()].to_owned();
                if name.kind() == "command_name" && !text.starts_with('$') {
                    called.push((text, at(name)));
                }
            }
            "function_name" => defined.push(source[node.byte_range()].to_owned()),
            _ => {}
        }
    }
    (called, defined)
}

#[test]
fn every_script_parses_with_the_powershell_grammar() {
    for (path, text) in scripts() {
        let mut errors = syntax_errors(&text);
        errors.extend(drive_qualified_gotchas(&text));
        assert!(
            errors.is_empty(),
            "{} does not parse as PowerShell:\n{}",
            path.display(),
            errors.join("\n")
        );
        let tree = parse(&text);
        assert!(
            tree.root_node().named_child_count() > 0,
            "{}: parsed to nothing",
            path.display()
        );
    }
}

#[test]
fn a_broken_script_is_caught_at_its_line() {
    // The agent with the closing brace of its last function removed.
    let (_, text) = scripts()
        .into_iter()
        .find(|(p, _)| p.ends_with("firstboot.ps1"))
        .unwrap();
    let cut = text.rfind("\n}\n").unwrap();
    let broken = format!("{}{}", &text[..cut + 1], &text[cut + 3..]);
    let errors = syntax_errors(&broken);
    assert!(!errors.is_empty(), "a missing brace went unnoticed");
    // A variable reference PowerShell refuses, which the grammar takes.
    let gotcha = "throw \"the seed has no $name: it was\"\n";
    assert!(syntax_errors(gotcha).is_empty());
    assert_eq!(
        drive_qualified_gotchas(gotcha),
        vec!["1:24: `$name:` names no variable".to_owned()]
    );
    assert!(drive_qualified_gotchas("$env:Path; ${name}: $Script:Steps; $a`: [x]::y\n").is_empty());
    // And a string left open on line 2.
    let errors = syntax_errors("$a = 1\n$b = \"open\nWrite-Log -Message $a\n");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("2:") || e.contains("MISSING")),
        "{errors:?}"
    );
}

#[test]
fn scripts_call_only_allowed_cmdlets_and_their_own_functions() {
    let mut used = std::collections::BTreeSet::new();
    for (path, text) in scripts() {
        let (called, defined) = commands(&text);
        assert!(!called.is_empty(), "{}: no command found", path.display());
        let unknown: Vec<_> = called
            .iter()
            .filter(|(name, _)| {
                !ALLOWED.iter().any(|a| a.eq_ignore_ascii_case(name))
                    && !defined.iter().any(|d| d.eq_ignore_ascii_case(name))
            })
            .map(|(name, at)| format!("{}:{at}: {name}", path.display()))
            .collect();
        assert!(
            unknown.is_empty(),
            "commands neither allowed nor defined:\n{}",
            unknown.join("\n")
        );
        used.extend(
            called
                .into_iter()
                .map(|(name, _)| name.to_ascii_lowercase()),
        );
    }
    // The list stays the list of what is called: an entry nothing calls is dropped.
    let unused: Vec<_> = ALLOWED
        .iter()
        .filter(|a| !used.contains(&a.to_ascii_lowercase()))
        .collect();
    assert!(unused.is_empty(), "allowed but never called: {unused:?}");
    // The check sees a cmdlet that is not on the list.
    let (called, _) = commands("Invoke-Expression -Command $x\n");
    assert_eq!(
        called,
        vec![("Invoke-Expression".to_owned(), "1:1".to_owned())]
    );
}

#[test]
fn the_beacon_carries_every_field_slipwayd_reads() {
    let beacon_rs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("supervisor/src/beacon.rs");
    let source = std::fs::read_to_string(beacon_rs).unwrap();
    let body = source
        .split("pub struct Beacon {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .unwrap();
    let fields: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(fields.len() >= 10, "{fields:?}");
    let (_, agent) = scripts()
        .into_iter()
        .find(|(p, _)| p.ends_with("firstboot.ps1"))
        .unwrap();
    let table = agent
        .split("$beacon = [ordered]@{")
        .nth(1)
        .and_then(|rest| rest.split("\n            }").next())
        .expect("the agent builds its beacon as `$beacon = [ordered]@{ ... }`");
    let keys: Vec<&str> = table
        .split(';')
        .flat_map(|part| part.lines())
        .filter_map(|l| l.trim().split_once(" = ").map(|(k, _)| k.trim()))
        .collect();
    let missing: Vec<_> = fields.iter().filter(|f| !keys.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "the agent's beacon lacks {missing:?} (it has {keys:?})"
    );
}

fn xmllint(path: &Path) -> std::process::Output {
    Command::new("xmllint")
        .arg("--noout")
        .arg(path)
        .output()
        .expect("xmllint (Debian package libxml2-utils) must be installed")
}

#[test]
fn unattend_is_well_formed_and_setup_complete_starts_the_agent() {
    let dir = recipe_dir();
    let unattend_path = dir.join("unattend.xml");
    let out = xmllint(&unattend_path);
    assert!(
        out.status.success(),
        "unattend.xml is not well-formed XML:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unattend = std::fs::read_to_string(&unattend_path).unwrap();
    let mut rest = unattend.as_str();
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").expect("a placeholder left open") + start + 2;
        let placeholder = &rest[start..end];
        assert!(
            PLACEHOLDERS.contains(&placeholder),
            "unattend.xml uses {placeholder}, which the builder does not render"
        );
        rest = &rest[end..];
    }
    for placeholder in PLACEHOLDERS {
        assert!(unattend.contains(placeholder), "{placeholder} unused");
    }
    // Started once, by SetupComplete.cmd: not also by a command of the answer file.
    assert!(!unattend.contains("RunSynchronous"));

    let setup = std::fs::read_to_string(dir.join("SetupComplete.cmd")).unwrap();
    let run = setup
        .lines()
        .find(|l| l.contains("powershell.exe"))
        .expect("SetupComplete.cmd runs powershell.exe");
    assert!(
        run.contains(&format!("-File \"{AGENT_PATH}\" -Mode Install")),
        "{run}"
    );
    assert!(
        setup.split_terminator('\n').all(|l| l.ends_with('\r')),
        "cmd files want CRLF line ends"
    );
    let (_, agent) = scripts()
        .into_iter()
        .find(|(p, _)| p.ends_with("firstboot.ps1"))
        .unwrap();
    let root = AGENT_PATH.rsplit_once('\\').unwrap().0;
    assert!(agent.contains(&format!("[string] $Root = '{root}'")));

    // The check fails on XML that is not well-formed.
    let scratch = tempfile::tempdir().unwrap();
    let broken = scratch.path().join("unattend.xml");
    std::fs::write(&broken, unattend.replacen("</settings>", "", 1)).unwrap();
    assert!(!xmllint(&broken).status.success());
}
