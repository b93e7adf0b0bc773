//! What a BCD store must hold to boot one Windows installation, and a store read back.
//!
//! [`store_edits`] lists the values to set in the image's own `BCD-Template` so that the boot
//! manager on the ESP loads one Windows Boot Loader from the Windows partition. The template
//! already holds `{bootmgr}` (path, description, locale, inherit `{globalsettings}`, default
//! the Windows Setup template, timeout 30, and setup-only class-4 elements), the settings
//! groups (`{globalsettings}`, `{bootloadersettings}`, ...) and the OS target templates
//! (mattifestation/BCD `BCDTemplateFromScratch.ps1` lists it all). bcdboot copies the UEFI OS
//! target template into a new loader and fills in the devices; the loader elements here are
//! that template's (locale, inherit `{bootloadersettings}`, isolatedcontext,
//! allowedinmemorysettings, systemroot, nx, bootmenupolicy) plus what bcdboot adds (device,
//! path, description, osdevice), matching what jpz4085/BCD-SYS `winload.sh` writes.
//!
//! Left out, on purpose: the resume-from-hibernation object and the `resumeobject` elements
//! that point at it (a node image never hibernates), WinRE's `recoverysequence` /
//! `recoveryenabled` (no recovery partition), `toolsdisplayorder {memdiag}` (memtest.efi is
//! not placed), and the hive-root `Description\System` / `FirmwareModified` values BCD-SYS
//! sets on a new store (they mark a store Windows mounted as its system store; booting does
//! not read them, as far as any public source says).

use std::collections::BTreeMap;

use super::element::{ElementValue, RegValue, braced, element_key, encode};
use super::ids;
use super::{Device, Error, REG_DWORD};
use crate::guid::Guid;

/// A GPT partition named the way BCD names one: by its disk's GUID and its own unique GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionId {
    /// The GPT header's disk GUID.
    pub disk: Guid,
    /// The partition entry's unique partition GUID.
    pub partition: Guid,
}

impl PartitionId {
    /// The BCD device naming this partition.
    pub fn device(self) -> Device {
        Device::Partition {
            disk: self.disk,
            partition: self.partition,
        }
    }
}

/// One boot manager and one Windows loader, as a node image boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// The EFI system partition holding `\EFI\Microsoft\Boot\bootmgfw.efi` and the store.
    pub esp: PartitionId,
    /// The NTFS partition holding `\Windows`.
    pub windows: PartitionId,
    /// The loader object's GUID (derive it, for reproducible images).
    pub loader: Guid,
    /// The loader's menu name, e.g. "Windows Server".
    pub description: String,
    /// The preferred locale of both objects, e.g. `en-US`.
    pub locale: String,
    /// Seconds the boot manager's menu waits (bcdboot sets 30; with one entry and the
    /// standard menu policy no menu is shown).
    pub timeout_seconds: u64,
    /// The loader's `nx` policy: [`ids::NX_OPT_IN`] as the client template has it,
    /// [`ids::NX_OPT_OUT`] as Windows Server installs have it.
    pub nx_policy: u64,
}

/// One registry value of a hive: the key path from the hive root, the value name, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiveValue {
    /// Key path components from the hive root, e.g. `["Objects", "{9dea…}", "Elements",
    /// "11000001"]`.
    pub key: Vec<String>,
    /// The value name (`Element`, `Type`, `KeyName`).
    pub name: String,
    /// The value.
    pub value: RegValue,
}

/// A value to set in the hive: [`store_edits`] returns these.
pub type Edit = HiveValue;

fn hive_value(key: &[&str], name: &str, value: RegValue) -> HiveValue {
    HiveValue {
        key: key.iter().map(|part| (*part).to_owned()).collect(),
        name: name.to_owned(),
        value,
    }
}

fn object_edits(
    out: &mut Vec<Edit>,
    object: Guid,
    kind: u32,
    elements: BTreeMap<u32, ElementValue>,
) -> Result<(), Error> {
    let id = braced(object);
    out.push(hive_value(
        &["Objects", &id, "Description"],
        "Type",
        RegValue::dword(kind),
    ));
    for (element_type, value) in elements {
        out.push(hive_value(
            &["Objects", &id, "Elements", &element_key(element_type)],
            "Element",
            encode(element_type, &value)?,
        ));
    }
    Ok(())
}

/// Every value to set in a `BCD-Template` so that its boot manager boots `spec`'s loader:
/// first the hive-root `Description\KeyName`, then `{bootmgr}`, then the loader, each object's
/// `Description\Type` before its elements in ascending type order. Setting a value the
/// template already has replaces it (the boot manager's default, timeout, locale).
pub fn store_edits(spec: &BootSpec) -> Result<Vec<Edit>, Error> {
    if spec.loader.is_zero() || ids::well_known_name(spec.loader).is_some() {
        return Err(Error::CheckBootSpec {
            reason: format!(
                "the loader GUID {} is zero or a well-known BCD object; derive a new one",
                braced(spec.loader)
            ),
        });
    }
    let string = |text: &str| ElementValue::String(text.to_owned());
    let mut edits = vec![hive_value(
        &["Description"],
        "KeyName",
        RegValue {
            kind: super::REG_SZ,
            data: ids::STORE_KEY_NAME
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect(),
        },
    )];
    let bootmgr = BTreeMap::from([
        (
            ids::APPLICATION_DEVICE,
            ElementValue::Device(spec.esp.device()),
        ),
        (ids::APPLICATION_PATH, string(ids::BOOTMGR_PATH)),
        (ids::DESCRIPTION, string(ids::BOOTMGR_DESCRIPTION)),
        (ids::PREFERRED_LOCALE, string(&spec.locale)),
        (
            ids::INHERITED_OBJECTS,
            ElementValue::ObjectList(vec![ids::GLOBALSETTINGS]),
        ),
        (ids::DEFAULT_OBJECT, ElementValue::Object(spec.loader)),
        (
            ids::DISPLAY_ORDER,
            ElementValue::ObjectList(vec![spec.loader]),
        ),
        (ids::TIMEOUT, ElementValue::Integer(spec.timeout_seconds)),
    ]);
    object_edits(&mut edits, ids::BOOTMGR, ids::OBJECT_BOOT_MANAGER, bootmgr)?;
    let loader = BTreeMap::from([
        (
            ids::APPLICATION_DEVICE,
            ElementValue::Device(spec.windows.device()),
        ),
        (ids::APPLICATION_PATH, string(ids::WINLOAD_PATH)),
        (ids::DESCRIPTION, string(&spec.description)),
        (ids::PREFERRED_LOCALE, string(&spec.locale)),
        (
            ids::INHERITED_OBJECTS,
            ElementValue::ObjectList(vec![ids::BOOTLOADERSETTINGS]),
        ),
        (ids::ISOLATED_CONTEXT, ElementValue::Boolean(true)),
        (
            ids::ALLOWED_IN_MEMORY_SETTINGS,
            ElementValue::IntegerList(vec![ids::ALLOWED_IN_MEMORY_DEFAULT]),
        ),
        (ids::OS_DEVICE, ElementValue::Device(spec.windows.device())),
        (ids::SYSTEM_ROOT, string(ids::WINDOWS_ROOT)),
        (ids::NX_POLICY, ElementValue::Integer(spec.nx_policy)),
        (
            ids::BOOT_MENU_POLICY,
            ElementValue::Integer(ids::BOOT_MENU_POLICY_STANDARD),
        ),
    ]);
    object_edits(&mut edits, spec.loader, ids::OBJECT_OS_LOADER, loader)?;
    Ok(edits)
}

/// One object of a store: its type and its elements by element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The object type (`Description\Type`), e.g. [`ids::OBJECT_OS_LOADER`].
    pub kind: u32,
    /// The elements.
    pub elements: BTreeMap<u32, ElementValue>,
}

impl Object {
    /// A string element, if present.
    pub fn string(&self, element_type: u32) -> Option<&str> {
        match self.elements.get(&element_type) {
            Some(ElementValue::String(text)) => Some(text),
            _ => None,
        }
    }

    /// A device element, if present.
    pub fn device(&self, element_type: u32) -> Option<&Device> {
        match self.elements.get(&element_type) {
            Some(ElementValue::Device(device)) => Some(device),
            _ => None,
        }
    }

    /// An object element, if present.
    pub fn object(&self, element_type: u32) -> Option<Guid> {
        match self.elements.get(&element_type) {
            Some(ElementValue::Object(guid)) => Some(*guid),
            _ => None,
        }
    }

    /// An object-list element, empty if absent.
    pub fn objects(&self, element_type: u32) -> &[Guid] {
        match self.elements.get(&element_type) {
            Some(ElementValue::ObjectList(guids)) => guids,
            _ => &[],
        }
    }
}

/// A BCD store read back: its objects by GUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    /// The objects.
    pub objects: BTreeMap<Guid, Object>,
}

/// One entry of the boot manager's menu, resolved for display. Only the entry's own elements
/// are read (not inherited ones): bcdboot and [`store_edits`] set these on the loader itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The loader object.
    pub object: Guid,
    /// Its object type.
    pub kind: u32,
    /// Whether it is the boot manager's default.
    pub is_default: bool,
    /// `description`.
    pub description: Option<String>,
    /// `device`: where `path` is.
    pub device: Option<Device>,
    /// `osdevice`: where `\Windows` is.
    pub os_device: Option<Device>,
    /// `path`: the loader's file.
    pub path: Option<String>,
    /// `systemroot`.
    pub system_root: Option<String>,
}

impl Store {
    /// The boot manager's `default`, if the store has a boot manager with one.
    pub fn default_object(&self) -> Option<Guid> {
        self.objects.get(&ids::BOOTMGR)?.object(ids::DEFAULT_OBJECT)
    }

    /// The boot manager's display order, each entry resolved to its loader's elements.
    pub fn entries(&self) -> Result<Vec<Entry>, Error> {
        let bootmgr = self.objects.get(&ids::BOOTMGR).ok_or(Error::FindObject {
            object: ids::BOOTMGR,
            needed_by: "the boot menu (the Windows Boot Manager object)",
        })?;
        let default = self.default_object();
        bootmgr
            .objects(ids::DISPLAY_ORDER)
            .iter()
            .map(|&guid| {
                let object = self.objects.get(&guid).ok_or(Error::FindObject {
                    object: guid,
                    needed_by: "{bootmgr} displayorder",
                })?;
                Ok(Entry {
                    object: guid,
                    kind: object.kind,
                    is_default: default == Some(guid),
                    description: object.string(ids::DESCRIPTION).map(str::to_owned),
                    device: object.device(ids::APPLICATION_DEVICE).cloned(),
                    os_device: object.device(ids::OS_DEVICE).cloned(),
                    path: object.string(ids::APPLICATION_PATH).map(str::to_owned),
                    system_root: object.string(ids::SYSTEM_ROOT).map(str::to_owned),
                })
            })
            .collect()
    }
}

fn parse_object_key(key: &str) -> Result<Guid, Error> {
    let err = || Error::ParseObjectKey {
        key: key.to_owned(),
    };
    if !(key.starts_with('{') && key.ends_with('}')) {
        return Err(err());
    }
    key.parse().map_err(|_| err())
}

fn parse_element_key(object: Guid, key: &str) -> Result<u32, Error> {
    if key.len() != 8 || !key.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::ParseElementKey {
            object,
            key: key.to_owned(),
        });
    }
    u32::from_str_radix(key, 16).map_err(|_| Error::ParseElementKey {
        object,
        key: key.to_owned(),
    })
}

#[derive(Default)]
struct Partial {
    kind: Option<(u32, Vec<u8>)>,
    elements: BTreeMap<u32, ElementValue>,
}

/// Builds a store from a hive's values (key path from the root, value name, value), as an
/// export of the hive lists them. Key and value names compare case-insensitively, as the
/// registry does; values outside `Objects\{GUID}\Description\Type` and
/// `Objects\{GUID}\Elements\XXXXXXXX\Element` are ignored. A later value for the same element
/// replaces an earlier one.
pub fn read_store(values: &[HiveValue]) -> Result<Store, Error> {
    let mut partial: BTreeMap<Guid, Partial> = BTreeMap::new();
    for value in values {
        let [top, object_key, rest @ ..] = value.key.as_slice() else {
            continue;
        };
        if !top.eq_ignore_ascii_case("Objects") {
            continue;
        }
        let object = parse_object_key(object_key)?;
        match rest {
            [description]
                if description.eq_ignore_ascii_case("Description")
                    && value.name.eq_ignore_ascii_case("Type") =>
            {
                partial.entry(object).or_default().kind =
                    Some((value.value.kind, value.value.data.clone()));
            }
            [elements, element]
                if elements.eq_ignore_ascii_case("Elements")
                    && value.name.eq_ignore_ascii_case("Element") =>
            {
                let element_type = parse_element_key(object, element)?;
                let decoded = super::decode(element_type, value.value.kind, &value.value.data)
                    .map_err(|source| Error::ReadObject {
                        object,
                        source: Box::new(source),
                    })?;
                partial
                    .entry(object)
                    .or_default()
                    .elements
                    .insert(element_type, decoded);
            }
            _ => {}
        }
    }
    let mut store = Store::default();
    for (object, Partial { kind, elements }) in partial {
        let (reg_kind, data) = kind.ok_or(Error::FindObjectType { object })?;
        let word: [u8; 4] = match (reg_kind, data.as_slice()) {
            (REG_DWORD, &[a, b, c, d]) => [a, b, c, d],
            _ => {
                return Err(Error::DecodeObjectType {
                    object,
                    kind: reg_kind,
                    len: data.len(),
                });
            }
        };
        store.objects.insert(
            object,
            Object {
                kind: u32::from_le_bytes(word),
                elements,
            },
        );
    }
    Ok(store)
}
