//! `slipway vhdx ...`: convert, inspect, check, export and derive VHDX files.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use images::vhdx::{
    self, Extent, Identity, Options, Vhdx, check, child, export, info::Info, update,
};

use crate::progress;
use crate::size::{human, parse_size};

/// VHDX subcommands.
#[derive(Debug, Subcommand)]
pub enum VhdxCommand {
    /// Convert a raw image or block device to VHDX (dynamic by default).
    ///
    /// Holes in the input are never read, and all-zero blocks are not allocated.
    /// The output appears only once it is complete.
    Convert(ConvertArgs),
    /// Describe a VHDX: kind, sizes, allocation, identifiers, parent.
    Info(InfoArgs),
    /// Check every structure of a VHDX; exit 1 with one line per problem.
    Check(CheckArgs),
    /// Write the guest-visible content (following parents) to a sparse raw file.
    Export(ExportArgs),
    /// Create a differencing VHDX over a base, as Hyper-V's New-VHD -Differencing does.
    Child(ChildArgs),
    /// Replay a dirty log into the file itself (other commands replay it in memory only).
    Replay(ReplayArgs),
}

/// Arguments of `slipway vhdx convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Raw disk image or block device to read.
    input: PathBuf,
    /// VHDX file to write (must not exist).
    output: PathBuf,
    /// Payload block size: a power of two from 1M to 256M (Hyper-V's own default is 32M).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    block_size: u64,
    /// Allocate every block in order (a fixed VHDX) instead of only blocks with data.
    #[arg(long)]
    fixed: bool,
    /// Logical sector size the guest sees.
    #[arg(long, default_value = "512", value_parser = parse_sector_size)]
    sector_size: u32,
}

/// Arguments of `slipway vhdx info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The VHDX file.
    file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `slipway vhdx check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The VHDX file.
    file: PathBuf,
}

/// Arguments of `slipway vhdx export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The VHDX file (a differencing disk finds its parents through its parent locator).
    file: PathBuf,
    /// Raw file to write (must not exist).
    output: PathBuf,
}

/// Arguments of `slipway vhdx child`.
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// The base (parent) VHDX; it is never modified.
    #[arg(long)]
    parent: PathBuf,
    /// The differencing VHDX to create (must not exist).
    output: PathBuf,
    /// Record this as the parent's absolute path (e.g. the Windows path on a Hyper-V host).
    #[arg(long, value_name = "PATH")]
    absolute_path: Option<String>,
}

/// Arguments of `slipway vhdx replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The VHDX file to repair in place.
    file: PathBuf,
}

fn parse_sector_size(text: &str) -> Result<u32, String> {
    match text {
        "512" => Ok(512),
        "4096" => Ok(4096),
        other => Err(format!("{other:?} is not a sector size: use 512 or 4096")),
    }
}

/// Runs one VHDX subcommand.
pub fn run(command: VhdxCommand) -> anyhow::Result<()> {
    match command {
        VhdxCommand::Convert(args) => convert(args),
        VhdxCommand::Info(args) => show_info(args),
        VhdxCommand::Check(args) => run_check(args),
        VhdxCommand::Export(args) => run_export(args),
        VhdxCommand::Child(args) => make_child(args),
        VhdxCommand::Replay(args) => replay(args),
    }
}

fn refuse_existing(path: &std::path::Path) -> anyhow::Result<()> {
    if path.exists() {
        bail!(
            "{} already exists; remove it or choose another output path",
            path.display()
        );
    }
    Ok(())
}

fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let what = format!(
        "convert {} to {}",
        args.input.display(),
        args.output.display()
    );
    refuse_existing(&args.output)?;
    let block_size = u32::try_from(args.block_size)
        .ok()
        .filter(|b| b.is_power_of_two() && (1 << 20..=256 << 20).contains(b));
    let Some(block_size) = block_size else {
        bail!(
            "block size {} is not a power of two from 1M to 256M",
            args.block_size
        );
    };
    let input =
        File::open(&args.input).with_context(|| format!("open {}", args.input.display()))?;
    // Seeking to the end gives the size of regular files and block devices alike.
    let size = std::io::Seek::seek(&mut &input, std::io::SeekFrom::End(0))
        .with_context(|| format!("find the size of {}", args.input.display()))?;
    if size == 0 || size % u64::from(args.sector_size) != 0 {
        bail!(
            "{} is {size} bytes: a disk image must be a non-zero multiple of the {}-byte sector size",
            args.input.display(),
            args.sector_size
        );
    }
    let mut options = Options::new(Identity::random()?);
    options.block_size = block_size;
    options.fixed = args.fixed;
    options.logical_sector_size = args.sector_size;
    let extents = [Extent::File {
        file: Arc::new(input),
        offset: 0,
        len: size,
    }];
    let bar = progress::bytes(size, "convert");
    let summary = vhdx::writer::write_file(&args.output, &extents, &options, &mut |done| {
        bar.set_position(done)
    })
    .context(what)?;
    bar.finish_and_clear();
    tracing::info!(
        output = %args.output.display(),
        virtual_size = summary.virtual_size,
        allocated_blocks = summary.allocated_blocks,
        file_size = summary.file_size,
        "converted"
    );
    Ok(())
}

fn show_info(args: InfoArgs) -> anyhow::Result<()> {
    let vhdx = match Vhdx::open_chain(&args.file) {
        Ok(v) => v,
        // Describe a child even when its parent is missing; `check` reports that.
        Err(vhdx::reader::Error::FindParent { .. } | vhdx::reader::Error::MatchParent { .. }) => {
            Vhdx::open(&args.file)?
        }
        Err(e) => return Err(e.into()),
    };
    let info = Info::of(&vhdx);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let kind = serde_json::to_value(info.kind)?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let rows = [
        ("file", info.path.clone()),
        ("kind", kind),
        (
            "virtual size",
            format!("{} ({} bytes)", human(info.virtual_size), info.virtual_size),
        ),
        ("block size", human(info.block_size.into())),
        (
            "sector size",
            format!(
                "{} logical, {} physical",
                info.logical_sector_size, info.physical_sector_size
            ),
        ),
        (
            "allocated",
            format!("{} of {} blocks", info.allocated_blocks, info.total_blocks),
        ),
        (
            "file size",
            format!("{} ({} bytes)", human(info.file_size), info.file_size),
        ),
        ("disk id", info.disk_id.clone()),
        ("data write guid", info.data_write_guid.clone()),
        ("creator", info.creator.clone()),
        (
            "log",
            if info.log_replayed {
                "dirty: replayed in memory (run `slipway vhdx replay` to repair the file)".into()
            } else {
                "clean".into()
            },
        ),
    ];
    for (key, value) in rows {
        println!("{key:16} {value}");
    }
    if let Some(parent) = &info.parent {
        let none = || "-".to_owned();
        println!(
            "{:16} {}",
            "parent linkage",
            parent.parent_linkage.clone().unwrap_or_else(none)
        );
        println!(
            "{:16} {}",
            "parent (rel)",
            parent.relative_path.clone().unwrap_or_else(none)
        );
        println!(
            "{:16} {}",
            "parent (abs)",
            parent.absolute_win32_path.clone().unwrap_or_else(none)
        );
        println!(
            "{:16} {}",
            "parent found",
            parent
                .resolved
                .clone()
                .unwrap_or_else(|| "no (see `slipway vhdx check`)".into())
        );
    }
    for note in &info.notes {
        println!("{:16} {note}", "note");
    }
    Ok(())
}

fn run_check(args: CheckArgs) -> anyhow::Result<()> {
    let report = check::check(&args.file);
    for finding in &report.findings {
        println!("{}: {finding}", args.file.display());
    }
    if !report.is_clean() {
        bail!(
            "{} problem(s) found in {}",
            report.findings.len(),
            args.file.display()
        );
    }
    println!(
        "{}: clean{}",
        args.file.display(),
        if report.log_replayed {
            " (after replaying its log in memory)"
        } else {
            ""
        }
    );
    Ok(())
}

fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    refuse_existing(&args.output)?;
    let what = format!(
        "export {} to {}",
        args.file.display(),
        args.output.display()
    );
    let size = Vhdx::open(&args.file)
        .map(|v| v.geometry().virtual_size)
        .unwrap_or(0);
    let bar = progress::bytes(size, "export");
    let written = export::export_file(&args.file, &args.output, &mut |done| bar.set_position(done))
        .context(what)?;
    bar.finish_and_clear();
    tracing::info!(output = %args.output.display(), data_bytes = written, "exported");
    Ok(())
}

fn make_child(args: ChildArgs) -> anyhow::Result<()> {
    refuse_existing(&args.output)?;
    let options = child::ChildOptions {
        absolute_path: args.absolute_path,
        block_size: None,
    };
    child::create(&args.parent, &args.output, &options).with_context(|| {
        format!(
            "create {} over {}",
            args.output.display(),
            args.parent.display()
        )
    })?;
    tracing::info!(child = %args.output.display(), parent = %args.parent.display(), "created differencing disk");
    Ok(())
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let replayed = update::replay_log(&args.file)
        .with_context(|| format!("replay the log of {}", args.file.display()))?;
    println!(
        "{}: {}",
        args.file.display(),
        if replayed {
            "log replayed into the file"
        } else {
            "log already clean, nothing written"
        }
    );
    Ok(())
}
