//! `slipway diff`: what changed between two builds, as a monthly release note would say it.

use std::collections::BTreeMap;
use std::fmt::Write;

use images::manifest::{Manifest, WindowsFacts};
use serde::Serialize;

/// One changed item: `None` on a side means absent there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What (package name, component, file path, ...).
    pub item: String,
    /// Before.
    pub old: Option<String>,
    /// After.
    pub new: Option<String>,
}

/// Every difference, by section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Image identity (name, version, os, kubernetes).
    pub image: Vec<Change>,
    /// Kernel and components.
    pub components: Vec<Change>,
    /// Debian packages.
    pub packages: Vec<Change>,
    /// Files the recipe places.
    pub files: Vec<Change>,
    /// Build inputs (digests).
    pub inputs: Vec<Change>,
    /// Registry values the recipe set (Windows images).
    pub registry: Vec<Change>,
    /// Services registered (Windows images).
    pub services: Vec<Change>,
}

fn compare(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<Change> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Change {
            item: k.clone(),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

/// Compares two manifests.
pub fn diff(old: &Manifest, new: &Manifest) -> Diff {
    let identity = |m: &Manifest| -> BTreeMap<String, String> {
        let mut items = vec![
            ("name", m.name.clone()),
            ("version", m.version.clone()),
            ("os", m.os.to_string()),
            ("arch", m.arch.clone()),
            (
                "kubernetes",
                m.kubernetes.clone().unwrap_or_else(|| "none".into()),
            ),
        ];
        if let Some(verity) = &m.disk.verity {
            items.push(("root hash", verity.root_hash.clone()));
        }
        if let Some(windows) = &m.windows {
            items.push((
                "edition",
                format!("{} (index {})", windows.edition, windows.index),
            ));
            items.push(("boot entry", windows.loader.clone()));
        }
        items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };
    let windows = |m: &Manifest, pick: fn(&WindowsFacts) -> &BTreeMap<String, String>| {
        m.windows.as_ref().map(pick).cloned().unwrap_or_default()
    };
    let inputs = |m: &Manifest| -> BTreeMap<String, String> {
        m.inputs
            .iter()
            .map(|i| (i.name.clone(), i.sha256.clone()))
            .collect()
    };
    Diff {
        image: compare(&identity(old), &identity(new)),
        components: compare(&old.components, &new.components),
        packages: compare(&old.packages, &new.packages),
        files: compare(&old.files, &new.files),
        inputs: compare(&inputs(old), &inputs(new)),
        registry: compare(
            &windows(old, |w| &w.registry),
            &windows(new, |w| &w.registry),
        ),
        services: compare(
            &windows(old, |w| &w.services),
            &windows(new, |w| &w.services),
        ),
    }
}

impl Diff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.image.is_empty()
            && self.components.is_empty()
            && self.packages.is_empty()
            && self.files.is_empty()
            && self.inputs.is_empty()
            && self.registry.is_empty()
            && self.services.is_empty()
    }

    /// The release-note text.
    pub fn render(&self, old: &Manifest, new: &Manifest) -> String {
        let mut out = format!(
            "{} {} -> {} {}\n",
            old.name, old.version, new.name, new.version
        );
        if self.is_empty() {
            out.push_str("\nNo changes.\n");
            return out;
        }
        let sections = [
            ("Image", &self.image),
            ("Kernel and components", &self.components),
            ("Packages", &self.packages),
            ("Files", &self.files),
            ("Inputs", &self.inputs),
            ("Registry (Windows)", &self.registry),
            ("Services (Windows)", &self.services),
        ];
        for (title, changes) in sections {
            if changes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for c in changes {
                let line = match (&c.old, &c.new) {
                    (None, Some(n)) => format!("  + {} {n}", c.item),
                    (Some(o), None) => format!("  - {} {o}", c.item),
                    (Some(o), Some(n)) => format!("  ~ {} {o} -> {n}", c.item),
                    (None, None) => continue,
                };
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}
