//! Tests of the store edits and of reading a store back.

use std::collections::BTreeMap;

use super::ids::*;
use super::*;
use crate::guid::Guid;

fn guid(text: &str) -> Guid {
    text.parse().unwrap()
}

fn spec() -> BootSpec {
    BootSpec {
        esp: PartitionId {
            disk: guid("5b7f2c1e-0c3a-4b55-9d1e-2f6a7b8c9d0e"),
            partition: guid("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
        },
        windows: PartitionId {
            disk: guid("5b7f2c1e-0c3a-4b55-9d1e-2f6a7b8c9d0e"),
            partition: guid("0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9"),
        },
        loader: Guid::derived("slipway-bcd-loader", b"windows-node"),
        description: "Windows Server".into(),
        locale: "en-US".into(),
        timeout_seconds: 0,
        nx_policy: NX_OPT_OUT,
    }
}

#[test]
fn store_edits_boot_the_windows_partition() {
    let spec = spec();
    let edits = store_edits(&spec).unwrap();
    assert_eq!(edits[0].key, ["Description"]);
    assert_eq!(edits[0].name, "KeyName");
    assert_eq!(
        decode(DESCRIPTION, edits[0].value.kind, &edits[0].value.data).unwrap(),
        ElementValue::String("BCD00000000".into())
    );
    let bootmgr_key = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
    assert_eq!(edits[1].key, ["Objects", bootmgr_key, "Description"]);
    assert_eq!(
        edits[1].value,
        RegValue {
            kind: REG_DWORD,
            data: vec![2, 0, 0x10, 0x10]
        }
    );
    for edit in &edits[2..] {
        if edit.name == "Element" {
            assert_eq!(edit.key[2], "Elements");
            assert_eq!(edit.key[3].len(), 8);
            assert!(
                edit.key[3]
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
        }
    }
    // Deterministic: the same spec gives the same edits.
    assert_eq!(store_edits(&spec).unwrap(), edits);

    let store = read_store(&edits).unwrap();
    let bootmgr = &store.objects[&BOOTMGR];
    assert_eq!(bootmgr.kind, OBJECT_BOOT_MANAGER);
    assert_eq!(bootmgr.device(APPLICATION_DEVICE), Some(&spec.esp.device()));
    assert_eq!(
        bootmgr.string(APPLICATION_PATH),
        Some(r"\EFI\Microsoft\Boot\bootmgfw.efi")
    );
    assert_eq!(bootmgr.string(PREFERRED_LOCALE), Some("en-US"));
    assert_eq!(bootmgr.objects(INHERITED_OBJECTS), [GLOBALSETTINGS]);
    assert_eq!(bootmgr.object(DEFAULT_OBJECT), Some(spec.loader));
    assert_eq!(bootmgr.elements[&TIMEOUT], ElementValue::Integer(0));
    let loader = &store.objects[&spec.loader];
    assert_eq!(loader.kind, OBJECT_OS_LOADER);
    assert_eq!(loader.objects(INHERITED_OBJECTS), [BOOTLOADERSETTINGS]);
    assert_eq!(
        loader.elements[&ISOLATED_CONTEXT],
        ElementValue::Boolean(true)
    );
    assert_eq!(
        loader.elements[&NX_POLICY],
        ElementValue::Integer(NX_OPT_OUT)
    );
    assert_eq!(loader.elements[&BOOT_MENU_POLICY], ElementValue::Integer(1));
    assert_eq!(
        loader.elements[&ALLOWED_IN_MEMORY_SETTINGS],
        ElementValue::IntegerList(vec![0x1500_0075])
    );

    let entries = store.entries().unwrap();
    assert_eq!(
        entries,
        [Entry {
            object: spec.loader,
            kind: OBJECT_OS_LOADER,
            is_default: true,
            description: Some("Windows Server".into()),
            device: Some(Device::Partition {
                disk: spec.windows.disk,
                partition: spec.windows.partition
            }),
            os_device: Some(spec.windows.device()),
            path: Some(r"\Windows\system32\winload.efi".into()),
            system_root: Some(r"\Windows".into()),
        }]
    );
}

/// Values shaped like the Windows 10 `BCD-Template` (mattifestation/BCD
/// `BCDTemplateFromScratch.ps1`): a boot manager without a device or display order whose
/// default is the Windows Setup template, with setup-only class-4 elements.
fn template_values() -> Vec<HiveValue> {
    let value = |object: Guid, element_type: u32, v: ElementValue| HiveValue {
        key: vec![
            "Objects".into(),
            braced(object),
            "Elements".into(),
            element_key(element_type),
        ],
        name: "Element".into(),
        value: encode(element_type, &v).unwrap(),
    };
    let kind = |object: Guid, kind: u32| HiveValue {
        key: vec!["Objects".into(), braced(object), "Description".into()],
        name: "Type".into(),
        value: RegValue::dword(kind),
    };
    vec![
        kind(BOOTMGR, OBJECT_BOOT_MANAGER),
        value(
            BOOTMGR,
            APPLICATION_PATH,
            ElementValue::String(BOOTMGR_PATH.into()),
        ),
        value(
            BOOTMGR,
            DESCRIPTION,
            ElementValue::String(BOOTMGR_DESCRIPTION.into()),
        ),
        value(BOOTMGR, DEFAULT_OBJECT, ElementValue::Object(SETUP_PCAT)),
        value(BOOTMGR, TIMEOUT, ElementValue::Integer(30)),
        value(BOOTMGR, 0x4500_0001, ElementValue::Integer(1)),
        value(
            BOOTMGR,
            0x4700_0006,
            ElementValue::IntegerList(vec![0x1600_0010, 0x2600_0020]),
        ),
        kind(GLOBALSETTINGS, OBJECT_INHERIT_ANY),
        value(
            GLOBALSETTINGS,
            INHERITED_OBJECTS,
            ElementValue::ObjectList(vec![DBGSETTINGS, EMSSETTINGS, BADMEMORY]),
        ),
        kind(SETUP_PCAT, OBJECT_OS_LOADER),
        value(
            SETUP_PCAT,
            SYSTEM_ROOT,
            ElementValue::String(r"\windows".into()),
        ),
    ]
}

#[test]
fn edits_over_a_template_replace_its_default() {
    let mut values = template_values();
    // The template alone: a boot manager with an empty display order.
    let store = read_store(&values).unwrap();
    assert_eq!(store.default_object(), Some(SETUP_PCAT));
    assert_eq!(store.entries().unwrap(), []);
    // Keys and value names as another tool may spell them.
    values[1].key[0] = "OBJECTS".into();
    values[1].name = "element".into();
    values.extend(store_edits(&spec()).unwrap());
    values.push(HiveValue {
        key: vec!["Description".into()],
        name: "System".into(),
        value: RegValue::dword(1),
    });
    let store = read_store(&values).unwrap();
    assert_eq!(store.default_object(), Some(spec().loader));
    assert_eq!(
        store.objects[&BOOTMGR].elements[&0x4500_0001],
        ElementValue::Integer(1)
    );
    let entries = store.entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].os_device, Some(spec().windows.device()));
}

#[test]
fn store_edits_refuse_a_well_known_or_zero_loader() {
    for loader in [Guid::ZERO, BOOTMGR, GLOBALSETTINGS] {
        let spec = BootSpec { loader, ..spec() };
        assert!(matches!(
            store_edits(&spec),
            Err(Error::CheckBootSpec { .. })
        ));
    }
    let spec = BootSpec {
        description: "a\0".into(),
        ..spec()
    };
    assert!(matches!(
        store_edits(&spec),
        Err(Error::EncodeElement {
            element_type: DESCRIPTION,
            ..
        })
    ));
}

fn element(object: &str, key: &str, value: RegValue) -> HiveValue {
    HiveValue {
        key: vec![
            "Objects".into(),
            object.into(),
            "Elements".into(),
            key.into(),
        ],
        name: "Element".into(),
        value,
    }
}

#[test]
fn read_store_errors() {
    let bootmgr = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
    let text = |t: &str| RegValue {
        kind: REG_SZ,
        data: t
            .encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect(),
    };

    let bad_object = [element(
        "9dea862c-5cdd-4e70-acc1-f32b344d4795",
        "12000004",
        text("x"),
    )];
    assert!(matches!(
        read_store(&bad_object),
        Err(Error::ParseObjectKey { .. })
    ));
    for key in ["1200004", "12000004x", "1200000g", "+2000004"] {
        let bad_element = [element(bootmgr, key, text("x"))];
        assert!(
            matches!(read_store(&bad_element), Err(Error::ParseElementKey { .. })),
            "{key}"
        );
    }
    let no_type = [element(bootmgr, "12000004", text("x"))];
    assert!(matches!(
        read_store(&no_type),
        Err(Error::FindObjectType { object: BOOTMGR })
    ));
    let bad_type = [HiveValue {
        key: vec!["Objects".into(), bootmgr.into(), "Description".into()],
        name: "Type".into(),
        value: RegValue {
            kind: REG_BINARY,
            data: vec![2, 0, 0x10, 0x10],
        },
    }];
    assert!(matches!(
        read_store(&bad_type),
        Err(Error::DecodeObjectType {
            object: BOOTMGR,
            kind: REG_BINARY,
            len: 4
        })
    ));
    let bad_value = [element(
        bootmgr,
        "25000004",
        RegValue {
            kind: REG_BINARY,
            data: vec![30],
        },
    )];
    match read_store(&bad_value) {
        Err(Error::ReadObject { object, source }) => {
            assert_eq!(object, BOOTMGR);
            assert!(matches!(
                *source,
                Error::DecodeElement {
                    element_type: TIMEOUT,
                    ..
                }
            ));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn entries_need_the_boot_manager_and_the_objects_it_names() {
    assert!(matches!(
        Store::default().entries(),
        Err(Error::FindObject {
            object: BOOTMGR,
            ..
        })
    ));
    let missing = Guid::derived("t", b"missing");
    let store = Store {
        objects: BTreeMap::from([(
            BOOTMGR,
            Object {
                kind: OBJECT_BOOT_MANAGER,
                elements: BTreeMap::from([(
                    DISPLAY_ORDER,
                    ElementValue::ObjectList(vec![missing]),
                )]),
            },
        )]),
    };
    assert!(matches!(store.entries(), Err(Error::FindObject { object, .. }) if object == missing));
}

#[test]
fn error_messages_name_what_failed() {
    let err = decode(TIMEOUT, REG_BINARY, &[1]).unwrap_err();
    assert_eq!(err.to_string(), "decode BCD element 25000004");
    assert_eq!(
        std::error::Error::source(&err).map(ToString::to_string),
        Some("1 bytes, an integer is 8".to_owned())
    );
    assert_eq!(braced(BOOTMGR), "{9dea862c-5cdd-4e70-acc1-f32b344d4795}");
    assert_eq!(
        well_known_name(BOOTLOADERSETTINGS),
        Some("{bootloadersettings}")
    );
    assert_eq!(
        Device::Partition {
            disk: BOOTMGR,
            partition: MEMDIAG
        }
        .to_string(),
        "partition (GPT disk 9DEA862C-5CDD-4E70-ACC1-F32B344D4795, partition B2721D73-1DB4-4C62-BF78-C548A880142D)"
    );
}
