//! Channels: a consumer follows a signed release index and refuses rollback, freeze, unknown
//! keys, indexes copied from another repository and images the index does not name; a channel
//! moves to a new release key without its version starting again. Over the local OCI layout
//! (the same code serves registries: a channel index is one more signed artifact in the
//! repository).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use images::oci::artifact::{IMAGE_MANIFEST, ImageManifest, digest_of, signature_tag};
use images::oci::channel::{self, ChannelError, Consumer, Expect, Release};
use images::oci::layout::Layout;
use images::oci::signature::{self, Trust};
use images::oci::transfer::{self, LocalImage, Signing};
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
        World::signed_by(PrivateKey::generate().unwrap())
    }

    /// As [`World::new`], the images signed by `signer`.
    fn signed_by(signer: PrivateKey) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let world = World { dir, store, signer };
        for (version, seed) in [("1.0.0", 1), ("2.0.0", 2)] {
            world.push(version, seed, &world.signer);
        }
        world
    }

    /// Makes image `version` and pushes it, signed by `key`.
    fn push(&self, version: &str, seed: u64, key: &PrivateKey) {
        let image = LocalImage::open(&tests::image::make(
            self.dir.path(),
            "node",
            version,
            2,
            seed,
        ))
        .unwrap();
        let mut layout = Layout::open(&self.store, true).unwrap();
        let reference = self_ref(&self.store, version);
        transfer::push(
            &image,
            &mut layout,
            &reference,
            Signing::Key(key),
            &mut |_| {},
        )
        .unwrap();
    }

    /// A copy of the signing key (for a second repository signed by the same key).
    fn same_key(&self) -> PrivateKey {
        let path = self.dir.path().join("release.key");
        self.signer.write(&path, None).unwrap();
        PrivateKey::read(&path, None).unwrap()
    }

    fn promote(&self, version: &str, key: &PrivateKey, now: u64, valid_for: u64) -> channel::Index {
        let release = Release {
            key,
            previous_keys: &[],
            now,
            valid_for,
        };
        self.promote_with(version, &release).unwrap().index
    }

    fn promote_with(
        &self,
        version: &str,
        release: &Release<'_>,
    ) -> Result<channel::Promoted, ChannelError> {
        channel::promote(
            &mut self.layout(),
            &self_ref(&self.store, version),
            "stable",
            release,
        )
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
        self.pull_expecting(keys, &Expect::default(), now, repo)
    }

    /// As [`World::pull`], for a consumer that takes only what `expect` says.
    fn pull_expecting(
        &self,
        keys: &[PublicKey],
        expect: &Expect,
        now: u64,
        repo: &mut dyn Repository,
    ) -> (
        Result<(channel::Index, transfer::Pulled), ChannelError>,
        PathBuf,
    ) {
        let out = tempfile::tempdir_in(self.dir.path()).unwrap().keep();
        let state = self.dir.path().join("seen.json");
        let consumer = Consumer {
            trust: Trust::keys(keys),
            expect,
            now,
        };
        let result = channel::pull(
            repo,
            &self_ref(&self.store, "x"),
            "stable",
            &consumer,
            &state,
            &out,
            &mut |_| {},
        );
        (result, out)
    }

    fn layout(&self) -> Layout {
        Layout::open(&self.store, false).unwrap()
    }

    /// The current index of channel stable, as JSON.
    fn index_json(&self) -> serde_json::Value {
        let mut layout = self.layout();
        let manifest = layout.get_manifest("channel-stable").unwrap().unwrap();
        let manifest: ImageManifest = serde_json::from_slice(&manifest).unwrap();
        let mut bytes = Vec::new();
        layout
            .get_blob(&manifest.config.digest, manifest.config.size, &mut bytes)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Writes `index` (any JSON) as channel stable's index, signed by `key` for this
    /// repository, as a signer who made a mistake (or an older slipway) would.
    fn write_index(&self, index: &serde_json::Value, key: &PrivateKey) {
        let mut layout = self.layout();
        let config = serde_json::to_vec(index).unwrap();
        let mut manifest: ImageManifest =
            serde_json::from_slice(&layout.get_manifest("channel-stable").unwrap().unwrap())
                .unwrap();
        manifest.config.digest = digest_of(&config);
        manifest.config.size = config.len() as u64;
        layout.put_bytes(&manifest.config, &config).unwrap();
        let digest = layout
            .put_manifest("channel-stable", &manifest.to_bytes(), IMAGE_MANIFEST, None)
            .unwrap();
        signature::sign(
            &mut layout,
            &self_ref(&self.store, "channel-stable"),
            &digest,
            key,
        )
        .unwrap();
    }
}

/// A consumer that takes any image.
fn consumer(keys: &[PublicKey], now: u64) -> Consumer<'_> {
    static ANY: Expect = Expect {
        name: None,
        os: None,
        arch: None,
    };
    Consumer {
        trust: Trust::keys(keys),
        expect: &ANY,
        now,
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
        matches!(&err, ChannelError::RefuseUntrustedKey { version: Some(1), key_ids, .. }
            if *key_ids == [intruder.public().key_id()]),
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
            &consumer(&keys, NOW),
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
            &consumer(&keys, NOW),
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
                &consumer(&keys, NOW + DAY),
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
            &consumer(&keys, NOW + DAY),
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

#[test]
fn a_pull_the_store_cannot_keep_leaves_the_channel_state_as_it_was() {
    use images::store::Store;
    let world = World::new();
    let keys = [world.signer.public()];
    let host = world.dir.path().join("host");
    let store = Store::open(&host).unwrap();
    let reference = self_ref(&world.store, "x");
    let pull = |now| {
        store.pull_channel(
            &mut world.layout(),
            &reference,
            "stable",
            &consumer(&keys, now),
            &mut |_| {},
        )
    };
    world.promote("1.0.0", &world.signer, NOW, 30 * DAY);
    pull(NOW).unwrap();
    let state = host.join("channels.json");
    let before = std::fs::read_to_string(&state).unwrap();

    // A file where version 2's entry goes: the image arrives but cannot be admitted.
    let v2 = world.promote("2.0.0", &world.signer, NOW + DAY, 30 * DAY);
    let entry = host.join("images").join(v2.image.digest.replace(':', "-"));
    std::fs::write(&entry, "in the way").unwrap();
    let err = pull(NOW + DAY).unwrap_err();
    assert!(err.to_string().contains("cannot publish"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        before,
        "a pull whose image the store did not keep advanced the channel state"
    );

    std::fs::remove_file(&entry).unwrap();
    assert_eq!(pull(NOW + DAY).unwrap().digest, v2.image.digest);
    assert_ne!(std::fs::read_to_string(&state).unwrap(), before);
}

/// Copies tag `tag` (manifest and blobs) from one layout to another with skopeo, as someone with
/// write access to both repositories (and no release key) would.
fn skopeo_copy(from: &Path, to: &Path, tag: &str) {
    tests::run(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--preserve-digests"])
            .arg(format!("oci:{}:{tag}", from.display()))
            .arg(format!("oci:{}:{tag}", to.display())),
    );
}

#[test]
fn a_channel_index_copied_from_staging_into_production_is_refused() {
    // Staging and production: two repositories, one release key.
    let staging = World::new();
    let prod = World::signed_by(staging.same_key());
    let keys = [staging.signer.public()];
    prod.promote("1.0.0", &prod.signer, NOW, 30 * DAY);
    let (result, _) = prod.pull(&keys, NOW, &mut prod.layout());
    assert_eq!(result.unwrap().0.version, 1);

    // Staging runs ahead (2.0.0, versions 1 to 3); its channel-stable tag (index and signature)
    // is copied into production.
    staging.promote("1.0.0", &staging.signer, NOW, 30 * DAY);
    staging.promote("2.0.0", &staging.signer, NOW, 30 * DAY);
    let replayed = staging.promote("2.0.0", &staging.signer, NOW, 30 * DAY);
    assert_eq!(replayed.version, 3);
    let index = staging
        .layout()
        .get_manifest("channel-stable")
        .unwrap()
        .unwrap();
    for tag in [
        "channel-stable".to_owned(),
        signature_tag(&digest_of(&index)),
    ] {
        skopeo_copy(&staging.store, &prod.store, &tag);
    }
    assert_eq!(
        prod.layout()
            .get_manifest("channel-stable")
            .unwrap()
            .unwrap(),
        index
    );

    let (result, out) = prod.pull(&keys, NOW + 1, &mut prod.layout());
    let err = result.unwrap_err();
    let staging_name = format!(
        "oci:{}",
        std::fs::canonicalize(&staging.store).unwrap().display()
    );
    let prod_name = format!(
        "oci:{}",
        std::fs::canonicalize(&prod.store).unwrap().display()
    );
    assert!(
        matches!(&err, ChannelError::Oci(Error::RefuseRepository { signed_for, expected, .. })
            if *signed_for == staging_name && *expected == prod_name),
        "{err}"
    );
    assert!(
        err.to_string().contains("copied from another repository"),
        "{err}"
    );
    assert_empty(&out);
}

#[test]
fn an_index_naming_another_repository_is_refused() {
    // Signed for this repository, but the index itself names another one.
    let world = World::new();
    world.promote("1.0.0", &world.signer, NOW, DAY);
    let mut index = world.index_json();
    index["repository"] = "registry.example/staging/node".into();
    world.write_index(&index, &world.signer);
    let (result, out) = world.pull(&[world.signer.public()], NOW, &mut world.layout());
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ChannelError::MatchRepository { named, .. }
            if named == "registry.example/staging/node"),
        "{err}"
    );
    assert_empty(&out);
}

#[test]
fn an_index_naming_an_image_its_manifest_contradicts_is_refused() {
    let world = World::new();
    let keys = [world.signer.public()];
    let promoted = world.promote("1.0.0", &world.signer, NOW, DAY);
    assert_eq!(
        (
            promoted.image.name.as_str(),
            promoted.image.os.as_str(),
            promoted.image.arch.as_str()
        ),
        ("node", "linux", "x86_64")
    );
    let original = world.index_json();
    for (field, value) in [
        ("name", "other"),
        ("version", "9.9.9"),
        ("os", "windows"),
        ("arch", "aarch64"),
    ] {
        let mut index = original.clone();
        index["image"][field] = value.into();
        world.write_index(&index, &world.signer);
        // A fresh state each time: these are not rollbacks.
        let _ = std::fs::remove_file(world.dir.path().join("seen.json"));
        let (result, out) = world.pull(&keys, NOW, &mut world.layout());
        let err = result.unwrap_err();
        assert!(
            matches!(&err, ChannelError::MatchManifest { what, named, .. }
                if what == &field && named == value),
            "{field}: {err}"
        );
        // Refused before the VHDX was fetched.
        assert_empty(&out);
    }
}

#[test]
fn a_consumer_takes_only_the_images_it_expects() {
    let world = World::new();
    let keys = [world.signer.public()];
    world.promote("1.0.0", &world.signer, NOW, DAY);
    let linux = |arch: &str| Expect {
        name: None,
        os: Some("linux".into()),
        arch: Some(arch.into()),
    };
    let (result, out) = world.pull_expecting(&keys, &linux("aarch64"), NOW, &mut world.layout());
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ChannelError::RefuseTarget { what: "arch", named, wanted, .. }
            if named == "x86_64" && wanted == "aarch64"),
        "{err}"
    );
    assert_empty(&out);
    let windows = Expect {
        os: Some("windows".into()),
        ..Expect::default()
    };
    let (result, _) = world.pull_expecting(&keys, &windows, NOW, &mut world.layout());
    assert!(matches!(
        result,
        Err(ChannelError::RefuseTarget { what: "os", .. })
    ));
    let named = Expect {
        name: Some("other".into()),
        ..Expect::default()
    };
    let (result, _) = world.pull_expecting(&keys, &named, NOW, &mut world.layout());
    assert!(matches!(
        result,
        Err(ChannelError::RefuseTarget { what: "name", .. })
    ));
    let (result, _) = world.pull_expecting(&keys, &linux("x86_64"), NOW, &mut world.layout());
    assert_eq!(result.unwrap().1.manifest.arch, "x86_64");
}

#[test]
fn a_channel_moves_to_a_new_release_key_and_its_version_continues() {
    let world = World::new();
    let old = world.signer.public();
    let new = PrivateKey::generate().unwrap();
    world.push("3.0.0", 3, &new);
    world.promote("1.0.0", &world.signer, NOW, 30 * DAY);
    world.promote("2.0.0", &world.signer, NOW, 30 * DAY);

    // The new key alone cannot continue the channel: refused, and the index stays as it was.
    let err = world
        .promote_with(
            "3.0.0",
            &Release {
                key: &new,
                previous_keys: &[],
                now: NOW + DAY,
                valid_for: 30 * DAY,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::ContinueVersion { version: Some(2), key_ids, .. }
            if *key_ids == [old.key_id()]),
        "{err}"
    );
    assert!(err.to_string().contains("previous key"), "{err}");
    assert_eq!(world.index_json()["version"], 2);

    // A host that trusts both keys, and one that trusts only the retired key, follow version 2.
    let both = [old.clone(), new.public()];
    let only_old = [old.clone()];
    let pull = |keys: &[PublicKey], state: &str| {
        let out = tempfile::tempdir_in(world.dir.path()).unwrap().keep();
        let consumer = consumer(keys, NOW + DAY);
        let result = channel::pull(
            &mut world.layout(),
            &self_ref(&world.store, "x"),
            "stable",
            &consumer,
            &world.dir.path().join(state),
            &out,
            &mut |_| {},
        );
        (result, out)
    };
    assert_eq!(pull(&both, "both.json").0.unwrap().0.version, 2);
    assert_eq!(pull(&only_old, "old.json").0.unwrap().0.version, 2);

    // Rotation: the new key signs, the retired key is given as a previous key.
    let promoted = world
        .promote_with(
            "3.0.0",
            &Release {
                key: &new,
                previous_keys: std::slice::from_ref(&old),
                now: NOW + DAY,
                valid_for: 30 * DAY,
            },
        )
        .unwrap();
    assert_eq!(promoted.index.version, 3);
    assert_eq!(promoted.rotated_from, Some(old.key_id()));

    let (result, _) = pull(&both, "both.json");
    let (index, pulled) = result.unwrap();
    assert_eq!(
        (index.version, pulled.manifest.version.as_str()),
        (3, "3.0.0")
    );
    assert_eq!(pulled.key_id, new.public().key_id());

    let (result, out) = pull(&only_old, "old.json");
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ChannelError::RefuseUntrustedKey { version: Some(3), key_ids, .. }
            if *key_ids == [new.public().key_id()]),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "channel stable version 3 is signed by a key this host does not trust (key id {})",
            new.public().key_id()
        )) && message.contains("may have rotated its release key: add the new public key"),
        "{message}"
    );
    assert_empty(&out);

    // The next promotion by the new key continues without the previous key.
    let next = world
        .promote_with(
            "3.0.0",
            &Release {
                key: &new,
                previous_keys: &[],
                now: NOW + 2 * DAY,
                valid_for: 30 * DAY,
            },
        )
        .unwrap();
    assert_eq!((next.index.version, next.rotated_from), (4, None));
}

#[test]
fn an_index_of_the_older_format_is_continued_by_promote_but_refused_by_consumers() {
    let world = World::new();
    world.promote("1.0.0", &world.signer, NOW, DAY);
    // What slipway wrote before indexes named their repository, the image's os and arch.
    let mut index = world.index_json();
    index["schema"] = "slipway.channel.v1".into();
    index["version"] = 7.into();
    let fields = index.as_object_mut().unwrap();
    fields.remove("repository");
    let image = fields["image"].as_object_mut().unwrap();
    image.remove("os");
    image.remove("arch");
    world.write_index(&index, &world.signer);

    let (result, out) = world.pull(&[world.signer.public()], NOW, &mut world.layout());
    let err = result.unwrap_err();
    assert!(matches!(err, ChannelError::RefuseSchema { .. }), "{err}");
    assert_empty(&out);

    let v8 = world.promote("2.0.0", &world.signer, NOW, DAY);
    assert_eq!(v8.version, 8);
    let (result, _) = world.pull(&[world.signer.public()], NOW, &mut world.layout());
    assert_eq!(result.unwrap().0.version, 8);
}
