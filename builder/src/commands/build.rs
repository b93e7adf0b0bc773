//! `slipway build`, `slipway lock` and `slipway diff`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use images::manifest::Manifest;

use crate::build::{self, Request};
use crate::diff;
use crate::events::Events;
use crate::lock::Lock;
use crate::recipe::Recipe;
use crate::sources::{self, Policy};

/// Arguments of `slipway build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe (TOML, format 1; see the README's "Recipe format").
    recipe: PathBuf,
    /// Output directory for NAME-VERSION.vhdx, .manifest.json and .spdx.json.
    #[arg(long, short, default_value = "out")]
    out: PathBuf,
    /// Cache of downloads and stages [default: $SLIPWAY_CACHE, else $XDG_CACHE_HOME/slipway,
    /// else ~/.cache/slipway].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Use the lock file as it is: refuse to build when an input is not in it or differs.
    #[arg(long)]
    locked: bool,
    /// One JSON event per line on stdout (for CI systems) instead of progress bars.
    #[arg(long)]
    json: bool,
    /// Sign the image with this private key (writes NAME-VERSION.sig.json).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The repository the image will be pushed to, named by the signature (as for `slipway
    /// sign --repository`): a push without the key publishes it.
    #[arg(long, value_name = "REPO", requires = "key")]
    repository: Option<images::oci::RepositoryName>,
    #[command(flatten)]
    passphrase: crate::commands::publish::Passphrase,
}

/// Arguments of `slipway lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The recipe; its lock file is written beside it (NAME.lock).
    recipe: PathBuf,
    /// Cache of downloads and stages (as for `build`).
    #[arg(long)]
    cache: Option<PathBuf>,
}

/// Arguments of `slipway diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older manifest (NAME-VERSION.manifest.json).
    old: PathBuf,
    /// The newer manifest.
    new: PathBuf,
    /// Print JSON instead of a release note.
    #[arg(long)]
    json: bool,
}

/// The cache directory: the flag, else `$SLIPWAY_CACHE`, else the XDG cache.
fn cache_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag.or_else(|| std::env::var_os("SLIPWAY_CACHE").map(PathBuf::from)) {
        return Ok(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(xdg).join("slipway"));
    }
    let home =
        std::env::var_os("HOME").context("no --cache, $SLIPWAY_CACHE, $XDG_CACHE_HOME or $HOME")?;
    Ok(PathBuf::from(home).join(".cache/slipway"))
}

/// Runs `slipway build`.
pub fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let events = Events::new(args.json);
    // Read the key first: a wrong passphrase should not cost a build.
    let key = args
        .key
        .as_ref()
        .map(|k| args.passphrase.read_key(k))
        .transpose()?;
    let request = Request {
        recipe: args.recipe.clone(),
        out: args.out,
        cache: cache_dir(args.cache)?,
        policy: if args.locked {
            Policy::Locked
        } else {
            Policy::Update
        },
    };
    let built = build::build(&request, &events)
        .with_context(|| format!("cannot build {}", args.recipe.display()))?;
    let signature = match &key {
        Some(key) => {
            let image = images::oci::transfer::LocalImage::open(&built.manifest_path)?;
            Some(images::oci::signature::sign_local(
                &image,
                key,
                args.repository.as_ref(),
            )?)
        }
        None => None,
    };
    events.finished(serde_json::json!({
        "vhdx": built.vhdx,
        "manifest": built.manifest_path,
        "sbom": built.sbom,
        "sha256": built.manifest.disk.sha256,
        "root_hash": built.manifest.root_hash(),
        "stages_cached": built.cached_stages,
        "stages_run": built.run_stages,
    }));
    if !args.json {
        println!("{}", built.vhdx.display());
        println!("  sha256     {}", built.manifest.disk.sha256);
        if built.manifest.disk.verity.is_some() {
            println!("  root hash  {}", built.manifest.root_hash());
        }
        println!("  manifest   {}", built.manifest_path.display());
        println!("  sbom       {}", built.sbom.display());
        if let Some(signature) = &signature {
            println!("  signature  {}", signature.display());
        }
        println!(
            "  stages     {} run, {} from the cache",
            built.run_stages, built.cached_stages
        );
    }
    Ok(())
}

/// Runs `slipway lock`.
pub fn run_lock(args: LockArgs) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let cache = cache_dir(args.cache)?;
    let old = Lock::read(&recipe.lock_path())?;
    let (_, lock) = sources::fetch_all(
        &recipe,
        old.as_ref(),
        Policy::Relock,
        &cache,
        &Events::new(false),
    )
    .with_context(|| format!("cannot resolve the inputs of {}", args.recipe.display()))?;
    lock.write(&recipe.lock_path())?;
    let changed = lock
        .inputs
        .iter()
        .filter(|(name, entry)| old.as_ref().and_then(|o| o.inputs.get(*name)) != Some(entry))
        .count();
    println!(
        "{}: {} inputs, {changed} changed",
        recipe.lock_path().display(),
        lock.inputs.len()
    );
    Ok(())
}

/// Runs `slipway diff`.
pub fn run_diff(args: DiffArgs) -> anyhow::Result<()> {
    let old = Manifest::read(&args.old)?;
    let new = Manifest::read(&args.new)?;
    let changes = diff::diff(&old, &new);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    } else {
        print!("{}", changes.render(&old, &new));
    }
    Ok(())
}
