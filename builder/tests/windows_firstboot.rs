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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Cmdlets the agent may call: each is documented for Windows PowerShell 5.1 on Windows Server
/// 2022, in MicrosoftDocs/windows-powershell-docs (`docset/winserver2022-ps/MODULE/NAME.md`) for
/// the Windows modules, or MicrosoftDocs/PowerShell-Docs (`reference/5.1/MODULE/NAME.md`) for
/// PowerShell's own.
const ALLOWED: &[&str] = &[
    // windows-powershell-docs, docset/winserver2022-ps/...
    "Get-Volume",                   // storage/
    "Get-Disk",                     // storage/
    "Set-Disk",                     // storage/
    "Initialize-Disk",              // storage/
    "Get-Partition",                // storage/
    "New-Partition",                // storage/
    "Format-Volume",                // storage/
    "Add-PartitionAccessPath",      // storage/
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
    "Get-CimInstance",   // CimCmdlets/
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

fn agent() -> String {
    scripts()
        .into_iter()
        .find(|(p, _)| p.ends_with("firstboot.ps1"))
        .unwrap()
        .1
}

/// The body of slipwayd's `struct Beacon` (supervisor/src/beacon.rs).
fn beacon_struct() -> String {
    let beacon_rs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("supervisor/src/beacon.rs");
    let source = std::fs::read_to_string(beacon_rs).unwrap();
    source
        .split("pub struct Beacon {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .unwrap()
        .to_owned()
}

/// The `key = value` entries of the beacon the agent builds, values as written.
fn beacon_entries(agent: &str) -> Vec<(String, String)> {
    let table = agent
        .split("$beacon = [ordered]@{")
        .nth(1)
        .and_then(|rest| rest.split("\n            }").next())
        .expect("the agent builds its beacon as `$beacon = [ordered]@{ ... }`");
    table
        .split(';')
        .flat_map(|part| part.lines())
        .filter_map(|l| l.trim().split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_beacon_carries_every_field_slipwayd_reads() {
    let body = beacon_struct();
    let fields: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(fields.len() >= 10, "{fields:?}");
    let entries = beacon_entries(&agent());
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let missing: Vec<_> = fields.iter().filter(|f| !keys.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "the agent's beacon lacks {missing:?} (it has {keys:?})"
    );
}

/// The `state_disk` values slipwayd documents: the `words` in backticks of the field's doc comment.
fn state_disk_words() -> BTreeSet<String> {
    let body = beacon_struct();
    let lines: Vec<&str> = body.lines().map(str::trim).collect();
    let field = lines
        .iter()
        .position(|l| l.starts_with("pub state_disk:"))
        .expect("Beacon has a state_disk field");
    let doc: String = lines[..field]
        .iter()
        .rev()
        .take_while(|l| l.starts_with("///") || l.starts_with("#["))
        .filter_map(|l| l.strip_prefix("///"))
        .collect::<Vec<_>>()
        .join(" ");
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()))
        .map(str::to_owned)
        .collect()
}

/// The byte range of the function `name` that `source` defines.
fn function_range(source: &str, name: &str) -> Option<std::ops::Range<usize>> {
    let tree = parse(source);
    nodes(&tree)
        .into_iter()
        .find(|n| n.kind() == "function_name" && source[n.byte_range()].eq_ignore_ascii_case(name))
        .and_then(|n| n.parent())
        .map(|f| f.byte_range())
}

/// Where `source` calls `command` outside the function `inside`, each as `line:column`.
fn calls_outside(source: &str, command: &str, inside: &str) -> Vec<String> {
    let allowed = function_range(source, inside).unwrap_or(0..0);
    let tree = parse(source);
    nodes(&tree)
        .into_iter()
        .filter(|n| n.kind() == "command")
        .filter_map(|n| n.child_by_field_name("command_name"))
        .filter(|name| source[name.byte_range()].eq_ignore_ascii_case(command))
        .filter(|name| !allowed.contains(&name.start_byte()))
        .map(at)
        .collect()
}

/// What keeps `agent` from keeping the node's identity on its state disk and saying what it
/// found there in slipwayd's `words`: each problem as a sentence, none when all is well.
fn state_disk_problems(agent: &str, words: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    // The words it reports are slipwayd's, all of them (a swap is judged by them).
    match function_range(agent, "Mount-StateDisk") {
        None => problems.push("no function Mount-StateDisk".to_owned()),
        Some(range) => {
            // What it returns: a word, or $found, which holds one.
            let body = &agent[range];
            let returned: BTreeSet<String> = ["return '", "$found = '"]
                .into_iter()
                .flat_map(|lead| body.split(lead).skip(1))
                .filter_map(|rest| rest.split('\'').next())
                .map(str::to_owned)
                .collect();
            if &returned != words {
                problems.push(format!(
                    "Mount-StateDisk reports {returned:?}; slipwayd reads {words:?}"
                ));
            }
        }
    }
    // The beacon sends what was found, not a constant.
    for (key, value) in beacon_entries(agent) {
        if ["state_disk", "node_id", "boot_count"].contains(&key.as_str())
            && !value.starts_with("$identity.")
        {
            problems.push(format!(
                "the beacon's {key} is `{value}`, not this boot's finding"
            ));
        }
    }
    // The id and the count are files in the state folder, the state disk's mount point.
    for name in ["'node-id'", "'boot-count'"] {
        let uses = agent.matches(name).count();
        let on_state = agent.matches(&format!("Get-StatePath {name}")).count();
        if uses == 0 || uses != on_state {
            problems.push(format!(
                "{name} is named {uses} times, {on_state} of them under Get-StatePath"
            ));
        }
    }
    for needed in [
        "$Script:StateDir = Join-Path -Path $Root -ChildPath 'state'",
        "return (Join-Path -Path $Script:StateDir -ChildPath $Name)",
        "$Script:StateLabel = 'SLIPWAY-STATE'",
        "-NewFileSystemLabel $Script:StateLabel",
        "-AccessPath $Script:StateDir",
        "Set-PrivateAcl -Path $Script:StateDir",
    ] {
        if !agent.contains(needed) {
            problems.push(format!("the agent no longer says `{needed}`"));
        }
    }
    // Nothing else may format a disk: Mount-StateDisk formats only what it found blank.
    for command in ["Initialize-Disk", "New-Partition", "Format-Volume"] {
        for place in calls_outside(agent, command, "Mount-StateDisk") {
            problems.push(format!("{command} at {place}, outside Mount-StateDisk"));
        }
    }
    problems
}

#[test]
fn identity_is_kept_on_the_state_disk_and_reported_in_slipwayds_words() {
    let words = state_disk_words();
    let expected: BTreeSet<String> = ["mounted", "formatted", "unreadable", "missing"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        words, expected,
        "beacon.rs documents other state_disk values"
    );
    let agent = agent();
    let problems = state_disk_problems(&agent, &words);
    assert!(problems.is_empty(), "{problems:#?}");

    // Each check fails on an agent that breaks it.
    let broken = [
        (
            agent.replacen("state_disk = $identity.StateDisk", "state_disk = ''", 1),
            "the beacon's state_disk is `''`",
        ),
        (
            agent.replacen("Get-StatePath 'node-id'", "Get-AgentPath 'node-id'", 1),
            "'node-id' is named",
        ),
        (
            agent.replacen("return 'missing'", "return 'absent'", 1),
            "Mount-StateDisk reports",
        ),
        (
            agent.replacen(
                "function Invoke-JoinStep {",
                "function Invoke-JoinStep {\n    Format-Volume -DriveLetter D\n",
                1,
            ),
            "Format-Volume at",
        ),
    ];
    for (text, expected) in broken {
        assert_ne!(text, agent, "the mutation for {expected:?} changed nothing");
        let found = state_disk_problems(&text, &words);
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not caught: {found:?}"
        );
    }
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
