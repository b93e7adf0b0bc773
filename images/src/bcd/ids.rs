//! Well-known identifiers of a BCD store: object GUIDs, object types, element types and the
//! values of the few enumerated elements Slipway writes.
//!
//! Sources, read and restated here (no code taken):
//! - Microsoft, "BCD WMI Provider" reference (previous-versions/windows/desktop/bcd):
//!   `BcdElementType`, `BcdLibraryElementTypes`, `BcdBootMgrElementTypes`,
//!   `BcdOSLoaderElementTypes`, `BcdOSLoader_NxPolicy`.
//! - Geoff Chappell, "BCD Objects" and "BCD Elements"
//!   (<https://www.geoffchappell.com/notes/windows/boot/bcd/objects.htm>, `.../elements.htm`):
//!   the object GUIDs and the element bit fields.
//! - System Informer's `phnt/include/ntbcd.h` (object type bit fields, element types that
//!   Microsoft's reference omits: `IsolatedExecutionContext`, `AllowedInMemorySettings`,
//!   `BootMenuPolicy`).
//! - mattifestation/BCD `BCD/Examples/BCDTemplateFromScratch.ps1`: the `bcdedit /enum all /v`
//!   listing of a Windows 10 `BCD-Template`, which shows which objects the template already
//!   holds and the values its OS target template gives a new loader.

use crate::guid::Guid;

/// `{bootmgr}`: the Windows Boot Manager (`bootmgfw.efi`), whose elements name the entries
/// to offer and the default one.
pub const BOOTMGR: Guid = Guid::from_fields(
    0x9dea862c,
    0x5cdd,
    0x4e70,
    [0xac, 0xc1, 0xf3, 0x2b, 0x34, 0x4d, 0x47, 0x95],
);
/// `{fwbootmgr}`: the firmware boot manager (the UEFI boot variables seen as a BCD object).
pub const FWBOOTMGR: Guid = Guid::from_fields(
    0xa5a30fa2,
    0x3d06,
    0x4e9f,
    [0xb5, 0xf4, 0xa0, 0x1d, 0xf9, 0xd1, 0xfc, 0xba],
);
/// `{globalsettings}`: settings inherited by every boot application (the boot manager's
/// `inherit`). In `BCD-Template` it inherits `{dbgsettings}`, `{emssettings}`, `{badmemory}`.
pub const GLOBALSETTINGS: Guid = Guid::from_fields(
    0x7ea2e1ac,
    0x2e61,
    0x4728,
    [0xaa, 0xa3, 0x89, 0x6d, 0x9d, 0x0a, 0x9f, 0x0e],
);
/// `{bootloadersettings}`: settings inherited by every Windows boot loader. In
/// `BCD-Template` it inherits `{globalsettings}` and `{hypervisorsettings}`.
pub const BOOTLOADERSETTINGS: Guid = Guid::from_fields(
    0x6efb52bf,
    0x1766,
    0x41db,
    [0xa6, 0xb3, 0x0e, 0xe5, 0xef, 0xf7, 0x2b, 0xd7],
);
/// `{resumeloadersettings}`: settings inherited by every resume-from-hibernation loader.
pub const RESUMELOADERSETTINGS: Guid = Guid::from_fields(
    0x1afa9c49,
    0x16ab,
    0x4a5c,
    [0x4a, 0x90, 0x21, 0x28, 0x02, 0xda, 0x94, 0x60],
);
/// `{hypervisorsettings}`: hypervisor debugging settings, inherited by boot loaders.
pub const HYPERVISORSETTINGS: Guid = Guid::from_fields(
    0x7ff607e0,
    0x4395,
    0x11db,
    [0xb0, 0xde, 0x08, 0x00, 0x20, 0x0c, 0x9a, 0x66],
);
/// `{dbgsettings}`: kernel debugger settings.
pub const DBGSETTINGS: Guid = Guid::from_fields(
    0x4636856e,
    0x540f,
    0x4170,
    [0xa1, 0x30, 0xa8, 0x47, 0x76, 0xf4, 0xc6, 0x54],
);
/// `{emssettings}`: Emergency Management Services settings.
pub const EMSSETTINGS: Guid = Guid::from_fields(
    0x0ce4991b,
    0xe6b3,
    0x4b16,
    [0xb2, 0x3c, 0x5e, 0x0d, 0x92, 0x50, 0xe5, 0xd9],
);
/// `{badmemory}`: the list of bad RAM pages.
pub const BADMEMORY: Guid = Guid::from_fields(
    0x5189b25c,
    0x5558,
    0x4bf2,
    [0xbc, 0xa4, 0x28, 0x9b, 0x11, 0xbd, 0x29, 0xe2],
);
/// `{memdiag}`: the Windows Memory Diagnostic application.
pub const MEMDIAG: Guid = Guid::from_fields(
    0xb2721d73,
    0x1db4,
    0x4c62,
    [0xbf, 0x78, 0xc5, 0x48, 0xa8, 0x80, 0x14, 0x2d],
);
/// `{ntldr}` (`{legacy}`): the loader of Windows versions before Vista.
pub const NTLDR: Guid = Guid::from_fields(
    0x466f5a88,
    0x0af2,
    0x4f76,
    [0x90, 0x38, 0x09, 0x5b, 0x17, 0x0d, 0xc2, 0x1c],
);
/// `{ramdiskoptions}`: options of a RAM disk device (WinPE's `boot.wim`).
pub const RAMDISKOPTIONS: Guid = Guid::from_fields(
    0xae5534e0,
    0xa924,
    0x466c,
    [0xb8, 0x36, 0x75, 0x85, 0x39, 0xa3, 0xee, 0x3a],
);
/// `{current}`: an alias bcdedit resolves to the running system's loader; never an object
/// key in a store.
pub const CURRENT: Guid = Guid::from_fields(
    0xfa926493,
    0x6f1c,
    0x4193,
    [0xa4, 0x14, 0x58, 0xf0, 0xb2, 0x45, 0x6d, 0x1e],
);
/// `{default}`: an alias bcdedit resolves to the boot manager's default entry; never an
/// object key in a store.
pub const DEFAULT: Guid = Guid::from_fields(
    0x1cae1eb7,
    0xa0df,
    0x4d4d,
    [0x98, 0x51, 0x48, 0x60, 0xe3, 0x4e, 0xf5, 0x35],
);
/// The UEFI OS target template in `BCD-Template`: the loader object bcdboot copies (with a
/// new GUID and the devices filled in) to make a Windows Boot Loader.
pub const OS_TARGET_TEMPLATE_EFI: Guid = Guid::from_fields(
    0xb012b84d,
    0xc47c,
    0x4ed5,
    [0xb7, 0x22, 0xc0, 0xc4, 0x21, 0x63, 0xe5, 0x69],
);
/// The BIOS OS target template in `BCD-Template`.
pub const OS_TARGET_TEMPLATE_PCAT: Guid = Guid::from_fields(
    0xa1943bbc,
    0xea85,
    0x487c,
    [0x97, 0xc7, 0xc9, 0xed, 0xe9, 0x08, 0xa3, 0x8a],
);
/// The UEFI "Windows Setup" loader template in `BCD-Template`.
pub const SETUP_EFI: Guid = Guid::from_fields(
    0x7254a080,
    0x1510,
    0x4e85,
    [0xac, 0x0f, 0xe7, 0xfb, 0x3d, 0x44, 0x47, 0x36],
);
/// The BIOS "Windows Setup" loader template in `BCD-Template` (its `{bootmgr}`'s default).
pub const SETUP_PCAT: Guid = Guid::from_fields(
    0xcbd971bf,
    0xb7b8,
    0x4885,
    [0x95, 0x1a, 0xfa, 0x03, 0x04, 0x4f, 0x5d, 0x71],
);

/// Every well-known object above with the name bcdedit shows for it (or a short
/// description where bcdedit has none), for display.
pub const WELL_KNOWN: [(Guid, &str); 20] = [
    (BOOTMGR, "{bootmgr}"),
    (FWBOOTMGR, "{fwbootmgr}"),
    (GLOBALSETTINGS, "{globalsettings}"),
    (BOOTLOADERSETTINGS, "{bootloadersettings}"),
    (RESUMELOADERSETTINGS, "{resumeloadersettings}"),
    (HYPERVISORSETTINGS, "{hypervisorsettings}"),
    (DBGSETTINGS, "{dbgsettings}"),
    (EMSSETTINGS, "{emssettings}"),
    (BADMEMORY, "{badmemory}"),
    (MEMDIAG, "{memdiag}"),
    (NTLDR, "{ntldr}"),
    (RAMDISKOPTIONS, "{ramdiskoptions}"),
    (CURRENT, "{current}"),
    (DEFAULT, "{default}"),
    (OS_TARGET_TEMPLATE_EFI, "OS target template (UEFI)"),
    (OS_TARGET_TEMPLATE_PCAT, "OS target template (BIOS)"),
    (SETUP_EFI, "Windows Setup template (UEFI)"),
    (SETUP_PCAT, "Windows Setup template (BIOS)"),
    (
        Guid::from_fields(
            0x0c334284,
            0x9a41,
            0x4de1,
            [0x99, 0xb3, 0xa7, 0xe8, 0x7e, 0x8f, 0xf0, 0x7e],
        ),
        "resume template (UEFI)",
    ),
    (
        Guid::from_fields(
            0x98b02a23,
            0x0674,
            0x4ce7,
            [0xbd, 0xad, 0xe0, 0xa1, 0x5a, 0x8f, 0xf9, 0x7b],
        ),
        "resume template (BIOS)",
    ),
];

/// The display name of a well-known object, if `guid` is one.
pub fn well_known_name(guid: Guid) -> Option<&'static str> {
    WELL_KNOWN
        .iter()
        .find(|(known, _)| *known == guid)
        .map(|(_, name)| *name)
}

// Object types: the REG_DWORD `Objects\{GUID}\Description\Type`. Bits 28..32 say application
// (1), inheritable settings (2) or device (3); for applications bits 20..24 give the image type
// (1 firmware application, 2 boot application) and bits 0..20 the application type (ntbcd.h
// `MAKE_BCD_OBJECT`).

/// Object type of the firmware boot manager `{fwbootmgr}` (firmware application, type 1).
pub const OBJECT_FIRMWARE_BOOT_MANAGER: u32 = 0x1010_0001;
/// Object type of the Windows Boot Manager `{bootmgr}` (firmware application, type 2).
pub const OBJECT_BOOT_MANAGER: u32 = 0x1010_0002;
/// Object type of a Windows Boot Loader, `winload.efi` (boot application, type 3).
pub const OBJECT_OS_LOADER: u32 = 0x1020_0003;
/// Object type of a Windows Resume Application, `winresume.efi` (boot application, type 4).
pub const OBJECT_RESUME_LOADER: u32 = 0x1020_0004;
/// Object type of the Windows Memory Tester (boot application, type 5).
pub const OBJECT_MEMORY_TESTER: u32 = 0x1020_0005;
/// Object type of a firmware boot entry that BCD mirrors from a UEFI `Boot####` variable.
pub const OBJECT_FIRMWARE_APPLICATION: u32 = 0x101f_ffff;
/// Object type of settings any object may inherit (`{globalsettings}`, `{dbgsettings}`...).
pub const OBJECT_INHERIT_ANY: u32 = 0x2010_0000;
/// Object type of settings only OS loaders inherit (`{bootloadersettings}`).
pub const OBJECT_INHERIT_OS_LOADER: u32 = 0x2020_0003;
/// Object type of a device object (`{ramdiskoptions}`).
pub const OBJECT_DEVICE: u32 = 0x3000_0000;

// Element types: bits 28..32 class (1 library, 2 application, 3 device, 4 setup template),
// bits 24..28 format (see `Format`), bits 0..24 subtype (Microsoft `BcdElementType`). An
// application-class (2) number means different things in different applications: 0x23000003
// is the boot manager's default object and a loader's resume object.

/// `device`: the partition holding the application's file (library class, device format).
pub const APPLICATION_DEVICE: u32 = 0x1100_0001;
/// `path`: the application's file on [`APPLICATION_DEVICE`], e.g. `\EFI\Microsoft\Boot\bootmgfw.efi`.
pub const APPLICATION_PATH: u32 = 0x1200_0002;
/// `description`: the name the boot menu shows.
pub const DESCRIPTION: u32 = 0x1200_0004;
/// `locale`: the preferred locale, e.g. `en-US`.
pub const PREFERRED_LOCALE: u32 = 0x1200_0005;
/// `inherit`: objects whose elements this object inherits, in order.
pub const INHERITED_OBJECTS: u32 = 0x1400_0006;
/// `recoverysequence`: applications to run when this one fails (WinRE).
pub const RECOVERY_SEQUENCE: u32 = 0x1400_0008;
/// `recoveryenabled`: run [`RECOVERY_SEQUENCE`] automatically.
pub const AUTO_RECOVERY_ENABLED: u32 = 0x1600_0009;
/// `isolatedcontext`: run the application in its own execution context; Microsoft's note in
/// ntbcd.h says a UEFI Windows 8+ loader without it does not boot.
pub const ISOLATED_CONTEXT: u32 = 0x1600_0060;
/// `allowedinmemorysettings`: element types the loader may pass on in memory.
pub const ALLOWED_IN_MEMORY_SETTINGS: u32 = 0x1700_0077;
/// The one element type the OS target template lists in [`ALLOWED_IN_MEMORY_SETTINGS`]
/// (undocumented; bcdedit shows `allowedinmemorysettings 0x15000075`).
pub const ALLOWED_IN_MEMORY_DEFAULT: u64 = 0x1500_0075;

/// Boot manager `displayorder`: the entries of the boot menu, in order.
pub const DISPLAY_ORDER: u32 = 0x2400_0001;
/// Boot manager `bootsequence`: a one-time boot list.
pub const BOOT_SEQUENCE: u32 = 0x2400_0002;
/// Boot manager `default`: the entry booted when the menu times out or is not shown.
pub const DEFAULT_OBJECT: u32 = 0x2300_0003;
/// Boot manager `timeout`: seconds the menu waits.
pub const TIMEOUT: u32 = 0x2500_0004;
/// Boot manager `resumeobject`: the resume application to try first.
pub const RESUME_OBJECT: u32 = 0x2300_0006;
/// Boot manager `toolsdisplayorder`: the tools menu (usually `{memdiag}`).
pub const TOOLS_DISPLAY_ORDER: u32 = 0x2400_0010;
/// Boot manager `displaybootmenu`: always show the menu.
pub const DISPLAY_BOOT_MENU: u32 = 0x2600_0020;

/// OS loader `osdevice`: the partition holding the Windows directory.
pub const OS_DEVICE: u32 = 0x2100_0001;
/// OS loader `systemroot`: the Windows directory on [`OS_DEVICE`], `\Windows`.
pub const SYSTEM_ROOT: u32 = 0x2200_0002;
/// OS loader `resumeobject`: its resume-from-hibernation application (same number as the
/// boot manager's [`DEFAULT_OBJECT`]).
pub const ASSOCIATED_RESUME_OBJECT: u32 = 0x2300_0003;
/// OS loader `detecthal`.
pub const DETECT_KERNEL_AND_HAL: u32 = 0x2600_0010;
/// OS loader `nx`: the no-execute policy, one of the `NX_*` values.
pub const NX_POLICY: u32 = 0x2500_0020;
/// OS loader `pae`.
pub const PAE_POLICY: u32 = 0x2500_0021;
/// OS loader `winpe`: boot as Windows PE.
pub const WINPE: u32 = 0x2600_0022;
/// OS loader `bootmenupolicy`: one of the `BOOT_MENU_POLICY_*` values.
pub const BOOT_MENU_POLICY: u32 = 0x2500_00c2;

/// `nx OptIn`: no-execute protection for system components only (client default).
pub const NX_OPT_IN: u64 = 0;
/// `nx OptOut`: no-execute protection for everything but opted-out programs (server default).
pub const NX_OPT_OUT: u64 = 1;
/// `nx AlwaysOff`.
pub const NX_ALWAYS_OFF: u64 = 2;
/// `nx AlwaysOn`.
pub const NX_ALWAYS_ON: u64 = 3;
/// `bootmenupolicy Legacy`: the text boot menu.
pub const BOOT_MENU_POLICY_LEGACY: u64 = 0;
/// `bootmenupolicy Standard`: the graphical boot menu (what the OS target template sets).
pub const BOOT_MENU_POLICY_STANDARD: u64 = 1;

/// The boot manager's file on the ESP, as bcdboot and `BCD-Template` name it.
pub const BOOTMGR_PATH: &str = r"\EFI\Microsoft\Boot\bootmgfw.efi";
/// The UEFI Windows loader on the Windows partition.
pub const WINLOAD_PATH: &str = r"\Windows\system32\winload.efi";
/// The Windows directory on the Windows partition.
pub const WINDOWS_ROOT: &str = r"\Windows";
/// The boot manager's description, as in `BCD-Template`.
pub const BOOTMGR_DESCRIPTION: &str = "Windows Boot Manager";
/// Hive-root `Description\KeyName`: the name under which Windows mounts a system store
/// (`HKLM\BCD00000000`); BCD-SYS (jpz4085/BCD-SYS `winload.sh`) sets it on a new store.
pub const STORE_KEY_NAME: &str = "BCD00000000";
