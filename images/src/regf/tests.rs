//! The writer's hives, read back by hivex (an independent reader) and edited by it.

use std::process::Command;

use super::*;

fn sample() -> Key {
    let mut root = Key::new("ROOT");
    root.key(&["Select"]).set_dword("Current", 1);
    let services = root.key(&["ControlSet001", "Services"]);
    services
        .key(&["Tcpip", "Parameters"])
        .set_string("Hostname", "minwinpc")
        .set(
            "SearchList",
            kind::MULTI_SZ,
            [utf16z("a"), utf16z("b"), vec![0, 0]].concat(),
        )
        .set(
            "Big",
            kind::BINARY,
            (0..=255u8).cycle().take(5000).collect(),
        )
        .set("Small", kind::BINARY, vec![1, 2, 3])
        .set(
            "Q",
            kind::QWORD,
            0x1122_3344_5566_7788u64.to_le_bytes().to_vec(),
        )
        .set("", kind::SZ, utf16z("default"));
    services.key(&["afd"]).set_dword("Start", 1);
    services.key(&["Beep"]);
    root
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup installs libhivex-bin)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hivex_reads_every_key_and_value_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("SYSTEM");
    std::fs::write(&path, write(&sample(), 315_532_800).unwrap()).unwrap();
    let path = path.to_str().unwrap();
    assert_eq!(tool("hivexget", &[path, "\\Select", "Current"]).trim(), "1");
    let tcpip = "\\ControlSet001\\Services\\Tcpip\\Parameters";
    assert_eq!(
        tool("hivexget", &[path, tcpip, "Hostname"]).trim(),
        "minwinpc"
    );
    assert_eq!(
        tool("hivexget", &[path, tcpip, "SearchList"]).trim(),
        "a\nb"
    );
    assert_eq!(
        tool("hivexget", &[path, tcpip, "@"]).trim(),
        "default",
        "the default value"
    );
    // Values read as .reg text: every byte of the large and the inline values.
    let export = tool("hivexget", &[path, tcpip]);
    assert!(
        export.contains("\"Small\"=hex(3):01,02,03"),
        "{export:.300}"
    );
    assert!(
        export.contains("\"Q\"=hex(11):88,77,66,55,44,33,22,11"),
        "{export:.300}"
    );
    let big: String = (0..5000).map(|i| format!("{:02x}", i % 256)).collect();
    let exported_big: String = export
        .split("\"Big\"=hex(3):")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(exported_big, big);
    // Subkeys listed in Windows' order whatever order they were given in.
    let xml = tool("hivexml", &[path]);
    let positions: Vec<usize> = ["afd", "Beep", "Tcpip"]
        .iter()
        .map(|n| xml.find(&format!("name=\"{n}\"")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{xml}");
}

#[test]
fn hivexsh_adds_keys_and_values_to_a_written_hive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("BCD");
    std::fs::write(&path, write(&Key::new("ROOT"), 0).unwrap()).unwrap();
    let script = dir.path().join("edit");
    std::fs::write(
        &script,
        "add Objects\ncd Objects\nadd {9dea862c-5cdd-4e70-acc1-f32b344d4795}\n\
         cd {9dea862c-5cdd-4e70-acc1-f32b344d4795}\nsetval 1\nType\ndword:0x10100002\ncommit\n",
    )
    .unwrap();
    let out = Command::new("hivexsh")
        .args(["-w", "-f"])
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = path.to_str().unwrap();
    let key = "\\Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
    assert_eq!(tool("hivexget", &[path, key, "Type"]).trim(), "269484034");
}

#[test]
fn the_same_hive_gives_the_same_bytes_and_a_valid_checksum() {
    let a = write(&sample(), 1_700_000_000).unwrap();
    assert_eq!(a, write(&sample(), 1_700_000_000).unwrap());
    assert_ne!(
        a,
        write(&sample(), 1_700_000_001).unwrap(),
        "timestamps are written"
    );
    let sum = (0..127).fold(0u32, |s, i| {
        s ^ u32::from_le_bytes(a[i * 4..i * 4 + 4].try_into().unwrap())
    });
    assert_eq!(u32::from_le_bytes(a[508..512].try_into().unwrap()), sum);
    assert_eq!(a.len() % BLOCK, 0);
}

#[test]
fn bad_names_duplicates_and_oversized_data_are_refused() {
    let mut root = Key::new("ROOT");
    root.key(&["a\\b"]);
    assert!(matches!(write(&root, 0), Err(Error::CheckName { .. })));
    let mut root = Key::new("ROOT");
    root.keys.push(Key::new("Same"));
    root.keys.push(Key::new("SAME"));
    assert!(matches!(write(&root, 0), Err(Error::CheckUnique { .. })));
    let mut root = Key::new("ROOT");
    root.set("v", kind::BINARY, vec![0; MAX_DATA + 1]);
    assert_eq!(
        write(&root, 0),
        Err(Error::CheckDataSize {
            name: "v".into(),
            len: MAX_DATA + 1
        })
    );
    assert!(matches!(
        write(&Key::new("é"), 0),
        Err(Error::CheckName { .. })
    ));
}

#[test]
fn hivexregedit_merges_a_reg_file_into_a_written_hive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("SOFTWARE");
    std::fs::write(&path, write(&Key::new("ROOT"), 0).unwrap()).unwrap();
    let reg = dir.path().join("edit.reg");
    std::fs::write(
        &reg,
        "Windows Registry Editor Version 5.00\n\n[\\A]\n\n[\\A\\B C]\n\"N \\\"q\\\"\"=hex(4):2a,00,00,00\n@=hex(1):78,00,00,00\n\n",
    )
    .unwrap();
    let out = Command::new("hivexregedit")
        .arg("--merge")
        .arg(&path)
        .arg(&reg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = path.to_str().unwrap();
    assert_eq!(
        tool("hivexget", &[path, "\\A\\B C", "N \"q\""]).trim(),
        "42"
    );
    assert_eq!(tool("hivexget", &[path, "\\A\\B C", "@"]).trim(), "x");
}
