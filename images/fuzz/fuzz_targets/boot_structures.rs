//! Fuzz target: the boot-disk parsers outside VHDX. Input: `[selector][payload...]`.
//! Selector 0: the GPT reader (`disk::read_partitions`) over the payload as a disk (bytes past
//! its end read as zeros). Selector 1: the UKI builder (`uki::build`) with the payload as the
//! EFI stub and two small sections appended.

#![no_main]

use std::hint::black_box;

use images::{disk, uki};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match selector % 2 {
        0 => {
            let result = disk::read_partitions(|offset, buf: &mut [u8]| {
                buf.fill(0);
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(payload.len());
                let end = start.saturating_add(buf.len()).min(payload.len());
                buf[..end - start].copy_from_slice(&payload[start..end]);
                Ok(())
            });
            let _ = black_box(result);
        }
        _ => {
            let sections = [
                uki::Section { name: ".cmdline", data: b"console=ttyS0" },
                uki::Section { name: ".linux", data: &[0x4d, 0x5a, 0, 0] },
            ];
            let _ = black_box(uki::build(payload, &sections));
        }
    }
});
