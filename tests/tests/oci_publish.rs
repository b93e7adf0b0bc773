//! Publishing node images through `images::oci` against a real registry (docker-registry) and
//! the local OCI layout: round trips, what skopeo sees, refused attacks, and transfers that
//! resume after the registry is killed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use images::oci::artifact::{IMAGE_MANIFEST, ImageManifest, digest_of, signature_tag};
use images::oci::layout::Layout;
use images::oci::registry::Registry as Client;
use images::oci::signature::{self, Trust};
use images::oci::transfer::{self, LocalImage, Signing};
use images::oci::{BlobSource, Error, Reference, Repository, RepositoryName};
use images::sign::PrivateKey;
use tests::registry::Registry;

fn key() -> PrivateKey {
    PrivateKey::generate().unwrap()
}

/// The destination directory holds nothing (not even a partial file).
fn assert_empty(dir: &Path) {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "a refused pull left {entries:?}");
}

#[test]
fn registry_round_trip_agrees_with_skopeo_and_openssl() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = LocalImage::open(&tests::image::make(dir.path(), "node", "1.0.0", 8, 1)).unwrap();
    let reference: Reference = format!("{}/nodes/node:1.0.0", registry.host)
        .parse()
        .unwrap();
    let signer = key();
    let mut client = Client::new(&registry.host, "nodes/node", true);
    let pushed = transfer::push(
        &image,
        &mut client,
        &reference,
        Signing::Key(&signer),
        &mut |_| {},
    )
    .unwrap();

    // skopeo sees our manifest, byte for byte.
    let docker = format!("docker://{}/nodes/node:1.0.0", registry.host);
    let raw = tests::output(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &docker,
    ]));
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(digest_of(&raw.stdout), pushed.digest);
    let seen: ImageManifest = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(seen, image.artifact());

    // skopeo copies the artifact into an OCI layout keeping its digest.
    let copied = dir.path().join("copied");
    tests::run(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", &docker])
            .arg(format!("oci:{}:x", copied.display())),
    );
    let raw = tests::output(
        Command::new("skopeo")
            .arg("inspect")
            .arg("--raw")
            .arg(format!("oci:{}:x", copied.display())),
    );
    assert_eq!(digest_of(&raw.stdout), pushed.digest);

    // The signature sits where cosign puts it, and openssl verifies its payload with our PEM key.
    let sig = Client::new(&registry.host, "nodes/node", true)
        .get_manifest(&signature_tag(&pushed.digest))
        .unwrap()
        .unwrap();
    let sig: ImageManifest = serde_json::from_slice(&sig).unwrap();
    let layer = &sig.layers[0];
    assert_eq!(
        layer.media_type,
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let mut payload = Vec::new();
    client
        .get_blob(&layer.digest, layer.size, &mut payload)
        .unwrap();
    let signature = &layer.annotations["dev.cosignproject.cosign/signature"];
    let der = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        der.stdin
            .as_ref()
            .unwrap()
            .write_all(signature.as_bytes())
            .unwrap();
    }
    let der = der.wait_with_output().unwrap().stdout;
    std::fs::write(dir.path().join("payload"), &payload).unwrap();
    std::fs::write(dir.path().join("sig.der"), der).unwrap();
    std::fs::write(
        dir.path().join("key.pub"),
        signer.public().to_pem().unwrap(),
    )
    .unwrap();
    let check = tests::output(Command::new("openssl").current_dir(dir.path()).args([
        "dgst",
        "-sha256",
        "-verify",
        "key.pub",
        "-signature",
        "sig.der",
        "payload",
    ]));
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "Verified OK");
    assert!(
        String::from_utf8_lossy(&payload)
            .contains(&format!("\"docker-manifest-digest\":\"{}\"", pushed.digest))
    );

    // Pull: the same bytes.
    let out = dir.path().join("pulled");
    let pulled = transfer::pull(
        &mut client,
        &reference,
        &out,
        Trust::keys(&[signer.public()]),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(pulled.digest, pushed.digest);
    assert!(tests::same_content(&pulled.vhdx, &image.vhdx));
    assert_eq!(
        std::fs::read(&pulled.manifest_path).unwrap(),
        image.manifest_bytes
    );
}

#[test]
fn the_local_layout_round_trips_and_skopeo_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let image = LocalImage::open(&tests::image::make(dir.path(), "node", "2.0.0", 4, 2)).unwrap();
    let store = dir.path().join("store");
    let reference: Reference = format!("oci:{}:stable", store.display()).parse().unwrap();
    let signer = key();
    let mut layout = Layout::open(&store, true).unwrap();
    let pushed = transfer::push(
        &image,
        &mut layout,
        &reference,
        Signing::Key(&signer),
        &mut |_| {},
    )
    .unwrap();
    let raw = tests::output(
        Command::new("skopeo")
            .arg("inspect")
            .arg("--raw")
            .arg(format!("oci:{}:stable", store.display())),
    );
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(digest_of(&raw.stdout), pushed.digest);
    let out = dir.path().join("pulled");
    let pulled = transfer::pull(
        &mut layout,
        &reference,
        &out,
        Trust::keys(&[signer.public()]),
        &mut |_| {},
    )
    .unwrap();
    assert!(tests::same_content(&pulled.vhdx, &image.vhdx));
}

/// A signed image in a fresh layout: (dir, layout path, reference, signer, digest).
fn signed_layout() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Reference,
    PrivateKey,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let image = LocalImage::open(&tests::image::make(dir.path(), "node", "3.0.0", 4, 3)).unwrap();
    let store = dir.path().join("store");
    let reference: Reference = format!("oci:{}:stable", store.display()).parse().unwrap();
    let signer = key();
    let pushed = transfer::push(
        &image,
        &mut Layout::open(&store, true).unwrap(),
        &reference,
        Signing::Key(&signer),
        &mut |_| {},
    )
    .unwrap();
    (dir, store, reference, signer, pushed.digest)
}

fn pull_err(
    store: &Path,
    reference: &Reference,
    keys: &[images::sign::PublicKey],
    out: &Path,
) -> Error {
    transfer::pull(
        &mut Layout::open(store, false).unwrap(),
        reference,
        out,
        Trust::keys(keys),
        &mut |_| {},
    )
    .unwrap_err()
}

#[test]
fn a_flipped_byte_in_the_vhdx_blob_is_refused() {
    let (dir, store, reference, signer, _) = signed_layout();
    let image = LocalImage::open(&dir.path().join("node-3.0.0.manifest.json")).unwrap();
    let blob = store.join("blobs/sha256").join(&image.manifest.disk.sha256);
    tests::patch(&blob, 1 << 20, &[!tests::read(&blob, 1 << 20, 1)[0]]);
    let out = dir.path().join("out");
    let err = pull_err(&store, &reference, &[signer.public()], &out);
    assert!(matches!(err, Error::VerifyBlob { .. }), "{err}");
    assert_empty(&out);
}

#[test]
fn a_manifest_edited_after_signing_is_refused() {
    let (dir, store, reference, signer, _) = signed_layout();
    // The attacker changes the node manifest (say, the kernel command line) and re-tags an
    // artifact pointing at it: its digest is not the signed one.
    let image = LocalImage::open(&dir.path().join("node-3.0.0.manifest.json")).unwrap();
    let mut edited = image.manifest.clone();
    edited.boot.cmdline = Some("init=/bin/sh".into());
    let edited_bytes = edited.to_json().into_bytes();
    let mut layout = Layout::open(&store, false).unwrap();
    let mut art = ImageManifest::node_image(&edited, &edited_bytes, image.vhdx_size);
    art.config.digest = digest_of(&edited_bytes);
    layout
        .put_blob(
            &art.config.digest,
            art.config.size,
            BlobSource::Bytes(&edited_bytes),
            &mut |_| {},
        )
        .unwrap();
    layout
        .put_manifest("stable", &art.to_bytes(), IMAGE_MANIFEST, None)
        .unwrap();
    let out = dir.path().join("out");
    let err = pull_err(&store, &reference, &[signer.public()], &out);
    assert!(matches!(err, Error::VerifySignature { .. }), "{err}");
    assert!(err.to_string().contains("no signature is stored"), "{err}");
    assert_empty(&out);
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let (dir, store, reference, _, _) = signed_layout();
    let out = dir.path().join("out");
    let err = pull_err(&store, &reference, &[key().public()], &out);
    assert!(err.to_string().contains("signed by another key"), "{err}");
    assert_empty(&out);
}

#[test]
fn a_signed_manifest_naming_a_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let made = tests::image::make(dir.path(), "node", "4.0.0", 2, 4);
    // A manifest (signed by the trusted key!) whose name would write outside the destination.
    let mut image = LocalImage::open(&made).unwrap();
    image.manifest.name = "../../escaped".into();
    image.manifest.disk.file = "../../escaped-4.0.0.vhdx".into();
    image.manifest_bytes = image.manifest.to_json().into_bytes();
    let store = dir.path().join("store");
    let reference: Reference = format!("oci:{}:stable", store.display()).parse().unwrap();
    let signer = key();
    let mut layout = Layout::open(&store, true).unwrap();
    let art = image.artifact();
    layout
        .put_blob(
            &art.config.digest,
            art.config.size,
            BlobSource::Bytes(&image.manifest_bytes),
            &mut |_| {},
        )
        .unwrap();
    layout
        .put_blob(
            &art.layers[0].digest,
            art.layers[0].size,
            BlobSource::File(&image.vhdx),
            &mut |_| {},
        )
        .unwrap();
    let digest = layout
        .put_manifest("stable", &art.to_bytes(), IMAGE_MANIFEST, None)
        .unwrap();
    signature::sign(&mut layout, &reference, &digest, &signer).unwrap();
    let out = dir.path().join("a/b/out");
    let err = pull_err(&store, &reference, &[signer.public()], &out);
    assert!(matches!(err, Error::MatchManifest(_)), "{err}");
    assert!(
        !dir.path().join("escaped-4.0.0.vhdx").exists()
            && !dir.path().join("a/escaped-4.0.0.vhdx").exists()
    );
    assert_empty(&out);
    // Path-like tags never parse.
    assert!(
        format!("oci:{}:..", store.display())
            .parse::<Reference>()
            .is_err()
    );
    assert!(
        format!("{}/nodes/x:../y", "127.0.0.1:5000")
            .parse::<Reference>()
            .is_err()
    );
}

#[test]
fn transfers_resume_after_the_registry_is_killed() {
    let registry = Arc::new(Mutex::new(Registry::start()));
    let host = registry.lock().unwrap().host.clone();
    let dir = tempfile::tempdir().unwrap();
    let image = LocalImage::open(&tests::image::make(dir.path(), "big", "1.0.0", 96, 5)).unwrap();
    let size = image.vhdx_size;
    let reference: Reference = format!("{host}/nodes/big:1.0.0").parse().unwrap();
    let signer = key();

    // Push: the registry dies as the second chunk starts (the first one committed: docker-registry
    // cancels a session whose file holds part of an unfinished chunk, so a kill in the middle of
    // a chunk costs that session) and comes back a second later.
    let mut client = Client::new(&host, "nodes/big", true);
    let mut killed_at = None;
    let pushed = {
        let registry = Arc::clone(&registry);
        transfer::push(
            &image,
            &mut client,
            &reference,
            Signing::Key(&signer),
            &mut |offset| {
                if killed_at.is_none() && offset > images::oci::registry::CHUNK {
                    killed_at = Some(offset);
                    registry.lock().unwrap().kill();
                    let registry = Arc::clone(&registry);
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(1));
                        registry.lock().unwrap().resume();
                    });
                }
            },
        )
        .unwrap()
    };
    let killed_at = killed_at.expect("the registry was killed mid-push");
    eprintln!(
        "push: {size} bytes, killed at {killed_at}, sent {} in all",
        client.bytes_sent
    );
    assert!(
        client.bytes_sent < size + killed_at,
        "the push started again from zero"
    );
    assert!(client.bytes_sent >= size);

    // Pull: the registry dies once a third has arrived.
    let out = dir.path().join("out");
    let partial = out.join(".big-1.0.0.vhdx.partial");
    let watcher = {
        let registry = Arc::clone(&registry);
        let partial = partial.clone();
        std::thread::spawn(move || {
            loop {
                if std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) > size / 3 {
                    registry.lock().unwrap().kill();
                    std::thread::sleep(Duration::from_secs(1));
                    registry.lock().unwrap().resume();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut puller = Client::new(&host, "nodes/big", true);
    let pulled = transfer::pull(
        &mut puller,
        &reference,
        &out,
        Trust::keys(&[signer.public()]),
        &mut |_| {},
    )
    .unwrap();
    assert!(watcher.join().unwrap());
    eprintln!(
        "pull: {size} bytes, received {} in all",
        puller.bytes_received
    );
    assert!(
        puller.bytes_received < 2 * size - size / 3,
        "the pull started again from zero"
    );
    assert_eq!(pulled.digest, pushed.digest);
    assert!(tests::same_content(&pulled.vhdx, &image.vhdx));
}

/// A hostile registry: serves a signed image's manifests and small blobs from a layout, but
/// answers the VHDX blob with data that never ends.
fn serve_endless_vhdx(store: std::path::PathBuf, vhdx_digest: String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut layout = Layout::open(&store, false).unwrap();
            let body = if let Some(tag) = path.split("/manifests/").nth(1) {
                layout.get_manifest(tag).unwrap()
            } else if let Some(digest) = path.split("/blobs/").nth(1) {
                if digest == vhdx_digest {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n",
                    );
                    let zeros = vec![0u8; 1 << 16];
                    while stream.write_all(&zeros).is_ok() {}
                    continue;
                }
                let hex = digest.trim_start_matches("sha256:");
                std::fs::read(store.join("blobs/sha256").join(hex)).ok()
            } else {
                None
            };
            let _ = match body {
                Some(body) => stream
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            };
        }
    });
    host
}

#[test]
fn a_registry_sending_endless_data_is_cut_off_at_the_declared_size() {
    let (dir, store, layout, signer, _) = signed_layout();
    let image = LocalImage::open(&dir.path().join("node-3.0.0.manifest.json")).unwrap();
    let host = serve_endless_vhdx(store, format!("sha256:{}", image.manifest.disk.sha256));
    let reference: Reference = format!("{host}/nodes/node:stable").parse().unwrap();
    let out = dir.path().join("out");
    let mut client = Client::new(&host, "nodes/node", true);
    // The registry mirrors the layout: its signatures name the layout.
    let signed_for = RepositoryName::of(&layout).unwrap();
    let trust = Trust {
        keys: &[signer.public()],
        signed_for: Some(&signed_for),
    };
    let err = transfer::pull(&mut client, &reference, &out, trust, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::LimitSize { .. }), "{err}");
    assert!(
        client.bytes_received <= image.vhdx_size + (1 << 20),
        "read {} bytes",
        client.bytes_received
    );
    assert_empty(&out);
}

#[test]
fn a_signature_copied_from_another_repository_is_refused() {
    let registry = Registry::start();
    let host = registry.host.clone();
    let dir = tempfile::tempdir().unwrap();
    let image = LocalImage::open(&tests::image::make(dir.path(), "node", "1.0.0", 2, 11)).unwrap();
    let signer = key();
    let staging: Reference = format!("{host}/staging/node:1.0.0").parse().unwrap();
    let pushed = transfer::push(
        &image,
        &mut Client::new(&host, "staging/node", true),
        &staging,
        Signing::Key(&signer),
        &mut |_| {},
    )
    .unwrap();
    // Someone who may push to production, but holds no release key, copies staging's image and
    // its signature there (skopeo keeps both digests).
    for tag in ["1.0.0".to_owned(), signature_tag(&pushed.digest)] {
        tests::run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{host}/staging/node:{tag}"),
            &format!("docker://{host}/prod/node:{tag}"),
        ]));
    }
    let prod: Reference = format!("{host}/prod/node:1.0.0").parse().unwrap();
    let out = dir.path().join("out");
    let keys = [signer.public()];
    let err = transfer::pull(
        &mut Client::new(&host, "prod/node", true),
        &prod,
        &out,
        Trust::keys(&keys),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::RefuseRepository { signed_for, expected, .. }
            if *signed_for == format!("{host}/staging/node")
                && *expected == format!("{host}/prod/node")),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("a signature copied from another repository is refused"),
        "{err}"
    );
    assert_empty(&out);

    // A consumer that reads production as a mirror of staging says so, and then accepts it.
    let staging_name: RepositoryName = format!("{host}/staging/node").parse().unwrap();
    let mirror = Trust {
        keys: &keys,
        signed_for: Some(&staging_name),
    };
    let pulled = transfer::pull(
        &mut Client::new(&host, "prod/node", true),
        &prod,
        &out,
        mirror,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(pulled.digest, pushed.digest);
}

#[test]
fn a_keyless_push_publishes_the_signature_made_at_build_time() {
    let registry = Registry::start();
    let host = registry.host.clone();
    let dir = tempfile::tempdir().unwrap();
    let image = LocalImage::open(&tests::image::make(dir.path(), "node", "1.0.0", 2, 12)).unwrap();
    let signer = key();
    let keys = [signer.public()];
    // The signing machine names the repository; the publishing machine has no key.
    let repository: RepositoryName = format!("{host}/nodes/node").parse().unwrap();
    signature::sign_local(&image, &signer, Some(&repository)).unwrap();
    let local = signature::read_local(&image).unwrap().unwrap();

    // Pushed elsewhere: refused before anything is uploaded.
    let elsewhere: Reference = format!("{host}/other/node:1.0.0").parse().unwrap();
    let mut other = Client::new(&host, "other/node", true);
    let err = transfer::push(
        &image,
        &mut other,
        &elsewhere,
        Signing::Local(&local),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::MatchLocalSignature { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "for repository {repository}, not {host}/other/node"
        )),
        "{err}"
    );
    assert!(
        !other
            .has_blob(&format!("sha256:{}", image.manifest.disk.sha256))
            .unwrap()
    );

    // Pushed where it was signed for: published as it is, and a host verifies it.
    let reference: Reference = format!("{host}/nodes/node:1.0.0").parse().unwrap();
    let mut client = Client::new(&host, "nodes/node", true);
    let pushed = transfer::push(
        &image,
        &mut client,
        &reference,
        Signing::Local(&local),
        &mut |_| {},
    )
    .unwrap();
    assert!(pushed.signed);
    let out = dir.path().join("out");
    let pulled = transfer::pull(
        &mut client,
        &reference,
        &out,
        Trust::keys(&keys),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        (pulled.digest, pulled.key_id),
        (pushed.digest, signer.public().key_id())
    );
    assert!(tests::same_content(&pulled.vhdx, &image.vhdx));

    // A signature made without naming a repository is not published.
    signature::sign_local(&image, &signer, None).unwrap();
    let unbound = signature::read_local(&image).unwrap().unwrap();
    let err = transfer::push(
        &image,
        &mut client,
        &reference,
        Signing::Local(&unbound),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("names no repository"), "{err}");
}
