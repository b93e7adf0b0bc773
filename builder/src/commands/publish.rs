//! `slipway keygen`, `sign`, `verify`, `push` and `pull`: signed node images in an OCI layout
//! (the embedded default) or a registry.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use images::oci::channel::{Consumer, Expect, Release};
use images::oci::signature::{self, Trust};
use images::oci::transfer::{self, LocalImage, Signing};
use images::oci::{self, Reference, RepositoryName};
use images::sign::{PrivateKey, PublicKey};

use crate::progress;

pub use crate::secret::Passphrase;

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
    /// The repository the image will be pushed to (HOST[:PORT]/REPO, or oci:PATH for a
    /// layout, by its real path): the signature names it, and a push without the key to that
    /// repository publishes it. Without it, the signature is for `slipway verify` only.
    #[arg(long, value_name = "REPO")]
    repository: Option<RepositoryName>,
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
    /// Sign the pushed artifact with this private key (cosign's signature layout). Without
    /// it, the signature made before the push (NAME-VERSION.sig.json, by `slipway sign
    /// --repository` or `build --key --repository`) is published, once checked to name this
    /// image and REF's repository.
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
    /// The repository signatures (and channel indexes) name, when it is not REF's own: a
    /// mirror, or a layout moved from the path it was signed for.
    #[arg(long, value_name = "REPO")]
    signed_for: Option<RepositoryName>,
    /// Take only an image with this name from the channel.
    #[arg(long, requires = "channel")]
    name: Option<String>,
    /// Take only an image for this operating system (linux, windows) from the channel.
    #[arg(long, requires = "channel")]
    os: Option<String>,
    /// Take only an image for this architecture (x86_64) from the channel.
    #[arg(long, requires = "channel")]
    arch: Option<String>,
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
    /// A public key the channel's current index may be signed by besides KEY: the retired
    /// release key, when the channel moves to a new one (its version continues).
    #[arg(long, value_name = "PUB")]
    previous_key: Vec<PathBuf>,
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
    let previous_keys = read_public_keys(&args.previous_key)?;
    let mut repo = oci::open(&args.reference, false, args.plain_http)?;
    let release = Release {
        key: &key,
        previous_keys: &previous_keys,
        now: now(),
        valid_for: args.valid_for,
    };
    let promoted = oci::channel::promote(repo.as_mut(), &args.reference, &args.channel, &release)
        .with_context(|| {
        format!(
            "cannot promote {} to channel {}",
            args.reference, args.channel
        )
    })?;
    let index = &promoted.index;
    println!(
        "channel {} version {} -> {} {} {}/{} ({}), expires at {}",
        index.channel,
        index.version,
        index.image.name,
        index.image.version,
        index.image.os,
        index.image.arch,
        index.image.digest,
        index.expires
    );
    if let Some(previous) = &promoted.rotated_from {
        println!(
            "release key rotated: version {} was signed by key {previous}, this one by key {}; \
             hosts need the new public key",
            index.version.saturating_sub(1),
            key.public().key_id()
        );
    }
    Ok(())
}

/// Reads PEM public keys.
fn read_public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    Ok(paths
        .iter()
        .map(|k| PublicKey::read(k))
        .collect::<Result<Vec<_>, _>>()?)
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
    let path = signature::sign_local(&image, &key, args.repository.as_ref())?;
    println!("{}", path.display());
    Ok(())
}

/// Runs `slipway verify`.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let key = PublicKey::read(&args.key)?;
    let image = LocalImage::open(&args.image)?;
    let payload = signature::verify_local(&image, &key)
        .with_context(|| format!("{} does not verify", args.image.display()))?;
    println!(
        "{}: verified: artifact {}, VHDX sha256:{}, key {}, for repository {}",
        image.manifest_path.display(),
        payload.critical.image.docker_manifest_digest,
        image.manifest.disk.sha256,
        key.key_id(),
        payload.critical.identity.docker_reference
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
    let local = match key {
        Some(_) => None,
        None => signature::read_local(&image)?,
    };
    let signing = match (&key, &local) {
        (Some(key), _) => Signing::Key(key),
        (None, Some(local)) => Signing::Local(local),
        (None, None) => Signing::Unsigned,
    };
    if let Signing::Local(local) = signing {
        // Checked before the push creates a layout (the push checks again, once it exists).
        let repository: RepositoryName = args
            .reference
            .repository_name()
            .parse()
            .map_err(anyhow::Error::msg)?;
        local.check_for(&image, &repository).with_context(|| {
            format!("cannot push {} to {}", args.image.display(), args.reference)
        })?;
    }
    let mut repo = oci::open(&args.reference, true, args.plain_http)?;
    let bar = progress::bytes(image.vhdx_size, "push");
    let pushed = transfer::push(&image, repo.as_mut(), &args.reference, signing, &mut |n| {
        bar.set_position(n)
    })
    .with_context(|| format!("cannot push {} to {}", args.image.display(), args.reference))?;
    bar.finish_and_clear();
    match signing {
        Signing::Key(key) => {
            println!("{}@{} (signed)", args.reference, pushed.digest);
            println!("  signed by  {}", key.public().key_id());
        }
        Signing::Local(local) => {
            println!("{}@{} (signed)", args.reference, pushed.digest);
            println!(
                "  signed by  {} (the signature made before the push)",
                local.key_id
            );
        }
        Signing::Unsigned => {
            println!("{}@{}", args.reference, pushed.digest);
            eprintln!(
                "warning: {} is pushed unsigned: every host refuses it until it is signed \
                 (push it again with --key, or sign it with --repository first)",
                args.reference
            );
        }
    }
    Ok(())
}

/// Runs `slipway pull`.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let keys = read_public_keys(&args.key)?;
    let trust = Trust {
        keys: &keys,
        signed_for: args.signed_for.as_ref(),
    };
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
            let expect = Expect {
                name: args.name.clone(),
                os: args.os.clone(),
                arch: args.arch.clone(),
            };
            let consumer = Consumer {
                trust,
                expect: &expect,
                now: now(),
            };
            let (index, pulled) = oci::channel::pull(
                repo.as_mut(),
                &args.reference,
                channel,
                &consumer,
                &state,
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
            trust,
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
