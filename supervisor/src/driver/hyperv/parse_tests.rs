//! Answers and KVP items: real shapes, hand-written hostile ones, and thousands of mutated and
//! generated ones from a fixed-seed generator (no new crate; a failure names its case number).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

/// One KVP item as Hyper-V writes it (the protocol's sample), its Data a beacon line.
const ITEM: &str = concat!(
    r#"<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem"><PROPERTY NAME="Caption" PROPAGATED="true" TYPE="string"></PROPERTY>"#,
    r#"<PROPERTY NAME="Data" TYPE="string"><VALUE>{&quot;event&quot;:&quot;ready&quot;,&quot;note&quot;:&quot;a&lt;b&amp;c&gt;d &apos;e&apos; &#233;&#x1F600;&quot;}</VALUE></PROPERTY>"#,
    r#"<PROPERTY NAME="Description" PROPAGATED="true" TYPE="string"></PROPERTY><PROPERTY NAME="ElementName" PROPAGATED="true" TYPE="string"></PROPERTY>"#,
    r#"<PROPERTY NAME="InstanceID" PROPAGATED="true" TYPE="string"></PROPERTY><PROPERTY NAME="Name" TYPE="string"><VALUE>SlipwayBeacon</VALUE></PROPERTY>"#,
    r#"<PROPERTY NAME="Source" TYPE="uint16"><VALUE>2</VALUE></PROPERTY></INSTANCE>"#
);
const ITEM_DATA: &str = "{\"event\":\"ready\",\"note\":\"a<b&c>d 'e' \u{e9}\u{1F600}\"}";

/// Each action's answer as its plan writes it.
const ANSWERS: &[(&str, &str)] = &[
    ("create-vm", r#"{"created":true,"differs":[]}"#),
    ("os-disk", r#"{"created":false}"#),
    (
        "drop-os-disks",
        r#"{"removed":["os-0123456789abcdef.vhdx"]}"#,
    ),
    ("start-vm", r#"{"state":"Running","pid":1234}"#),
    ("stop-vm", r#"{"stopped":"shut-down"}"#),
    (
        "status",
        r#"{"exists":true,"state":"Running","status":"Operating normally","uptime":123.4,"pid":1234,"heartbeat":"OkApplicationsUnknown"}"#,
    ),
    (
        "beacon",
        r#"{"exists":true,"running":true,"items":["<INSTANCE/>"]}"#,
    ),
    ("remove-vm", r#"{"removed":true}"#),
    (
        "prune-images",
        r#"{"removed":["5f2b8c1e9d4a7f3b6c0e2d8a1b4f7c9e3a6d0b2c5e8f1a4d7b0c3e6f9a2d5b8c"]}"#,
    ),
];

/// Reads `json` as every answer type; Ok for those it reads as.
fn read_all(json: &str) -> usize {
    [
        answer::<Created>("x", json).is_ok(),
        answer::<Removed>("x", json).is_ok(),
        answer::<Purged>("x", json).is_ok(),
        answer::<Started>("x", json).is_ok(),
        answer::<StopAnswer>("x", json).is_ok(),
        answer::<VmState>("x", json).is_ok(),
        answer::<BeaconAnswer>("x", json).is_ok(),
        answer::<Pruned>("x", json).is_ok(),
    ]
    .iter()
    .filter(|ok| **ok)
    .count()
}

#[test]
fn each_real_answer_reads_as_its_type() {
    let read = |action: &str| ANSWERS.iter().find(|(a, _)| *a == action).unwrap().1;
    assert!(
        answer::<Created>("create-vm", read("create-vm"))
            .unwrap()
            .created
    );
    assert!(
        !answer::<Created>("os-disk", read("os-disk"))
            .unwrap()
            .created
    );
    assert_eq!(
        answer::<Removed>("drop-os-disks", read("drop-os-disks"))
            .unwrap()
            .removed,
        ["os-0123456789abcdef.vhdx"]
    );
    assert_eq!(
        answer::<Started>("start-vm", read("start-vm")).unwrap(),
        Started {
            state: "Running".into(),
            pid: 1234
        }
    );
    assert_eq!(
        answer::<StopAnswer>("stop-vm", read("stop-vm"))
            .unwrap()
            .stopped,
        HowStopped::ShutDown
    );
    for (text, stopped) in [
        ("already-stopped", HowStopped::AlreadyStopped),
        ("turned-off", HowStopped::TurnedOff),
    ] {
        let json = format!(r#"{{"stopped":"{text}"}}"#);
        assert_eq!(
            answer::<StopAnswer>("stop-vm", &json).unwrap().stopped,
            stopped
        );
    }
    let state: VmState = answer("status", read("status")).unwrap();
    assert_eq!(state.uptime, Some(123.4));
    assert_eq!(state.heartbeat.as_deref(), Some("OkApplicationsUnknown"));
    let gone: VmState = answer("status", r#"{"exists":false}"#).unwrap();
    assert!(!gone.exists && gone.state.is_none() && gone.pid.is_none());
    let off: VmState = answer(
        "status",
        r#"{"exists":true,"state":"Off","status":"Operating normally","uptime":0,"pid":0,"heartbeat":null}"#,
    )
    .unwrap();
    assert_eq!((off.uptime, off.heartbeat), (Some(0.0), None));
    let made: Created = answer(
        "create-vm",
        r#"{"created":false,"differs":["VlanId","MemoryBytes"]}"#,
    )
    .unwrap();
    assert_eq!(made.differs, ["VlanId", "MemoryBytes"]);
    assert!(!made.created);
    let made: Created = answer("create-vm", r#"{"created":true,"differs":[]}"#).unwrap();
    assert!(made.created && made.differs.is_empty());
    assert_eq!(
        answer::<BeaconAnswer>("beacon", read("beacon"))
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        answer::<Purged>("remove-vm", read("remove-vm"))
            .unwrap()
            .removed
    );
    assert_eq!(
        answer::<Pruned>("prune-images", read("prune-images"))
            .unwrap()
            .removed,
        ["5f2b8c1e9d4a7f3b6c0e2d8a1b4f7c9e3a6d0b2c5e8f1a4d7b0c3e6f9a2d5b8c"]
    );
    let none: Pruned = answer("prune-images", r#"{"removed":[]}"#).unwrap();
    assert!(none.removed.is_empty());
}

#[test]
fn hostile_answers_are_refused_with_the_action_and_a_short_excerpt() {
    let refused = [
        // A state that is a number: an enum that was not turned to text.
        r#"{"exists":true,"state":2,"status":"Operating normally","uptime":1,"pid":1,"heartbeat":null}"#,
        r#"{"exists":true,"uptime":NaN}"#,
        r#"{"exists":true,"uptime":1e999}"#,
        r#"{"exists":true,"uptime":-1}"#,
        r#"{"exists":true,"pid":4294967296}"#,
        r#"{"exists":true,"pid":-1}"#,
        r#"{"exists":true,"pid":1.5}"#,
        r#"{"exists":true,"colour":"blue"}"#,
        // A VM that exists without a state, or one that does not with one.
        r#"{"exists":true}"#,
        r#"{"exists":true,"state":null,"pid":1}"#,
        r#"{"exists":false,"state":"Off"}"#,
        r#"{"exists":false,"pid":4}"#,
        r#"{"exists":"yes"}"#,
        r#"{}"#,
        "",
        r#"{"exists":true"#,
        r#"{"exists":true}{"exists":false}"#,
        r#"[{"exists":true}]"#,
    ];
    for json in refused {
        let err = answer::<VmState>("status", json).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("the status plan answered"),
            "{json}: {text}"
        );
    }
    assert!(answer::<StopAnswer>("stop-vm", r#"{"stopped":"exploded"}"#).is_err());
    assert!(answer::<StopAnswer>("stop-vm", r#"{"stopped":2}"#).is_err());
    assert!(
        answer::<Started>(
            "start-vm",
            r#"{"state":"Running","pid":99999999999999999999999}"#
        )
        .is_err()
    );
    assert!(answer::<Removed>("drop-os-disks", r#"{"removed":"os-1.vhdx"}"#).is_err());
    assert!(
        answer::<BeaconAnswer>("beacon", r#"{"exists":true,"running":true,"items":[1]}"#).is_err()
    );
    // PowerShell 5.1's wrapped-array form, which the plans avoid: refused, not misread.
    assert!(answer::<Removed>("drop-os-disks", r#"{"removed":{"value":[],"Count":0}}"#).is_err());
    // prune-images names digests only: the driver forgets each one it names.
    let hex = "5f2b8c1e9d4a7f3b6c0e2d8a1b4f7c9e3a6d0b2c5e8f1a4d7b0c3e6f9a2d5b8c";
    for json in [
        format!(r#"{{"removed":"{hex}"}}"#),
        format!(r#"{{"removed":["{}"]}}"#, hex.to_uppercase()),
        format!(r#"{{"removed":["sha256:{hex}"]}}"#),
        format!(r#"{{"removed":["{hex}.vhdx"]}}"#),
        format!(r#"{{"removed":["{}"]}}"#, &hex[1..]),
        format!(r#"{{"removed":["{hex}0"]}}"#),
        format!(r#"{{"removed":["{}\\x"]}}"#, &hex[2..]),
        format!(r#"{{"removed":["{hex}"],"kept":[]}}"#),
        format!(r#"{{"removed":{{"value":["{hex}"],"Count":1}}}}"#),
        r#"{"removed":[1]}"#.to_owned(),
        r#"{"removed":null}"#.to_owned(),
        "{}".to_owned(),
    ] {
        let err = answer::<Pruned>("prune-images", &json).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the prune-images plan answered"),
            "{json}: {err}"
        );
    }
    // A long answer is quoted by its first characters only.
    let long = format!("{{\"exists\":true,\"state\":\"{}\x07", "A".repeat(100_000));
    let err = answer::<VmState>("status", &long).unwrap_err();
    assert!(err.to_string().len() < 400, "{err}");
    let AnswerError::ReadAnswer { excerpt, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(excerpt.chars().count(), EXCERPT_CHARS);
}

#[test]
fn a_real_item_reads_as_its_name_and_unescaped_data() {
    assert_eq!(
        kvp_items(ITEM).unwrap(),
        vec![("SlipwayBeacon".to_owned(), ITEM_DATA.to_owned())]
    );
    let items = vec![
        ITEM.replace("SlipwayBeacon", "Other"),
        "<garbage".to_owned(),
        ITEM.to_owned(),
    ];
    assert_eq!(
        kvp_value(&items, "SlipwayBeacon").as_deref(),
        Some(ITEM_DATA)
    );
    assert_eq!(kvp_value(&items, "Missing"), None);
    // Attributes in another order, single quotes, space and line breaks inside tags, several
    // instances, an empty Data, a self-closed PROPERTY.
    let loose = "\n <INSTANCE  TYPE='x'\n CLASSNAME = 'Msvm_KvpExchangeDataItem' >\r\n\
        <PROPERTY TYPE=\"string\" NAME=\"Name\" ><VALUE>a</VALUE>\n</PROPERTY >\
        <PROPERTY NAME=\"Caption\"/><PROPERTY NAME=\"Data\"><VALUE/></PROPERTY></INSTANCE>\n\
        <INSTANCE CLASSNAME=\"Msvm_KvpExchangeDataItem\"><PROPERTY NAME=\"Name\"><VALUE>b</VALUE></PROPERTY></INSTANCE> ";
    assert_eq!(
        kvp_items(loose).unwrap(),
        vec![
            ("a".to_owned(), String::new()),
            ("b".to_owned(), String::new())
        ]
    );
}

#[test]
fn hostile_items_are_refused() {
    let name = r#"<PROPERTY NAME="Name" TYPE="string"><VALUE>n</VALUE></PROPERTY>"#;
    let open = r#"<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">"#;
    let cases = [
        (
            "nested INSTANCE",
            format!("{open}{name}{open}{name}</INSTANCE></INSTANCE>"),
        ),
        (
            "INSTANCE inside a PROPERTY",
            format!("{open}<PROPERTY NAME=\"Data\">{open}</INSTANCE></PROPERTY>{name}</INSTANCE>"),
        ),
        (
            "unterminated VALUE",
            format!("{open}<PROPERTY NAME=\"Name\"><VALUE>n"),
        ),
        (
            "VALUE closed by another tag",
            format!("{open}<PROPERTY NAME=\"Name\"><VALUE>n</PROPERTY></INSTANCE>"),
        ),
        (
            "two VALUEs",
            format!(
                "{open}<PROPERTY NAME=\"Name\"><VALUE>a</VALUE><VALUE>b</VALUE></PROPERTY></INSTANCE>"
            ),
        ),
        ("unterminated INSTANCE", format!("{open}{name}")),
        ("no Name", format!("{open}</INSTANCE>")),
        (
            "Name without a VALUE",
            format!("{open}<PROPERTY NAME=\"Name\"></PROPERTY></INSTANCE>"),
        ),
        ("two Names", format!("{open}{name}{name}</INSTANCE>")),
        (
            "another class",
            format!("<INSTANCE CLASSNAME=\"Msvm_Other\">{name}</INSTANCE>"),
        ),
        ("no class", format!("<INSTANCE>{name}</INSTANCE>")),
        (
            "an attribute twice",
            format!(
                "<INSTANCE CLASSNAME=\"Msvm_KvpExchangeDataItem\" CLASSNAME=\"Msvm_KvpExchangeDataItem\">{name}</INSTANCE>"
            ),
        ),
        (
            "an unquoted attribute",
            format!("<INSTANCE CLASSNAME=Msvm_KvpExchangeDataItem>{name}</INSTANCE>"),
        ),
        (
            "an unclosed attribute",
            "<INSTANCE CLASSNAME=\"Msvm_KvpExchangeDataItem>".to_owned(),
        ),
        ("text in INSTANCE", format!("{open}text{name}</INSTANCE>")),
        (
            "a bare &",
            format!("{open}<PROPERTY NAME=\"Name\"><VALUE>a & b</VALUE></PROPERTY></INSTANCE>"),
        ),
        (
            "an unknown entity",
            format!("{open}<PROPERTY NAME=\"Name\"><VALUE>&nbsp;</VALUE></PROPERTY></INSTANCE>"),
        ),
        (
            "&#0;",
            format!("{open}<PROPERTY NAME=\"Name\"><VALUE>&#0;</VALUE></PROPERTY></INSTANCE>"),
        ),
        (
            "a surrogate",
            format!("{open}<PROPERTY NAME=\"Name\"><VALUE>&#xD800;</VALUE></PROPERTY></INSTANCE>"),
        ),
        (
            "beyond Unicode",
            format!(
                "{open}<PROPERTY NAME=\"Name\"><VALUE>&#x110000;</VALUE></PROPERTY></INSTANCE>"
            ),
        ),
        (
            "a huge reference",
            format!(
                "{open}<PROPERTY NAME=\"Name\"><VALUE>&#99999999999999999999;</VALUE></PROPERTY></INSTANCE>"
            ),
        ),
        (
            "a signed reference",
            format!("{open}<PROPERTY NAME=\"Name\"><VALUE>&#+65;</VALUE></PROPERTY></INSTANCE>"),
        ),
        ("trailing text", format!("{ITEM}tail")),
        ("a closing tag first", "</INSTANCE>".to_owned()),
        ("nothing", String::new()),
    ];
    for (what, xml) in cases {
        let err = kvp_items(&xml).expect_err(what);
        let AnswerError::ReadKvpItem { excerpt, .. } = &err else {
            panic!("{what}: {err:?}")
        };
        assert!(excerpt.chars().count() <= EXCERPT_CHARS, "{what}");
    }
}

/// xorshift64: a fixed seed, so a failing case is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

/// Pieces a mutation inserts: markup, entities and JSON that parsers trip on.
const FRAGMENTS: &[&str] = &[
    "<INSTANCE CLASSNAME=\"Msvm_KvpExchangeDataItem\">",
    "</INSTANCE>",
    "<PROPERTY NAME=\"Name\">",
    "</PROPERTY>",
    "<VALUE>",
    "</VALUE>",
    "/>",
    "&#",
    "&#x",
    ";",
    "&amp;",
    "&#x10FFFF;",
    "=\"",
    "\"",
    "'",
    "<",
    ">",
    "&",
    "\u{0}",
    "\u{FEFF}",
    "é",
    "😀",
    "1e999",
    "-1",
    "NaN",
    "null",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"state\":",
    "99999999999999999999",
    "\\u0000",
    "\\",
    "\n",
];

/// `text` with one to three random truncations, deletions, duplications, replacements or
/// insertions (on characters, so the result stays valid UTF-8 as the answers are).
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..=rng.below(3) {
        let len = chars.len();
        let at = rng.below(len + 1);
        let end = (at + rng.below(16)).min(len);
        match rng.below(5) {
            0 => chars.truncate(at),
            1 => {
                chars.drain(at..end);
            }
            2 => {
                let copy: Vec<char> = chars[at..end].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, copy);
            }
            3 if at < len => chars[at] = rng.pick(FRAGMENTS).chars().next().unwrap_or('<'),
            _ => {
                chars.splice(at..at, rng.pick(FRAGMENTS).chars());
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn mutated_items_and_answers_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let (mut items_read, mut items_refused) = (0, 0);
    for case in 0..6000 {
        let xml = mutate(&mut rng, ITEM);
        match kvp_items(&xml) {
            Ok(items) => {
                items_read += 1;
                assert!(!items.is_empty(), "case {case}");
            }
            Err(_) => items_refused += 1,
        }
        let _ = kvp_value(&[xml], "SlipwayBeacon");
    }
    // The mutations reach both sides: some texts still read, most are refused.
    assert!(
        items_read > 50 && items_refused > 3000,
        "{items_read} read, {items_refused} refused"
    );
    let mut answers_read = 0;
    for _ in 0..6000 {
        let (_, json) = rng.pick(ANSWERS);
        answers_read += read_all(&mutate(&mut rng, json));
    }
    assert!(answers_read > 100, "{answers_read}");
}

/// A random text over characters that need escaping, and some that do not.
fn random_text(rng: &mut Rng, min: usize) -> String {
    const ALPHABET: &[char] = &[
        'a', 'Z', '0', ' ', '<', '>', '&', '"', '\'', ';', '#', '=', '/', '\n', '\t', 'é', '😀',
        '{', '}', ':', '\\',
    ];
    (0..min + rng.below(24))
        .map(|_| *rng.pick(ALPHABET))
        .collect()
}

/// `text` escaped for XML, each special character by a randomly chosen form (named, decimal,
/// hex), other characters sometimes as numeric references too.
fn escape(rng: &mut Rng, text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let named = match c {
            '<' => Some("&lt;"),
            '>' => Some("&gt;"),
            '&' => Some("&amp;"),
            '"' => Some("&quot;"),
            '\'' => Some("&apos;"),
            _ => None,
        };
        let must = named.is_some();
        match rng.below(4) {
            0 => out.push_str(&format!("&#{};", u32::from(c))),
            1 => out.push_str(&format!("&#x{:X};", u32::from(c))),
            _ if must => out.push_str(named.unwrap_or_default()),
            _ => out.push(c),
        }
    }
    out
}

/// Space between attributes: one to three of space, tab, newline.
fn space(rng: &mut Rng) -> String {
    (0..=rng.below(2))
        .map(|_| *rng.pick(&[' ', '\t', '\n']))
        .collect()
}

#[test]
fn generated_items_round_trip() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for case in 0..3000 {
        let name = random_text(&mut rng, 1);
        let data = random_text(&mut rng, 0);
        let mut properties = [
            format!(
                "<PROPERTY NAME=\"Name\"{}TYPE=\"string\"><VALUE>{}</VALUE></PROPERTY>",
                space(&mut rng),
                escape(&mut rng, &name)
            ),
            format!(
                "<PROPERTY{}TYPE='string' NAME='Data'><VALUE>{}</VALUE></PROPERTY>",
                space(&mut rng),
                escape(&mut rng, &data)
            ),
            "<PROPERTY NAME=\"Caption\" PROPAGATED=\"true\" TYPE=\"string\"></PROPERTY>".to_owned(),
            "<PROPERTY NAME=\"Source\" TYPE=\"uint16\"><VALUE>2</VALUE></PROPERTY>".to_owned(),
        ];
        for i in (1..properties.len()).rev() {
            let j = rng.below(i + 1);
            properties.swap(i, j);
        }
        let attributes = if rng.below(2) == 0 {
            format!("CLASSNAME=\"{KVP_CLASS}\"{}TYPE=\"x\"", space(&mut rng))
        } else {
            format!("TYPE=\"x\"{}CLASSNAME=\"{KVP_CLASS}\"", space(&mut rng))
        };
        let xml = format!(
            "<INSTANCE {attributes}{}>{}</INSTANCE>",
            space(&mut rng),
            properties.join(&space(&mut rng))
        );
        let read = kvp_items(&xml).unwrap_or_else(|e| panic!("case {case}: {e}\n{xml}"));
        assert_eq!(
            read,
            vec![(name.clone(), data.clone())],
            "case {case}: {xml}"
        );
        assert_eq!(kvp_value(&[xml], &name), Some(data), "case {case}");
    }
}

#[test]
fn generated_answers_round_trip() {
    let mut rng = Rng(0xfeed_face_0bad_c0de);
    for case in 0..2000 {
        let exists = rng.below(4) != 0;
        // A VM that exists has a state; one that does not has nothing but `exists`.
        let text = |rng: &mut Rng| (exists && rng.below(3) != 0).then(|| random_text(rng, 0));
        let state = VmState {
            exists,
            state: exists.then(|| random_text(&mut rng, 0)),
            status: text(&mut rng),
            uptime: (exists && rng.below(3) != 0)
                .then(|| f64::from(u32::try_from(rng.next() >> 40).unwrap()) / 8.0),
            pid: (exists && rng.below(3) != 0).then(|| u32::try_from(rng.next() >> 32).unwrap()),
            heartbeat: text(&mut rng),
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            answer::<VmState>("status", &json).unwrap(),
            state,
            "case {case}: {json}"
        );
        let beacon = BeaconAnswer {
            exists,
            running: rng.below(2) == 0,
            items: (0..rng.below(4))
                .map(|_| random_text(&mut rng, 0))
                .collect(),
        };
        let json = serde_json::to_string(&beacon).unwrap();
        assert_eq!(
            answer::<BeaconAnswer>("beacon", &json).unwrap(),
            beacon,
            "case {case}"
        );
        let removed = Removed {
            removed: (0..rng.below(3))
                .map(|_| random_text(&mut rng, 1))
                .collect(),
        };
        let json = serde_json::to_string(&removed).unwrap();
        assert_eq!(
            answer::<Removed>("drop-os-disks", &json).unwrap(),
            removed,
            "case {case}"
        );
        let started = Started {
            state: random_text(&mut rng, 1),
            pid: u32::try_from(rng.next() >> 32).unwrap(),
        };
        let json = serde_json::to_string(&started).unwrap();
        assert_eq!(
            answer::<Started>("start-vm", &json).unwrap(),
            started,
            "case {case}"
        );
    }
}
