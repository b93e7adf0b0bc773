//! The identifiers a built disk carries: the GPT disk and partition GUIDs, and the VHDX's
//! FileWriteGuid, DataWriteGuid and disk id.
//!
//! A Hyper-V differencing disk names its parent by the parent's DataWriteGuid. Derived from the
//! image's name and version alone, a rebuild of the same version with other bytes would carry
//! the same identifiers and pass as the parent of children made against the first build. So
//! every identifier here is derived from digests of what is on the disk: the same inputs still
//! give the same identifiers (builds stay reproducible), and a byte changed in any partition
//! gives new ones.

use images::guid::Guid;
use images::vhdx::Identity;

use super::stage::Key;

/// Names what the seed covers and how; changing either changes this, and so every identifier.
const SEED_FORMAT: &str = "slipway.disk-identity.v1";

/// What decides a disk's bytes, apart from the identifiers themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// `NAME-VERSION` of the image.
    pub stem: String,
    /// Guest-visible size in bytes.
    pub disk_size: u64,
    /// VHDX payload block size.
    pub block_size: u32,
    /// Every partition in table order: its GPT name, and a digest of all its bytes.
    pub partitions: Vec<(String, String)>,
}

/// The identifiers of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIds {
    /// The GPT disk GUID.
    pub disk: Guid,
    /// The VHDX identifiers.
    pub vhdx: Identity,
    /// The digest everything is derived from.
    seed: String,
}

impl DiskIds {
    /// The identifiers of a disk holding `content`.
    pub fn of(content: &Content) -> DiskIds {
        let mut key = Key::new(SEED_FORMAT, "disk");
        key.add(&content.stem)
            .add(&content.disk_size.to_string())
            .add(&content.block_size.to_string());
        for (name, digest) in &content.partitions {
            key.add(name).add(digest);
        }
        let seed = key.finish();
        DiskIds {
            disk: Guid::derived("slipway.build.disk-guid", seed.as_bytes()),
            vhdx: Identity::derived(&seed),
            seed,
        }
    }

    /// The unique GUID of the partition named `name`.
    pub fn partition(&self, name: &str) -> Guid {
        Guid::derived(
            &format!("slipway.build.partition {name}"),
            self.seed.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            stem: "tiny-linux-2026.11.0".to_owned(),
            disk_size: 256 << 20,
            block_size: 1 << 20,
            partitions: vec![
                ("ESP".to_owned(), "esp-digest".to_owned()),
                ("slipway-root".to_owned(), "root-digest".to_owned()),
                ("slipway-root-verity".to_owned(), "verity-digest".to_owned()),
            ],
        }
    }

    /// Every identifier of a disk, partitions included.
    fn all(ids: &DiskIds) -> Vec<Guid> {
        let mut out = vec![
            ids.disk,
            ids.vhdx.file_write,
            ids.vhdx.data_write,
            ids.vhdx.disk_id,
        ];
        out.extend(["ESP", "slipway-root", "slipway-root-verity"].map(|name| ids.partition(name)));
        out
    }

    #[test]
    fn the_same_content_gives_the_same_identifiers() {
        assert_eq!(all(&DiskIds::of(&content())), all(&DiskIds::of(&content())));
    }

    #[test]
    fn the_identifiers_of_one_disk_are_distinct() {
        let ids = all(&DiskIds::of(&content()));
        for (i, a) in ids.iter().enumerate() {
            assert!(!a.is_zero());
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn other_content_under_the_same_name_and_version_changes_every_identifier() {
        let base = all(&DiskIds::of(&content()));
        let mut changes = Vec::new();
        for at in 0..3 {
            let mut c = content();
            c.partitions[at].1.push('!');
            changes.push(c);
        }
        let mut c = content();
        c.stem = "tiny-linux-2026.12.0".to_owned();
        changes.push(c);
        let mut c = content();
        c.disk_size += 1 << 20;
        changes.push(c);
        let mut c = content();
        c.block_size *= 2;
        changes.push(c);
        // A digest moved from one partition's name to another's is other content too.
        let mut c = content();
        let esp = std::mem::take(&mut c.partitions[0].1);
        c.partitions[0].1 = std::mem::replace(&mut c.partitions[1].1, esp);
        changes.push(c);
        for changed in changes {
            let ids = all(&DiskIds::of(&changed));
            for (old, new) in base.iter().zip(&ids) {
                assert_ne!(old, new, "{changed:?} kept an identifier");
            }
        }
    }
}
