//! `slipway keygen`, `sign`, `verify`, `push` and `pull` as a release engineer and a host run
//! them, against the local OCI layout (the registry flows are in tests/tests/oci_publish.rs).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn slipway(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .current_dir(dir)
        .args(args)
        .env("RELEASE_PASSPHRASE", "correct horse battery staple")
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "slipway failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn fails(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected failure: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn sign_verify_push_pull_through_the_local_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tests::image::make(d, "node", "2026.11.0", 4, 7);
    let passphrase = ["--passphrase-env", "RELEASE_PASSPHRASE"];

    ok(slipway(
        d,
        &["keygen", "release.key", passphrase[0], passphrase[1]],
    ));
    ok(slipway(d, &["keygen", "other.key"]));
    assert_eq!(
        std::fs::metadata(d.join("release.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(d.join("release.key"))
            .unwrap()
            .contains("ENCRYPTED PRIVATE KEY")
    );
    assert!(
        std::fs::read_to_string(d.join("release.key.pub"))
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let err = fails(slipway(d, &["keygen", "release.key"]));
    assert!(err.contains("refusing to overwrite a key"), "{err}");
    let err = fails(slipway(
        d,
        &["sign", "node-2026.11.0.vhdx", "--key", "release.key"],
    ));
    assert!(err.contains("is encrypted: give its passphrase"), "{err}");

    ok(slipway(
        d,
        &[
            "sign",
            "node-2026.11.0.vhdx",
            "--key",
            "release.key",
            passphrase[0],
            passphrase[1],
        ],
    ));
    let out = ok(slipway(
        d,
        &["verify", "node-2026.11.0.vhdx", "--key", "release.key.pub"],
    ));
    assert!(out.contains("verified"), "{out}");
    let err = fails(slipway(
        d,
        &["verify", "node-2026.11.0.vhdx", "--key", "other.key.pub"],
    ));
    assert!(err.contains("signed by another key"), "{err}");

    // Push signed to the layout, pull it back as a host would.
    let out = ok(slipway(
        d,
        &[
            "push",
            "node-2026.11.0.vhdx",
            "oci:store:stable",
            "--key",
            "release.key",
            passphrase[0],
            passphrase[1],
        ],
    ));
    assert!(out.contains("(signed)"), "{out}");
    ok(slipway(
        d,
        &[
            "pull",
            "oci:store:stable",
            "host",
            "--key",
            "release.key.pub",
        ],
    ));
    assert!(tests::same_content(
        &d.join("host/node-2026.11.0.vhdx"),
        &d.join("node-2026.11.0.vhdx")
    ));
    let err = fails(slipway(
        d,
        &[
            "pull",
            "oci:store:stable",
            "host2",
            "--key",
            "other.key.pub",
        ],
    ));
    assert!(err.contains("no signature by a trusted key"), "{err}");
    assert!(!d.join("host2/node-2026.11.0.vhdx").exists());

    // Through a channel: promote, then pull what it names; the state remembers the version.
    let out = ok(slipway(
        d,
        &[
            "promote",
            "oci:store:stable",
            "--channel",
            "stable",
            "--key",
            "release.key",
            passphrase[0],
            passphrase[1],
        ],
    ));
    assert!(
        out.contains("channel stable version 1 -> node 2026.11.0"),
        "{out}"
    );
    let out = ok(slipway(
        d,
        &[
            "pull",
            "oci:store",
            "host3",
            "--channel",
            "stable",
            "--key",
            "release.key.pub",
        ],
    ));
    assert!(out.contains("channel stable version 1"), "{out}");
    assert!(
        std::fs::read_to_string(d.join("host3/channels.json"))
            .unwrap()
            .contains("stable")
    );
    let err = fails(slipway(
        d,
        &[
            "pull",
            "oci:store",
            "host4",
            "--channel",
            "beta",
            "--key",
            "release.key.pub",
        ],
    ));
    assert!(err.contains("channel beta does not exist"), "{err}");

    // A manifest edited after signing no longer verifies.
    let manifest = d.join("node-2026.11.0.manifest.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"secure_boot\": \"none\"", "\"secure_boot\": \"off\"");
    std::fs::write(&manifest, text).unwrap();
    let err = fails(slipway(
        d,
        &["verify", "node-2026.11.0.vhdx", "--key", "release.key.pub"],
    ));
    assert!(err.contains("changed after signing"), "{err}");
}

#[test]
fn a_presigned_image_is_pushed_without_its_key_and_a_channel_rotates_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tests::image::make(d, "node", "2026.11.0", 4, 8);
    ok(slipway(d, &["keygen", "release.key"]));
    ok(slipway(d, &["keygen", "new.key"]));
    let store = std::fs::canonicalize(d).unwrap().join("store");

    // The signing machine names the repository; the publishing machine pushes without a key.
    ok(slipway(
        d,
        &[
            "sign",
            "node-2026.11.0.vhdx",
            "--key",
            "release.key",
            "--repository",
            "oci:store",
        ],
    ));
    let out = ok(slipway(
        d,
        &["verify", "node-2026.11.0.vhdx", "--key", "release.key.pub"],
    ));
    assert!(
        out.contains(&format!("for repository oci:{}", store.display())),
        "{out}"
    );
    let err = fails(slipway(d, &["push", "node-2026.11.0.vhdx", "oci:other:1"]));
    assert!(
        err.contains("cannot be published with this image")
            && err.contains(&format!("for repository oci:{}, not", store.display())),
        "{err}"
    );
    let out = ok(slipway(
        d,
        &["push", "node-2026.11.0.vhdx", "oci:store:2026.11.0"],
    ));
    assert!(out.contains("the signature made before the push"), "{out}");
    ok(slipway(
        d,
        &[
            "pull",
            "oci:store:2026.11.0",
            "host",
            "--key",
            "release.key.pub",
        ],
    ));
    assert!(d.join("host/node-2026.11.0.vhdx").exists());

    // A channel, followed by a host that takes only linux x86_64 images.
    ok(slipway(
        d,
        &[
            "promote",
            "oci:store:2026.11.0",
            "--channel",
            "stable",
            "--key",
            "release.key",
        ],
    ));
    let follow = |keys: &[&str], arch: &str| {
        let mut args = vec![
            "pull",
            "oci:store",
            "host",
            "--channel",
            "stable",
            "--os",
            "linux",
            "--arch",
            arch,
        ];
        for key in keys {
            args.extend(["--key", key]);
        }
        slipway(d, &args)
    };
    let out = ok(follow(&["release.key.pub"], "x86_64"));
    assert!(out.contains("channel stable version 1"), "{out}");
    let err = fails(follow(&["release.key.pub"], "aarch64"));
    assert!(err.contains("this host takes aarch64"), "{err}");

    // The channel moves to a new release key: not by deleting its history, by naming the old key.
    let promote_new = |previous: &[&str]| {
        let mut args = vec![
            "promote",
            "oci:store:2026.11.0",
            "--channel",
            "stable",
            "--key",
            "new.key",
        ];
        for key in previous {
            args.extend(["--previous-key", key]);
        }
        slipway(d, &args)
    };
    let err = fails(promote_new(&[]));
    assert!(
        err.contains("channel stable version 1 is signed by key id")
            && err.contains("give the retired public key as a previous key"),
        "{err}"
    );
    let out = ok(promote_new(&["release.key.pub"]));
    assert!(
        out.contains("channel stable version 2") && out.contains("release key rotated"),
        "{out}"
    );
    let err = fails(follow(&["release.key.pub"], "x86_64"));
    assert!(
        err.contains("channel stable version 2 is signed by a key this host does not trust")
            && err.contains("the channel may have rotated its release key: add the new public key"),
        "{err}"
    );
    let out = ok(follow(&["release.key.pub", "new.key.pub"], "x86_64"));
    assert!(out.contains("channel stable version 2"), "{out}");
}
