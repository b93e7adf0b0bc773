//! `slipway keygen`, `sign`, `verify`, `push` and `pull`: signed node images in an OCI layout
//! (the embedded default) or a registry.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use images::oci::transfer::{self, LocalImage};
use images::oci::{self, Reference};
use images::sign::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::progress;

/// Where a private key's passphrase comes from.
#[derive(Debug, Args)]
pub struct Passphrase {
    /// Read the key's passphrase from this file (first line).
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_env")]
    passphrase_file: Option<PathBuf>,
    /// Read the key's passphrase from this environment variable.
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
}

impl Passphrase {
    fn get(&self) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        if let Some(path) = &self.passphrase_file {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the passphrase file {}", path.display())
                })?);
            let line = text.lines().next().unwrap_or("");
            return Ok(Some(Zeroizing::new(line.as_bytes().to_vec())));
        }
        if let Some(var) = &self.passphrase_env {
            let value = std::env::var(var).with_context(|| {
                format!("the environment variable {var} (the key's passphrase) is not set")
            })?;
            return Ok(Some(Zeroizing::new(value.into_bytes())));
        }
        Ok(None)
    }

    /// Reads the private key at `path` with this passphrase.
    pub fn read_key(&self, path: &Path) -> anyhow::Result<PrivateKey> {
        let passphrase = self.get()?;
        Ok(PrivateKey::read(
            path,
            passphrase.as_ref().map(|p| p.as_slice()),
        )?)
    }
}

/// Arguments of `slipway keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (mode 0600); the public key goes to PATH.pub.
    path: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
}

/// Arguments of `slipway sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The image: NAME-VERSION.manifest.json or its .vhdx.
    image: PathBuf,
    /// The private key.
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
}

/// Arguments of `slipway verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image: NAME-VERSION.manifest.json or its .vhdx.
    image: PathBuf,
    /// The public key (PEM).
    #[arg(long)]
    key: PathBuf,
}

/// Arguments of `slipway push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image: NAME-VERSION.manifest.json or its .vhdx.
    image: PathBuf,
    /// Destination: oci:PATH[:TAG] (a local OCI layout) or HOST[:PORT]/REPO[:TAG].
    reference: Reference,
    /// Sign the pushed artifact with this private key (cosign's signature layout).
    #[arg(long)]
    key: Option<PathBuf>,
    #[command(flatten)]
    passphrase: Passphrase,
    /// Talk to the registry over plain HTTP (only for loopback or lab registries).
    #[arg(long)]
    plain_http: bool,
}

/// Arguments of `slipway pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Source: oci:PATH[:TAG] or HOST[:PORT]/REPO[:TAG].
    reference: Reference,
    /// Directory to place NAME-VERSION.vhdx and .manifest.json in.
    dir: PathBuf,
    /// Trusted public key(s); the image must be signed by one of them.
    #[arg(long, required = true)]
    key: Vec<PathBuf>,
    /// Talk to the registry over plain HTTP (only for loopback or lab registries).
    #[arg(long)]
    plain_http: bool,
    /// Follow this channel: pull the image its signed index names (REF's tag is ignored).
    #[arg(long)]
    channel: Option<String>,
    /// Where the highest channel index versions seen are kept [default: DIR/channels.json].
    #[arg(long, requires = "channel")]
    state: Option<PathBuf>,
}

/// Arguments of `slipway promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The image to promote: oci:PATH:TAG or HOST[:PORT]/REPO:TAG.
    reference: Reference,
    /// The channel, e.g. stable.
    #[arg(long)]
    channel: String,
    /// The private key that signs the channel index.
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
    /// How long the index is valid: consumers refuse it afterwards (a freeze attack).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    valid_for: u64,
    /// Talk to the registry over plain HTTP (only for loopback or lab registries).
    #[arg(long)]
    plain_http: bool,
}

/// `30d`, `12h`, `90m`, `45s` → seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = text.split_at(
        text.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .len(),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30d, 12h, 90m"))?;
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" | "" => 1,
        _ => return Err(format!("{text:?}: use d, h, m or s")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `slipway promote`.
pub fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    let key = args.passphrase.read_key(&args.key)?;
    let mut repo = oci::open(&args.reference, false, args.plain_http)?;
    let index = oci::channel::promote(
        repo.as_mut(),
        &args.reference,
        &args.channel,
        &key,
        now(),
        args.valid_for,
    )
    .with_context(|| {
        format!(
            "cannot promote {} to channel {}",
            args.reference, args.channel
        )
    })?;
    println!(
        "channel {} version {} -> {} {} ({}), expires at {}",
        index.channel,
        index.version,
        index.image.name,
        index.image.version,
        index.image.digest,
        index.expires
    );
    Ok(())
}

/// Runs `slipway keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    if args.path.exists() {
        anyhow::bail!(
            "{} exists: refusing to overwrite a key",
            args.path.display()
        );
    }
    let passphrase = args.passphrase.get()?;
    let key = PrivateKey::generate()?;
    let public = key.write(&args.path, passphrase.as_ref().map(|p| p.as_slice()))?;
    println!(
        "private key {} (0600{})",
        args.path.display(),
        if passphrase.is_some() {
            ", encrypted"
        } else {
            ""
        }
    );
    println!("public key  {}", public.display());
    println!("key id      {}", key.public().key_id());
    Ok(())
}

/// Runs `slipway sign`.
pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let key = args.passphrase.read_key(&args.key)?;
    let image = LocalImage::open(&args.image)?;
    let path = transfer::sign_local(&image, &key)?;
    println!("{}", path.display());
    Ok(())
}

/// Runs `slipway verify`.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let key = PublicKey::read(&args.key)?;
    let image = LocalImage::open(&args.image)?;
    let digest = transfer::verify_local(&image, &key)
        .with_context(|| format!("{} does not verify", args.image.display()))?;
    println!(
        "{}: verified: artifact {digest}, VHDX sha256:{}, key {}",
        image.manifest_path.display(),
        image.manifest.disk.sha256,
        key.key_id()
    );
    Ok(())
}

/// Runs `slipway push`.
pub fn push(args: PushArgs) -> anyhow::Result<()> {
    let key = args
        .key
        .as_ref()
        .map(|k| args.passphrase.read_key(k))
        .transpose()?;
    let image = LocalImage::open(&args.image)?;
    let mut repo = oci::open(&args.reference, true, args.plain_http)?;
    let bar = progress::bytes(image.vhdx_size, "push");
    let pushed = transfer::push(
        &image,
        repo.as_mut(),
        &args.reference,
        key.as_ref(),
        &mut |n| bar.set_position(n),
    )
    .with_context(|| format!("cannot push {} to {}", args.image.display(), args.reference))?;
    bar.finish_and_clear();
    println!(
        "{}@{}{}",
        args.reference,
        pushed.digest,
        if pushed.signed { " (signed)" } else { "" }
    );
    Ok(())
}

/// Runs `slipway pull`.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let keys = args
        .key
        .iter()
        .map(|k| PublicKey::read(k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut repo = oci::open(&args.reference, false, args.plain_http)?;
    let bar = progress::spinner("pull");
    let mut progress = |n| bar.set_position(n);
    let pulled = match &args.channel {
        Some(channel) => {
            let state = args
                .state
                .clone()
                .unwrap_or_else(|| args.dir.join("channels.json"));
            std::fs::create_dir_all(&args.dir)
                .with_context(|| format!("cannot create {}", args.dir.display()))?;
            let consumer = oci::channel::Consumer {
                keys: &keys,
                state: &state,
                now: now(),
            };
            let (index, pulled) = oci::channel::pull(
                repo.as_mut(),
                &args.reference,
                channel,
                &consumer,
                &args.dir,
                &mut progress,
            )
            .with_context(|| {
                format!(
                    "cannot pull channel {channel} of {}",
                    args.reference.repository_name()
                )
            })?;
            println!(
                "channel {channel} version {} (expires at {})",
                index.version, index.expires
            );
            pulled
        }
        None => transfer::pull(
            repo.as_mut(),
            &args.reference,
            &args.dir,
            &keys,
            &mut progress,
        )
        .with_context(|| format!("cannot pull {}", args.reference))?,
    };
    bar.finish_and_clear();
    println!("{}", pulled.vhdx.display());
    println!("  artifact   {}", pulled.digest);
    println!("  signed by  {}", pulled.key_id);
    Ok(())
}
