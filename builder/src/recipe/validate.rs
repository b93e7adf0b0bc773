//! Validation of a parsed recipe: names, references between sections, paths, sizes and modes,
//! each error located at the offending value.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::windows::{
    self, Base, RegEntry, Select, Service, WinContent, WinFile, WinLayer, WinPath,
};
use super::{
    Content, Disk, Error, FORMAT, FileSpec, ImagePath, Kernel, Layer, Os, Recipe, RecipePath, Root,
    Source, SourceKind, locate, raw,
};
use crate::size::parse_size;

/// Default EFI system partition size: room for a UKI with a large initrd.
const DEFAULT_ESP_SIZE: u64 = 64 << 20;
/// Windows images: Hyper-V's default VHDX block size, and the ESP size bcdboot's own layout uses.
const WINDOWS_BLOCK_SIZE: u32 = 32 << 20;
const WINDOWS_ESP_SIZE: u64 = 100 << 20;

/// Checks that a source name is declared (located error otherwise).
type Known<'a> = dyn Fn(&Spanned<String>, &str) -> Result<(), Error> + 'a;

pub(super) struct Validator<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Validator<'_> {
    fn err<T>(&self, span: &Range<usize>, message: impl Into<String>) -> Result<T, Error> {
        Err(Error::Invalid {
            location: locate(self.path, self.text, span.start),
            message: message.into(),
        })
    }

    pub(super) fn recipe(&self, raw: raw::Recipe) -> Result<Recipe, Error> {
        if *raw.format.get_ref() != FORMAT {
            return self.err(
                &raw.format.span(),
                format!(
                    "recipe format {} is not supported: this slipway reads format {FORMAT}",
                    raw.format.get_ref()
                ),
            );
        }
        self.name(&raw.image.name, "image name")?;
        self.name(&raw.image.version, "image version")?;
        let k8s = raw.image.kubernetes.get_ref();
        if k8s != "none" && !is_version(k8s) {
            return self.err(
                &raw.image.kubernetes.span(),
                format!("kubernetes = {k8s:?}: expected a version like \"1.31.2\" or \"none\""),
            );
        }
        let mut sources = BTreeMap::new();
        for (name, source) in raw.sources {
            self.name(&name, "source name")?;
            let span = source.span();
            let kind = self.source(source.into_inner(), &span)?;
            sources.insert(name.into_inner(), Source { span, kind });
        }
        let known = |r: &Spanned<String>, what: &str| -> Result<(), Error> {
            if sources.contains_key(r.get_ref()) {
                Ok(())
            } else {
                let names: Vec<&str> = sources.keys().map(String::as_str).collect();
                self.err(
                    &r.span(),
                    format!(
                        "{what} names source {:?}, which [sources] does not declare (declared: {})",
                        r.get_ref(),
                        names.join(", ")
                    ),
                )
            }
        };
        let os = raw.image.os;
        let (raw_root, raw_kernel) = match (os, raw.root, raw.kernel, raw.windows) {
            (Os::Linux, Some(root), Some(kernel), None) => (root, kernel),
            (Os::Windows, None, None, Some(win)) => {
                let windows = self.windows(win, &known, &sources)?;
                return Ok(Recipe {
                    path: self.path.to_owned(),
                    text: self.text.to_owned(),
                    disk: self.disk(raw.disk, os)?,
                    image: raw.image,
                    sources,
                    root: Root::empty(),
                    kernel: Kernel::empty(),
                    windows: Some(windows),
                });
            }
            (Os::Linux, ..) => {
                return self.err(
                    &raw.image.name.span(),
                    "an os = \"linux\" recipe needs [root] and [kernel], and no [windows]",
                );
            }
            (Os::Windows, ..) => {
                return self.err(
                    &raw.image.name.span(),
                    "an os = \"windows\" recipe needs [windows], and no [root] or [kernel]",
                );
            }
        };
        let mut layers = Vec::new();
        for layer in raw_root.layers {
            let layer = self.layer(layer)?;
            known(&layer.source, "root layer")?;
            layers.push(layer);
        }
        let mut files = Vec::new();
        for file in raw_root.files {
            let span = file.span();
            let file = file.into_inner();
            if let Some(source) = &file.source {
                known(&Spanned::new(span.clone(), source.clone()), "file")?;
            }
            files.push(self.file(file, &span)?);
        }
        for name in [&raw_kernel.source, &raw_kernel.stub] {
            known(name, "kernel")?;
            if !matches!(sources[name.get_ref()].kind, SourceKind::Deb { .. }) {
                return self.err(
                    &name.span(),
                    format!("kernel source {:?} must be a `deb` source", name.get_ref()),
                );
            }
        }
        for layer in &raw_kernel.initrd {
            known(layer, "initrd layer")?;
        }
        for module in &raw_kernel.modules {
            if module.is_empty()
                || !module
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return self.err(
                    &raw_kernel.cmdline.span(),
                    format!("kernel module name {module:?} is not a module name"),
                );
            }
        }
        let cmdline = raw_kernel.cmdline.get_ref();
        if cmdline.contains(['\n', '\0'])
            || cmdline
                .split_whitespace()
                .any(|a| a.starts_with("roothash="))
        {
            return self.err(
                &raw_kernel.cmdline.span(),
                "cmdline must be one line and must not set roothash= (Slipway adds it)",
            );
        }
        Ok(Recipe {
            path: self.path.to_owned(),
            text: self.text.to_owned(),
            image: raw.image,
            sources,
            root: Root {
                filesystem: raw_root.filesystem,
                layers,
                files,
            },
            kernel: Kernel {
                source: raw_kernel.source,
                stub: raw_kernel.stub,
                cmdline: raw_kernel.cmdline.into_inner(),
                modules: raw_kernel.modules,
                initrd: raw_kernel.initrd,
            },
            disk: self.disk(raw.disk, os)?,
            windows: None,
        })
    }

    fn windows(
        &self,
        raw: windows::raw::Windows,
        known: &Known<'_>,
        sources: &BTreeMap<String, Source>,
    ) -> Result<windows::Windows, Error> {
        let base_span = raw.base.span();
        let base = raw.base.into_inner();
        known(&base.source, "[windows] base")?;
        match &sources[base.source.get_ref()].kind {
            SourceKind::Url { .. }
            | SourceKind::Path {
                sha256: Some(_), ..
            } => {}
            _ => {
                return self.err(
                    &base.source.span(),
                    format!(
                        "the base image {:?} must be a `path` or `url` source pinned by \
                         `sha256 = \"...\"`",
                        base.source.get_ref()
                    ),
                );
            }
        }
        let select = match (base.index, base.edition, base.vhdx) {
            (Some(index), None, false) if index > 0 => Select::Index(index),
            (None, Some(edition), false)
                if !edition.is_empty() && !edition.contains(['\n', '\0']) =>
            {
                Select::Edition(edition)
            }
            (None, None, true) => Select::Vhdx,
            _ => {
                return self.err(
                    &base_span,
                    "base needs exactly one of `index = N` (from 1) or `edition = \"NAME\"` \
                     (the image's name in the WIM; `wiminfo FILE` lists them), or \
                     `vhdx = true` for a sysprepped Windows VHDX",
                );
            }
        };
        let file_source = |name: &Spanned<String>, what: &str| -> Result<(), Error> {
            known(name, what)?;
            match &sources[name.get_ref()].kind {
                SourceKind::Url { unpack: false, .. } | SourceKind::Path { unpack: false, .. } => {
                    Ok(())
                }
                _ => self.err(
                    &name.span(),
                    format!(
                        "{what} source {:?} must be a file (`path` or `url`, not unpacked)",
                        name.get_ref()
                    ),
                ),
            }
        };
        let mut layers = Vec::new();
        for layer in raw.layers {
            let layer = layer.into_inner();
            known(&layer.source, "[windows] layer")?;
            match &sources[layer.source.get_ref()].kind {
                SourceKind::Url { unpack: true, .. } | SourceKind::Path { .. } => {}
                _ => {
                    return self.err(
                        &layer.source.span(),
                        "a [windows] layer is a `url` or `path` source with `unpack = true`, or \
                         a directory beside the recipe",
                    );
                }
            }
            let into = WinPath::new(layer.into.get_ref())
                .or_else(|why| self.err(&layer.into.span(), why))?;
            layers.push(WinLayer {
                source: layer.source,
                into,
                private: layer.private,
            });
        }
        let mut files = Vec::new();
        for file in raw.files {
            let span = file.span();
            let file = file.into_inner();
            let path = WinPath::new(file.path.get_ref())
                .or_else(|why| self.err(&file.path.span(), why))?;
            let content = match (file.source, file.text, file.dir) {
                (Some(source), None, None) => {
                    file_source(&source, "file")?;
                    WinContent::Source(source.into_inner())
                }
                (None, Some(text), None) => WinContent::Text(text),
                (None, None, Some(true)) => WinContent::Dir,
                _ => {
                    return self.err(
                        &span,
                        "a file needs exactly one of `source`, `text` or `dir = true`",
                    );
                }
            };
            files.push(WinFile {
                span,
                path,
                content,
                private: file.private,
            });
        }
        file_source(&raw.firstboot, "firstboot")?;
        if let Some(unattend) = &raw.unattend {
            file_source(unattend, "unattend")?;
        }
        let placed_by_build = [
            windows::FIRSTBOOT_PATH,
            windows::UNATTEND_PATH,
            windows::IMAGE_JSON_PATH,
        ];
        for file in &files {
            if placed_by_build
                .iter()
                .any(|p| WinPath::new(p).is_ok_and(|p| p.folded() == file.path.folded()))
            {
                return self.err(
                    &file.span,
                    format!(
                        "{} is placed by the build itself (firstboot, unattend, image.json)",
                        file.path
                    ),
                );
            }
        }
        if let Some(twice) = windows::duplicate_path(&files) {
            return self.err(&twice.span, format!("{} is placed twice", twice.path));
        }
        let mut registry = Vec::new();
        for entry in raw.registry {
            let span = entry.span();
            let entry = entry.into_inner();
            let key = windows::registry_key(entry.key.get_ref())
                .or_else(|why| self.err(&entry.key.span(), why))?;
            if !entry.name.is_empty() {
                windows::registry_name(&entry.name).or_else(|why| self.err(&span, why))?;
            }
            let data = windows::reg_data(entry.kind.get_ref(), entry.value.get_ref())
                .or_else(|why| self.err(&entry.value.span(), why))?;
            registry.push(RegEntry {
                span,
                hive: entry.hive,
                key,
                name: entry.name,
                data,
            });
        }
        let mut services = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for service in raw.services {
            let span = service.span();
            let service = service.into_inner();
            let name = service.name.get_ref();
            windows::registry_name(name).or_else(|why| self.err(&service.name.span(), why))?;
            if name.contains(['/', ' ']) || !names.insert(name.to_ascii_uppercase()) {
                return self.err(
                    &service.name.span(),
                    format!("service name {name:?} is repeated or holds '/' or a space"),
                );
            }
            let program = WinPath::new(service.path.get_ref())
                .or_else(|why| self.err(&service.path.span(), why))?;
            if let Some(bad) = service
                .args
                .iter()
                .find(|a| a.is_empty() || a.contains(['"', '\n', '\r', '\0']))
            {
                return self.err(
                    &span,
                    format!("service argument {bad:?} is empty or holds a quote or a line break"),
                );
            }
            for dep in &service.depends_on {
                windows::registry_name(dep).or_else(|why| self.err(&span, why))?;
            }
            services.push(Service {
                span,
                name: name.clone(),
                display_name: service.display_name.unwrap_or_else(|| name.clone()),
                program,
                args: service.args,
                start: service.start,
                description: service.description,
                depends_on: service.depends_on,
            });
        }
        Ok(windows::Windows {
            base: Base {
                source: base.source,
                select,
            },
            layers,
            files,
            registry,
            services,
            unattend: raw.unattend,
            firstboot: raw.firstboot,
        })
    }

    fn layer(&self, layer: Spanned<toml::Value>) -> Result<Layer, Error> {
        let span = layer.span();
        let expected = "a layer is a source name or { source = \"NAME\", into = \"/PATH\" }";
        match layer.into_inner() {
            toml::Value::String(name) => Ok(Layer {
                source: Spanned::new(span, name),
                into: None,
            }),
            toml::Value::Table(table) => {
                if let Some(key) = table.keys().find(|k| *k != "source" && *k != "into") {
                    return self.err(&span, format!("unknown key `{key}` in a layer: {expected}"));
                }
                let (Some(toml::Value::String(source)), Some(toml::Value::String(into))) =
                    (table.get("source"), table.get("into"))
                else {
                    return self.err(&span, expected);
                };
                let into = ImagePath::new(into).or_else(|why| self.err(&span, why))?;
                Ok(Layer {
                    source: Spanned::new(span, source.clone()),
                    into: Some(into),
                })
            }
            _ => self.err(&span, expected),
        }
    }

    fn name(&self, name: &Spanned<String>, what: &str) -> Result<(), Error> {
        let n = name.get_ref();
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && n.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            });
        if ok {
            Ok(())
        } else {
            self.err(
                &name.span(),
                format!(
                    "{what} {n:?} is not allowed: use 1 to 64 lowercase letters, digits, '-', '.' \
                     or '_', starting with a letter or digit"
                ),
            )
        }
    }

    fn source(&self, s: raw::Source, span: &Range<usize>) -> Result<SourceKind, Error> {
        let kinds = [
            s.deb.is_some(),
            s.debian.is_some(),
            s.path.is_some(),
            s.url.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return self.err(
                span,
                "a source needs exactly one of `deb`, `debian`, `path` or `url`",
            );
        }
        let only = |allowed: &[&str]| -> Result<(), Error> {
            let present = [
                ("follow", s.follow.is_some()),
                ("variant", s.variant.is_some()),
                ("packages", s.packages.is_some()),
                ("sha256", s.sha256.is_some()),
                ("unpack", s.unpack.is_some()),
                ("size", s.size.is_some()),
            ];
            for (key, is) in present {
                if is && !allowed.contains(&key) {
                    return self.err(
                        span,
                        format!("key `{key}` does not apply to this kind of source"),
                    );
                }
            }
            Ok(())
        };
        if let Some(package) = s.deb {
            only(&["follow"])?;
            if !is_package(&package) {
                return self.err(span, format!("{package:?} is not a Debian package name"));
            }
            return Ok(SourceKind::Deb {
                package,
                follow: s.follow,
            });
        }
        if let Some(suite) = s.debian {
            only(&["variant", "packages"])?;
            let packages = s.packages.unwrap_or_default();
            if !is_package(&suite) {
                return self.err(span, format!("{suite:?} is not a Debian suite name"));
            }
            if let Some(bad) = packages.iter().find(|p| !is_package(p)) {
                return self.err(span, format!("{bad:?} is not a Debian package name"));
            }
            let variant = s.variant.unwrap_or_else(|| "minbase".to_owned());
            if ![
                "extract",
                "custom",
                "essential",
                "apt",
                "required",
                "minbase",
                "buildd",
                "important",
                "debootstrap",
                "standard",
            ]
            .contains(&variant.as_str())
            {
                return self.err(span, format!("{variant:?} is not an mmdebstrap variant"));
            }
            return Ok(SourceKind::Debian {
                suite,
                variant,
                packages,
            });
        }
        if let Some(path) = s.path {
            only(&["unpack", "sha256"])?;
            let path = RecipePath::new(&path).or_else(|why| self.err(span, why))?;
            let sha256 = match s.sha256 {
                Some(sha256) => Some(self.sha256(&sha256)?),
                None => None,
            };
            return Ok(SourceKind::Path {
                path,
                unpack: s.unpack.unwrap_or(false),
                sha256,
            });
        }
        let url = s.url.unwrap_or_default();
        only(&["sha256", "unpack", "size"])?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return self.err(
                span,
                format!("url {url:?} must start with https:// or http://"),
            );
        }
        let Some(sha256) = s.sha256 else {
            return self.err(
                span,
                format!(
                    "url source {url:?} needs `sha256 = \"<64 hex digits>\"`: downloads are pinned"
                ),
            );
        };
        let digest = self.sha256(&sha256)?;
        let size = match &s.size {
            None => None,
            Some(text) => match parse_size(text.get_ref()) {
                Ok(n) if n > 0 => Some(n),
                Ok(_) => return self.err(&text.span(), "size must be more than zero"),
                Err(why) => return self.err(&text.span(), why),
            },
        };
        Ok(SourceKind::Url {
            url,
            sha256: digest,
            unpack: s.unpack.unwrap_or(false),
            size,
        })
    }

    /// A pinned digest: 64 lowercase hex digits.
    pub(super) fn sha256(&self, sha256: &Spanned<String>) -> Result<String, Error> {
        let digest = sha256.get_ref();
        if digest.len() != 64
            || !digest
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return self.err(
                &sha256.span(),
                format!("sha256 {digest:?} is not a sha256: expected 64 lowercase hex digits"),
            );
        }
        Ok(digest.clone())
    }

    fn file(&self, f: raw::File, span: &Range<usize>) -> Result<FileSpec, Error> {
        let path = ImagePath::new(f.path.get_ref()).or_else(|why| self.err(&f.path.span(), why))?;
        let contents = [
            f.source.is_some(),
            f.text.is_some(),
            f.symlink.is_some(),
            f.dir == Some(true),
        ];
        if contents.iter().filter(|c| **c).count() != 1 {
            return self.err(
                span,
                "a file needs exactly one of `source`, `text`, `symlink` or `dir = true`",
            );
        }
        let content = if let Some(s) = f.source {
            Content::Source(s)
        } else if let Some(t) = f.text {
            Content::Text(t)
        } else if let Some(target) = f.symlink {
            if target.is_empty() || target.contains('\0') {
                return self.err(span, "symlink target must be a non-empty path");
            }
            Content::Symlink(target)
        } else {
            Content::Dir
        };
        let default_mode = if content == Content::Dir {
            0o755
        } else {
            0o644
        };
        let mode = match &f.mode {
            None => default_mode,
            Some(m) => match u32::from_str_radix(m.get_ref(), 8) {
                Ok(v) if v <= 0o7777 && !m.get_ref().is_empty() => v,
                _ => {
                    return self.err(
                        &m.span(),
                        format!(
                            "mode {:?} is not a mode: expected octal digits like \"0755\"",
                            m.get_ref()
                        ),
                    );
                }
            },
        };
        let (uid, gid) = match &f.owner {
            None => (0, 0),
            Some(o) => match parse_owner(o.get_ref()) {
                Some(ids) => ids,
                None => {
                    return self.err(
                        &o.span(),
                        format!(
                            "owner {:?} is not an owner: expected \"root\" or \"UID:GID\" (numbers)",
                            o.get_ref()
                        ),
                    );
                }
            },
        };
        Ok(FileSpec {
            path,
            content,
            mode,
            uid,
            gid,
        })
    }

    fn disk(&self, d: raw::Disk, os: Os) -> Result<Disk, Error> {
        let (default_block, default_esp) = match os {
            Os::Linux => (images::vhdx::writer::DEFAULT_BLOCK_SIZE, DEFAULT_ESP_SIZE),
            Os::Windows => (WINDOWS_BLOCK_SIZE, WINDOWS_ESP_SIZE),
        };
        let size = |s: &Spanned<String>| -> Result<Spanned<u64>, Error> {
            match parse_size(s.get_ref()) {
                Ok(v) if v % 512 == 0 && v > 0 => Ok(Spanned::new(s.span(), v)),
                Ok(_) => self.err(
                    &s.span(),
                    format!(
                        "size {:?} must be a non-zero multiple of 512 bytes",
                        s.get_ref()
                    ),
                ),
                Err(why) => self.err(&s.span(), why),
            }
        };
        let block_size = match &d.block_size {
            None => default_block,
            Some(b) => match parse_size(b.get_ref()) {
                Ok(v) if v.is_power_of_two() && (1 << 20..=256 << 20).contains(&v) => {
                    u32::try_from(v).unwrap_or(images::vhdx::writer::DEFAULT_BLOCK_SIZE)
                }
                _ => {
                    return self.err(
                        &b.span(),
                        format!(
                            "block-size {:?}: expected a power of two from 1M to 256M",
                            b.get_ref()
                        ),
                    );
                }
            },
        };
        Ok(Disk {
            size: size(&d.size)?,
            esp_size: match &d.esp_size {
                Some(s) => size(s)?,
                None => Spanned::new(d.size.span(), default_esp),
            },
            block_size,
        })
    }
}

fn parse_owner(text: &str) -> Option<(u32, u32)> {
    if text == "root" {
        return Some((0, 0));
    }
    let (u, g) = text.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// Debian package and suite names: lowercase letters, digits, `+ - .`, starting alphanumeric.
fn is_package(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

fn is_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}
