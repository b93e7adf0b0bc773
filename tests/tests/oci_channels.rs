//! Channels: a consumer follows a signed release index and refuses rollback, freeze, unknown
//! keys and images the index does not name. Over the local OCI layout (the same code serves
//! registries: a channel index is one more signed artifact in the repository).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use images::oci::artifact::{IMAGE_MANIFEST, digest_of};
use images::oci::channel::{self, ChannelError, Consumer};
use images::oci::layout::Layout;
use images::oci::transfer::{self, LocalImage};
use images::oci::{BlobSink, BlobSource, Error, Reference, Repository};
use images::sign::{PrivateKey, PublicKey};

const NOW: u64 = 1_795_000_000;
const DAY: u64 = 86_400;

struct World {
    dir: tempfile::TempDir,
    store: PathBuf,
    signer: PrivateKey,
}

impl World {
    /// A layout with images 1.0.0 and 2.0.0, both signed.
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let signer = PrivateKey::generate().unwrap();
        let mut layout = Layout::open(&store, true).unwrap();
        for (version, seed) in [("1.0.0", 1), ("2.0.0", 2)] {
            let image = LocalImage::open(&tests::image::make(dir.path(), "node", version, 2, seed))
                .unwrap();
            let reference = self_ref(&store, version);
            transfer::push(&image, &mut layout, &reference, Some(&signer), &mut |_| {}).unwrap();
        }
        World { dir, store, signer }
    }

    fn promote(&self, version: &str, key: &PrivateKey, now: u64, valid_for: u64) -> channel::Index {
        let mut layout = Layout::open(&self.store, false).unwrap();
        channel::promote(
            &mut layout,
            &self_ref(&self.store, version),
            "stable",
            key,
            now,
            valid_for,
        )
        .unwrap()
    }

    /// Pulls channel stable into a fresh directory (state kept in the world).
    fn pull(
        &self,
        keys: &[PublicKey],
        now: u64,
        repo: &mut dyn Repository,
    ) -> (
        Result<(channel::Index, transfer::Pulled), ChannelError>,
        PathBuf,
    ) {
        let out = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
        let state = self.dir.path().join("seen.json");
        let consumer = Consumer {
            keys,
            state: &state,
            now,
        };
        let result = channel::pull(
            repo,
            &self_ref(&self.store, "x"),
            "stable",
            &consumer,
            &out,
            &mut |_| {},
        );
        (result, out)
    }

    fn layout(&self) -> Layout {
        Layout::open(&self.store, false).unwrap()
    }
}

fn self_ref(store: &Path, tag: &str) -> Reference {
    format!("oci:{}:{tag}", store.display()).parse().unwrap()
}

fn assert_empty(dir: &Path) {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(entries.is_empty(), "a refused pull left {entries:?}");
}

#[test]
fn a_consumer_follows_the_channel_and_refuses_a_rollback() {
    let world = World::new();
    let keys = [world.signer.public()];
    let v1 = world.promote("1.0.0", &world.signer, NOW, 30 * DAY);
    assert_eq!((v1.version, v1.image.version.as_str()), (1, "1.0.0"));
    // Keep the version-1 index manifest, as an attacker (or a stale mirror) would.
    let mut layout = world.layout();
    let old_index = layout.get_manifest("channel-stable").unwrap().unwrap();

    let (result, out) = world.pull(&keys, NOW, &mut world.layout());
    let (index, pulled) = result.unwrap();
    assert_eq!(index.version, 1);
    assert!(pulled.vhdx.ends_with("node-1.0.0.vhdx") && pulled.vhdx.starts_with(&out));

    let v2 = world.promote("2.0.0", &world.signer, NOW + DAY, 30 * DAY);
    assert_eq!(v2.version, 2);
    let (result, _) = world.pull(&keys, NOW + DAY, &mut world.layout());
    assert_eq!(result.unwrap().0.image.version, "2.0.0");

    // Replay the older, validly signed index under the channel's tag.
    layout
        .put_manifest("channel-stable", &old_index, IMAGE_MANIFEST, None)
        .unwrap();
    let (result, out) = world.pull(&keys, NOW + 2 * DAY, &mut world.layout());
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::RefuseRollback {
                found: 1,
                seen: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_empty(&out);
}

#[test]
fn an_expired_index_is_refused() {
    let world = World::new();
    world.promote("1.0.0", &world.signer, NOW, DAY);
    let (result, out) = world.pull(&[world.signer.public()], NOW + 2 * DAY, &mut world.layout());
    let err = result.unwrap_err();
    assert!(matches!(err, ChannelError::RefuseExpired { .. }), "{err}");
    assert!(err.to_string().contains("refusing a stale index"), "{err}");
    assert_empty(&out);
}

#[test]
fn an_index_signed_by_an_unknown_key_is_refused() {
    let world = World::new();
    let intruder = PrivateKey::generate().unwrap();
    world.promote("1.0.0", &intruder, NOW, DAY);
    let (result, out) = world.pull(&[world.signer.public()], NOW, &mut world.layout());
    let err = result.unwrap_err();
    assert!(
        matches!(err, ChannelError::Oci(Error::VerifySignature { .. })),
        "{err}"
    );
    assert_empty(&out);
}

/// A repository that answers a request for one manifest with another (mix-and-match).
struct Swapping {
    inner: Layout,
    asked: String,
    answer: Vec<u8>,
}

impl Repository for Swapping {
    fn has_blob(&mut self, digest: &str) -> Result<bool, Error> {
        self.inner.has_blob(digest)
    }
    fn put_blob(
        &mut self,
        digest: &str,
        size: u64,
        source: BlobSource<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        self.inner.put_blob(digest, size, source, progress)
    }
    fn put_manifest(
        &mut self,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
        artifact_type: Option<&str>,
    ) -> Result<String, Error> {
        self.inner
            .put_manifest(tag, bytes, media_type, artifact_type)
    }
    fn get_manifest(&mut self, tag: &str) -> Result<Option<Vec<u8>>, Error> {
        if tag == self.asked {
            return Ok(Some(self.answer.clone()));
        }
        self.inner.get_manifest(tag)
    }
    fn get_blob(&mut self, digest: &str, size: u64, out: &mut dyn BlobSink) -> Result<(), Error> {
        self.inner.get_blob(digest, size, out)
    }
}

#[test]
fn an_image_the_channel_does_not_name_is_refused() {
    let world = World::new();
    let index = world.promote("1.0.0", &world.signer, NOW, DAY);
    // The server answers the channel's digest with the other image, which is validly signed.
    let other = world.layout().get_manifest("2.0.0").unwrap().unwrap();
    assert_ne!(digest_of(&other), index.image.digest);
    let mut swapping = Swapping {
        inner: world.layout(),
        asked: index.image.digest.clone(),
        answer: other,
    };
    let (result, out) = world.pull(&[world.signer.public()], NOW, &mut swapping);
    let err = result.unwrap_err();
    assert!(
        matches!(err, ChannelError::Oci(Error::VerifyBlob { .. })),
        "{err}"
    );
    assert_empty(&out);
}

#[test]
fn the_host_store_keeps_pulled_images_and_collects_the_unused() {
    use std::collections::BTreeSet;

    use images::store::Store;
    let world = World::new();
    let keys = [world.signer.public()];
    let store = Store::open(&world.dir.path().join("host")).unwrap();
    let reference = self_ref(&world.store, "x");

    let v1 = world.promote("1.0.0", &world.signer, NOW, 30 * DAY);
    let first = store
        .pull_channel(
            &mut world.layout(),
            &reference,
            "stable",
            &keys,
            NOW,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(first.digest, v1.image.digest);
    assert!(first.vhdx.exists());

    // Held: a second pull needs no blob from the repository.
    let blob = world
        .store
        .join("blobs/sha256")
        .join(&first.manifest.disk.sha256);
    let saved = std::fs::read(&blob).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let again = store
        .pull_channel(
            &mut world.layout(),
            &reference,
            "stable",
            &keys,
            NOW,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(again.vhdx, first.vhdx);
    std::fs::write(&blob, saved).unwrap();

    // A failed pull leaves the store as it was.
    let v2 = world.promote("2.0.0", &world.signer, NOW + DAY, 30 * DAY);
    let image2 = LocalImage::open(&world.dir.path().join("node-2.0.0.manifest.json")).unwrap();
    let blob2 = world
        .store
        .join("blobs/sha256")
        .join(&image2.manifest.disk.sha256);
    let good = std::fs::read(&blob2).unwrap();
    let mut bad = good.clone();
    bad[4096] ^= 0xff;
    std::fs::write(&blob2, &bad).unwrap();
    assert!(
        store
            .pull_channel(
                &mut world.layout(),
                &reference,
                "stable",
                &keys,
                NOW + DAY,
                &mut |_| {}
            )
            .is_err()
    );
    assert_eq!(
        store.images().unwrap(),
        BTreeSet::from([v1.image.digest.clone()])
    );
    std::fs::write(&blob2, &good).unwrap();
    let second = store
        .pull_channel(
            &mut world.layout(),
            &reference,
            "stable",
            &keys,
            NOW + DAY,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(second.digest, v2.image.digest);

    // Only what is still referenced survives a collection.
    let removed = store
        .collect_garbage(&BTreeSet::from([v2.image.digest.clone()]))
        .unwrap();
    assert_eq!(removed, vec![v1.image.digest]);
    assert!(!first.vhdx.exists() && second.vhdx.exists());
}
