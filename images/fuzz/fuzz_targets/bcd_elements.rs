//! Fuzz target: the BCD element decoder (`images::bcd::decode`) and the store reader.
//! Input: `[element type: 4 bytes LE][registry type: 1 byte][data...]`. Whatever decodes must
//! encode again and decode to the same value; the same value is then read back through
//! `read_store` as the only element of `{bootmgr}`.

#![no_main]

use images::bcd::{self, HiveValue, RegValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((head, data)) = input.split_first_chunk::<5>() else {
        return;
    };
    let element_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let kind = u32::from(head[4]);
    let Ok(value) = bcd::decode(element_type, kind, data) else {
        return;
    };
    let Ok(again) = bcd::encode(element_type, &value) else {
        panic!("{element_type:08x}: decoded {value:?} but cannot encode it");
    };
    let Ok(back) = bcd::decode(element_type, again.kind, &again.data) else {
        panic!("{element_type:08x}: the encoding of {value:?} does not decode");
    };
    assert_eq!(back, value);
    let object = bcd::braced(bcd::ids::BOOTMGR);
    let values = [
        HiveValue {
            key: vec!["Objects".into(), object.clone(), "Description".into()],
            name: "Type".into(),
            value: RegValue::dword(bcd::ids::OBJECT_BOOT_MANAGER),
        },
        HiveValue {
            key: vec![
                "Objects".into(),
                object,
                "Elements".into(),
                bcd::element_key(element_type),
            ],
            name: "Element".into(),
            value: RegValue {
                kind,
                data: data.to_vec(),
            },
        },
    ];
    let Ok(store) = bcd::read_store(&values) else {
        panic!("{element_type:08x}: decodes alone but not through read_store");
    };
    assert_eq!(
        store.objects[&bcd::ids::BOOTMGR]
            .elements
            .get(&element_type),
        Some(&value)
    );
    let _ = store.entries();
});
