//! The plans read with a real PowerShell grammar (tree-sitter-powershell), since no PowerShell
//! runs here. Each script must:
//! - parse with no ERROR or MISSING node (each one reported at its line);
//! - start with `# slipway-plan: ACTION`, a comment, and the protocol's preamble and markers;
//! - declare in `param()` exactly the plan's parameters, in its order, mandatory and typed to
//!   match ([string] for text, [int]/[long] for integers), and use every one;
//! - call only the cmdlets of [`ALLOWED`], with only the parameters listed there, by name (no
//!   `& $command`);
//! - never evaluate text: no Invoke-Expression, no script block made from a string, and no
//!   `-Filter`/`-Query` argument built from a variable.
//!
//! Each check also runs on a broken copy of a real plan, to show it reports what it looks for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use tree_sitter::{Node, Tree};

/// The cmdlets plans may call, each with the parameters they may pass, as documented for
/// Windows Server 2022 / Windows PowerShell 5.1:
/// - Hyper-V: MicrosoftDocs/windows-powershell-docs `docset/winserver2022-ps/hyper-v/NAME.md`
///   (learn.microsoft.com/powershell/module/hyper-v/NAME);
/// - PowerShell's own: MicrosoftDocs/PowerShell-Docs `reference/5.1/MODULE/NAME.md`.
const ALLOWED: &[(&str, &[&str])] = &[
    // hyper-v/Get-VM.md
    ("Get-VM", &["Id"]),
    // hyper-v/New-VM.md
    (
        "New-VM",
        &[
            "Name",
            "Generation",
            "NoVHD",
            "Path",
            "MemoryStartupBytes",
            "SwitchName",
        ],
    ),
    // hyper-v/Set-VM.md (-Notes: Slipway's tag, see plan::TAG_PREFIX)
    (
        "Set-VM",
        &[
            "VM",
            "Notes",
            "ProcessorCount",
            "StaticMemory",
            "CheckpointType",
            "AutomaticCheckpointsEnabled",
            "AutomaticStartAction",
            "AutomaticStopAction",
        ],
    ),
    // hyper-v/Get-VMNetworkAdapter.md
    ("Get-VMNetworkAdapter", &["VM"]),
    // hyper-v/Set-VMNetworkAdapter.md
    (
        "Set-VMNetworkAdapter",
        &["VMNetworkAdapter", "StaticMacAddress"],
    ),
    // hyper-v/Get-VMNetworkAdapterVlan.md (its VMNetworkAdapterVlanSetting: OperationMode,
    // AccessVlanId)
    ("Get-VMNetworkAdapterVlan", &["VMNetworkAdapter"]),
    // hyper-v/Set-VMNetworkAdapterVlan.md
    (
        "Set-VMNetworkAdapterVlan",
        &["VMNetworkAdapter", "Access", "VlanId"],
    ),
    // hyper-v/Get-VMFirmware.md (its VMFirmware: SecureBoot, SecureBootTemplate)
    ("Get-VMFirmware", &["VM"]),
    // hyper-v/Set-VMFirmware.md (-EnableSecureBoot On|Off)
    (
        "Set-VMFirmware",
        &[
            "VM",
            "EnableSecureBoot",
            "SecureBootTemplate",
            "FirstBootDevice",
        ],
    ),
    // hyper-v/Set-VMComPort.md
    ("Set-VMComPort", &["VM", "Number", "Path"]),
    // hyper-v/New-VHD.md
    (
        "New-VHD",
        &["Path", "SizeBytes", "Dynamic", "ParentPath", "Differencing"],
    ),
    // hyper-v/Get-VHD.md (its VirtualHardDisk: ParentPath, empty but for a differencing disk)
    ("Get-VHD", &["Path"]),
    // hyper-v/Get-VMIntegrationService.md (its VMIntegrationComponent: Id, Enabled,
    // PrimaryOperationalStatus)
    ("Get-VMIntegrationService", &["VM"]),
    // hyper-v/Get-VMHardDiskDrive.md
    (
        "Get-VMHardDiskDrive",
        &[
            "VM",
            "ControllerType",
            "ControllerNumber",
            "ControllerLocation",
        ],
    ),
    // hyper-v/Add-VMHardDiskDrive.md
    (
        "Add-VMHardDiskDrive",
        &[
            "VM",
            "ControllerType",
            "ControllerNumber",
            "ControllerLocation",
            "Path",
        ],
    ),
    // hyper-v/Set-VMHardDiskDrive.md
    ("Set-VMHardDiskDrive", &["VMHardDiskDrive", "Path"]),
    // hyper-v/Start-VM.md
    ("Start-VM", &["VM"]),
    // hyper-v/Stop-VM.md
    ("Stop-VM", &["VM", "Force", "AsJob", "TurnOff"]),
    // hyper-v/Remove-VM.md
    ("Remove-VM", &["VM", "Force"]),
    // PowerShell-Docs reference/5.1/CimCmdlets/Get-CimInstance.md (no -Filter/-Query: values
    // are compared with Where-Object, never written into WQL)
    ("Get-CimInstance", &["Namespace", "ClassName"]),
    // reference/5.1/CimCmdlets/Get-CimAssociatedInstance.md
    (
        "Get-CimAssociatedInstance",
        &["InputObject", "ResultClassName"],
    ),
    // reference/5.1/Microsoft.PowerShell.Management/Test-Path.md
    ("Test-Path", &["LiteralPath", "PathType"]),
    // reference/5.1/Microsoft.PowerShell.Management/Remove-Item.md
    ("Remove-Item", &["LiteralPath", "Force", "Recurse"]),
    // reference/5.1/Microsoft.PowerShell.Management/Move-Item.md
    ("Move-Item", &["LiteralPath", "Destination"]),
    // reference/5.1/Microsoft.PowerShell.Management/Get-ChildItem.md
    (
        "Get-ChildItem",
        &["LiteralPath", "File", "Recurse", "Force"],
    ),
    // reference/5.1/Microsoft.PowerShell.Utility/ConvertTo-Json.md
    ("ConvertTo-Json", &["InputObject", "Compress"]),
    // reference/5.1/Microsoft.PowerShell.Utility/Write-Output.md
    ("Write-Output", &[]),
    // reference/5.1/Microsoft.PowerShell.Utility/Get-Date.md
    ("Get-Date", &[]),
    // reference/5.1/Microsoft.PowerShell.Utility/Start-Sleep.md
    ("Start-Sleep", &["Seconds"]),
    // reference/5.1/Microsoft.PowerShell.Utility/New-Object.md (the type name positional)
    ("New-Object", &[]),
    // reference/5.1/Microsoft.PowerShell.Core/Out-Null.md
    ("Out-Null", &[]),
    // reference/5.1/Microsoft.PowerShell.Core/Where-Object.md (a script block, positional)
    ("Where-Object", &[]),
    // reference/5.1/Microsoft.PowerShell.Core/ForEach-Object.md (a script block, positional)
    ("ForEach-Object", &[]),
    // reference/5.1/Microsoft.PowerShell.Core/Set-StrictMode.md
    ("Set-StrictMode", &["Version"]),
    // reference/5.1/Microsoft.PowerShell.Core/Remove-Job.md
    ("Remove-Job", &["Job", "Force"]),
];

/// The lines every plan carries (the protocol's preamble and its answer's markers).
const REQUIRED_LINES: &[&str] = &[
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
    "Set-StrictMode -Version 3.0",
    "Write-Output '<<<slipway-begin>>>'",
    "Write-Output (ConvertTo-Json -InputObject $answer -Compress)",
    "Write-Output '<<<slipway-end>>>'",
];

fn parse(source: &str) -> Tree {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_powershell::LANGUAGE.into())
        .unwrap();
    parser.parse(source, None).unwrap()
}

/// Every node under `node` (itself included), depth first.
fn descendants(node: Node<'_>) -> Vec<Node<'_>> {
    let mut all = Vec::new();
    let mut cursor = node.walk();
    loop {
        all.push(cursor.node());
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.node() == node {
                return all;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return all;
            }
        }
    }
}

fn line(node: Node<'_>) -> usize {
    node.start_position().row + 1
}

fn text<'s>(source: &'s str, node: Node<'_>) -> &'s str {
    &source[node.byte_range()]
}

/// The ERROR and MISSING nodes, each as `line N: what`.
fn syntax_errors(source: &str) -> Vec<String> {
    let tree = parse(source);
    descendants(tree.root_node())
        .into_iter()
        .filter(|n| n.is_error() || n.is_missing())
        .map(|n| {
            if n.is_missing() {
                format!("line {}: MISSING {}", line(n), n.kind())
            } else {
                let first = text(source, n).lines().next().unwrap_or("");
                format!(
                    "line {}: ERROR at `{}`",
                    line(n),
                    first.chars().take(60).collect::<String>()
                )
            }
        })
        .collect()
}

/// The first line, the comment after it, and the preamble and marker lines.
fn header_errors(action: &str, source: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut lines = source.lines();
    let first = lines.next().unwrap_or("");
    if first != format!("# slipway-plan: {action}") {
        errors.push(format!(
            "line 1 is `{first}`, not `# slipway-plan: {action}`"
        ));
    }
    if !lines.next().is_some_and(|l| l.starts_with("# ")) {
        errors.push("line 2 is not a comment on what the plan does".to_owned());
    }
    for required in REQUIRED_LINES {
        if !source.lines().any(|l| l.trim() == *required) {
            errors.push(format!("no line `{required}`"));
        }
    }
    errors
}

/// The script's own `param()` entries: name, and the whole entry's text (its attributes).
fn params(source: &str) -> Vec<(String, String)> {
    let tree = parse(source);
    let root = tree.root_node();
    let Some(block) = root
        .children(&mut root.walk())
        .find(|n| n.kind() == "param_block")
    else {
        return Vec::new();
    };
    descendants(block)
        .into_iter()
        .filter(|n| n.kind() == "script_parameter")
        .filter_map(|p| {
            let var = p.children(&mut p.walk()).find(|c| c.kind() == "variable")?;
            Some((
                text(source, var).trim_start_matches('$').to_owned(),
                text(source, p).to_owned(),
            ))
        })
        .collect()
}

/// `param()` against the plan: the same names in the same order, each mandatory and typed as
/// the plan's value is.
fn param_errors(plan: &Plan, source: &str) -> Vec<String> {
    let declared = params(source);
    let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
    let wanted: Vec<&str> = plan.params.iter().map(|(n, _)| *n).collect();
    let mut errors = Vec::new();
    if names != wanted {
        errors.push(format!(
            "param() declares {names:?}, the plan passes {wanted:?}"
        ));
    }
    for ((name, entry), (_, value)) in declared.iter().zip(&plan.params) {
        let entry = entry.to_ascii_lowercase();
        if !entry.contains("[parameter(mandatory)]") {
            errors.push(format!("${name} is not mandatory"));
        }
        let typed = match value {
            Param::Text(_) => entry.contains("[string]"),
            Param::Int(_) => entry.contains("[int]") || entry.contains("[long]"),
        };
        if !typed {
            errors.push(format!("${name} is not typed as the plan's {value:?}"));
        }
    }
    errors
}

/// Parameters declared but never read outside `param()`.
fn unused_params(source: &str) -> Vec<String> {
    let tree = parse(source);
    let used: Vec<String> = descendants(tree.root_node())
        .into_iter()
        .filter(|n| n.kind() == "variable")
        .filter(|n| !has_ancestor(*n, "param_block"))
        .map(|n| text(source, n).trim_start_matches('$').to_ascii_lowercase())
        .collect();
    params(source)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !used.contains(&name.to_ascii_lowercase()))
        .collect()
}

fn has_ancestor(node: Node<'_>, kind: &str) -> bool {
    let mut at = node.parent();
    while let Some(n) = at {
        if n.kind() == kind {
            return true;
        }
        at = n.parent();
    }
    false
}

/// A command call: its name, its `-Parameter`s (without dash or colon), its line, and for each
/// parameter the node of the argument after it, if any.
struct Call<'t> {
    name: String,
    line: usize,
    params: Vec<(String, Option<Node<'t>>)>,
    indirect: bool,
}

fn calls<'t>(source: &str, tree: &'t Tree) -> Vec<Call<'t>> {
    let mut found = Vec::new();
    for node in descendants(tree.root_node()) {
        if node.kind() != "command" {
            continue;
        }
        let Some(name) = node.child_by_field_name("command_name") else {
            continue;
        };
        let mut params = Vec::new();
        if let Some(elements) = node.child_by_field_name("command_elements") {
            let children: Vec<Node<'t>> = elements
                .children(&mut elements.walk())
                .filter(|c| c.kind() != "command_argument_sep")
                .collect();
            for (i, child) in children.iter().enumerate() {
                if child.kind() == "command_parameter" {
                    let param = text(source, *child)
                        .trim_start_matches('-')
                        .trim_end_matches(':');
                    let argument = children
                        .get(i + 1)
                        .copied()
                        .filter(|n| n.kind() != "command_parameter");
                    params.push((param.to_owned(), argument));
                }
            }
        }
        found.push(Call {
            name: text(source, name).to_owned(),
            line: line(name),
            params,
            indirect: name.kind() != "command_name" || text(source, name).starts_with('$'),
        });
    }
    found
}

/// Calls of a cmdlet or parameter that [`ALLOWED`] does not list, and indirect calls.
fn allow_list_errors(source: &str) -> Vec<String> {
    let tree = parse(source);
    let mut errors = Vec::new();
    for call in calls(source, &tree) {
        if call.indirect {
            errors.push(format!(
                "line {}: `{}` is an indirect call",
                call.line, call.name
            ));
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| *name == call.name) else {
            errors.push(format!(
                "line {}: {} is not on the allow-list",
                call.line, call.name
            ));
            continue;
        };
        for (param, _) in &call.params {
            if !allowed.contains(&param.as_str()) {
                errors.push(format!(
                    "line {}: {} -{param} is not on the allow-list",
                    call.line, call.name
                ));
            }
        }
    }
    errors
}

/// Text that gets evaluated: Invoke-Expression, script blocks or strings expanded on demand,
/// and `-Filter`/`-Query` arguments holding a variable or a subexpression.
fn evaluation_errors(source: &str) -> Vec<String> {
    let tree = parse(source);
    let mut errors = Vec::new();
    for call in calls(source, &tree) {
        let name = call.name.to_ascii_lowercase();
        if name == "invoke-expression" || name == "iex" {
            errors.push(format!("line {}: {} evaluates text", call.line, call.name));
        }
        for (param, argument) in &call.params {
            let lower = param.to_ascii_lowercase();
            if lower != "filter" && lower != "query" {
                continue;
            }
            let expanded = argument.is_some_and(|arg| {
                descendants(arg).iter().any(|n| {
                    matches!(
                        n.kind(),
                        "variable" | "sub_expression" | "expandable_here_string_literal"
                    )
                })
            });
            if expanded || argument.is_none() {
                errors.push(format!(
                    "line {}: {} -{param} is not a constant",
                    call.line, call.name
                ));
            }
        }
    }
    for (row, l) in source.lines().enumerate() {
        let lower = l.to_ascii_lowercase();
        for evaluates in [
            "::create(",
            "invokescript(",
            "expandstring(",
            "invoke-command",
        ] {
            if lower.contains(evaluates) {
                errors.push(format!("line {}: `{evaluates}` evaluates text", row + 1));
            }
        }
    }
    errors
}

/// Every check on one script, for the plan that runs it.
fn check(plan: &Plan, source: &str) -> Vec<String> {
    let mut errors = syntax_errors(source);
    errors.extend(header_errors(plan.action, source));
    errors.extend(param_errors(plan, source));
    errors.extend(
        unused_params(source)
            .into_iter()
            .map(|p| format!("${p} is never used")),
    );
    errors.extend(allow_list_errors(source));
    errors.extend(evaluation_errors(source));
    errors.extend(encoding_errors(source));
    errors
}

/// Windows PowerShell 5.1 reads a script without a byte-order mark in the machine's ANSI code
/// page: a plan stays ASCII so that every host reads the same text.
fn encoding_errors(source: &str) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_ascii())
        .map(|(row, _)| format!("line {}: not ASCII", row + 1))
        .collect()
}

#[test]
fn every_plan_parses_and_passes_every_check() {
    let mut called = std::collections::BTreeSet::new();
    for plan in all_examples() {
        let errors = check(&plan, plan.script);
        assert!(
            errors.is_empty(),
            "plans/{}.ps1:\n{}",
            plan.action,
            errors.join("\n")
        );
        let tree = parse(plan.script);
        called.extend(calls(plan.script, &tree).into_iter().map(|c| c.name));
    }
    // The allow-list is the list of what is called: an entry nothing calls is dropped.
    let unused: Vec<_> = ALLOWED
        .iter()
        .filter(|(n, _)| !called.contains(*n))
        .map(|(n, _)| n)
        .collect();
    assert!(unused.is_empty(), "allowed but never called: {unused:?}");
    // Every script under plans/ is some action's (none left behind by a rename).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/driver/hyperv/plans");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut actions: Vec<String> = all_examples()
        .iter()
        .map(|p| format!("{}.ps1", p.action))
        .collect();
    actions.sort();
    assert_eq!(files, actions);
}

/// The 1-based line of `source` that first holds `needle`.
fn line_of(source: &str, needle: &str) -> usize {
    source
        .lines()
        .position(|l| l.contains(needle))
        .map(|row| row + 1)
        .unwrap_or_else(|| panic!("no line holds {needle:?}"))
}

/// A real plan's script, changed by `edit` (which must change it).
fn broken(action: &str, edit: impl Fn(&str) -> String) -> (Plan, String) {
    let plan = all_examples()
        .into_iter()
        .find(|p| p.action == action)
        .unwrap();
    let changed = edit(plan.script);
    assert_ne!(changed, plan.script, "the edit changed nothing");
    (plan, changed)
}

#[test]
fn a_syntax_error_is_reported_at_its_line() {
    let (_, source) = broken("stop-vm", |s| {
        s.replacen(
            "Start-Sleep -Seconds 1\n    }",
            "Start-Sleep -Seconds 1\n",
            1,
        )
    });
    let errors = syntax_errors(&source);
    assert!(!errors.is_empty(), "a missing brace went unnoticed");
    let (_, source) = broken("status", |s| {
        s.replacen("'<<<slipway-end>>>'", "'<<<slipway-end>>>", 1)
    });
    let errors = syntax_errors(&source);
    let last = source.lines().count();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("line {last}:"))),
        "{errors:?}"
    );
}

#[test]
fn a_wrong_header_or_encoding_is_reported() {
    let (plan, source) = broken("beacon", |s| {
        s.replacen("slipway-plan: beacon", "slipway-plan: status", 1)
    });
    assert_eq!(
        header_errors(plan.action, &source),
        vec!["line 1 is `# slipway-plan: status`, not `# slipway-plan: beacon`"]
    );
    let (plan, source) = broken("beacon", |s| {
        s.replacen("Set-StrictMode -Version 3.0\n", "", 1)
    });
    assert_eq!(
        header_errors(plan.action, &source),
        vec!["no line `Set-StrictMode -Version 3.0`"]
    );
    let (_, source) = broken("beacon", |s| {
        s.replacen("the host itself", "the h\u{f4}te itself", 1)
    });
    let at = line_of(&source, "the h\u{f4}te itself");
    assert_eq!(
        encoding_errors(&source),
        vec![format!("line {at}: not ASCII")]
    );
}

#[test]
fn params_out_of_order_untyped_or_unused_are_reported() {
    let (plan, source) = broken("os-disk", |s| {
        s.replacen(
            "[string] $Parent,\n    [Parameter(Mandatory)] [string] $Path",
            "[string] $Path,\n    [Parameter(Mandatory)] [string] $Parent",
            1,
        )
    });
    assert_eq!(
        param_errors(&plan, &source),
        vec![r#"param() declares ["Path", "Parent"], the plan passes ["Parent", "Path"]"#]
    );
    let (plan, source) = broken("stop-vm", |s| {
        s.replacen("[int] $TimeoutSeconds", "[string] $TimeoutSeconds", 1)
    });
    assert_eq!(
        param_errors(&plan, &source),
        vec!["$TimeoutSeconds is not typed as the plan's Int(120)"]
    );
    let (plan, source) = broken("status", |s| {
        s.replacen("[Parameter(Mandatory)] [string] $Name", "[string] $Name", 1)
    });
    assert_eq!(param_errors(&plan, &source), vec!["$Name is not mandatory"]);
    let (_, source) = broken("remove-vm", |s| {
        s.replacen(
            "$Directory\n)",
            "$Directory,\n    [Parameter(Mandatory)] [string] $Spare\n)",
            1,
        )
    });
    assert_eq!(unused_params(&source), vec!["Spare"]);
    // A parameter read only inside a string counts as used.
    assert!(unused_params("param([string] $A)\nWrite-Output \"x $A\"\n").is_empty());
}

#[test]
fn a_cmdlet_or_parameter_off_the_list_is_reported() {
    let (_, source) = broken("remove-vm", |s| {
        s.replacen(
            "Remove-VM -VM $one -Force",
            "Remove-VM -VM $one -Force\n    Invoke-Item -Path $Directory",
            1,
        )
    });
    let at = line_of(&source, "Invoke-Item");
    assert_eq!(
        allow_list_errors(&source),
        vec![format!("line {at}: Invoke-Item is not on the allow-list")]
    );
    let (_, source) = broken("create-vm", |s| {
        s.replacen("-NoVHD", "-NoVHD -Prestaged", 1)
    });
    let errors = allow_list_errors(&source);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].ends_with("New-VM -Prestaged is not on the allow-list"),
        "{errors:?}"
    );
    // A parameter inside a nested pipeline belongs to its own command.
    assert_eq!(
        allow_list_errors("Get-VM | Where-Object { Get-Date -Format x }\n"),
        vec!["line 1: Get-Date -Format is not on the allow-list"]
    );
    let (_, source) = broken("status", |s| {
        s.replacen("$named = @(Get-VM |", "$named = @(& $getter |", 1)
    });
    let at = line_of(&source, "& $getter");
    assert_eq!(
        allow_list_errors(&source),
        vec![format!("line {at}: `$getter` is an indirect call")]
    );
}

#[test]
fn evaluated_text_is_reported() {
    let (_, source) = broken("beacon", |s| {
        s.replacen(
            "-ClassName Msvm_ComputerSystem |",
            "-ClassName Msvm_ComputerSystem -Filter \"ElementName = '$Name'\" |",
            1,
        )
    });
    let errors = evaluation_errors(&source);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].ends_with("Get-CimInstance -Filter is not a constant"),
        "{errors:?}"
    );
    let errors =
        evaluation_errors("Get-CimInstance -Query $(\"SELECT * FROM x WHERE a = \" + $Name)\n");
    assert_eq!(
        errors,
        vec!["line 1: Get-CimInstance -Query is not a constant"]
    );
    // A constant filter is not evaluated text (it is still refused by the allow-list).
    assert!(
        evaluation_errors(
            "Get-CimInstance -ClassName Win32_Process -Filter 'Name = ''vmwp.exe'''\n"
        )
        .is_empty()
    );
    let (_, source) = broken("status", |s| {
        s.replacen(
            "$named = @(Get-VM |",
            "$named = @(Invoke-Expression \"Get-VM $Name\" |",
            1,
        )
    });
    let at = line_of(&source, "Invoke-Expression");
    assert_eq!(
        evaluation_errors(&source),
        vec![format!("line {at}: Invoke-Expression evaluates text")]
    );
    let errors = evaluation_errors("$b = [scriptblock]::Create($Name)\n& $b\niex $Name\n");
    assert_eq!(
        errors,
        vec![
            "line 3: iex evaluates text",
            "line 1: `::create(` evaluates text"
        ]
    );
}
