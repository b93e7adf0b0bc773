//! Bad recipes: each kind gives `file:line:column` and says what was expected.

use std::path::Path;

use super::*;

const TINY: &str = include_str!("../../../recipes/tiny-linux.toml");

/// Parses tiny-linux with `from` replaced by `to` (which must occur exactly once).
fn parse_edited(from: &str, to: &str) -> Result<Recipe, Error> {
    assert_eq!(
        TINY.matches(from).count(),
        1,
        "{from:?} must occur once in tiny-linux.toml"
    );
    Recipe::parse(
        Path::new("recipes/tiny-linux.toml"),
        &TINY.replacen(from, to, 1),
    )
}

/// The error's text, checked to start with the location of the first occurrence of `at`
/// in the edited recipe.
fn error_at(from: &str, to: &str, at: &str) -> String {
    let err = parse_edited(from, to).expect_err("the edited recipe must be refused");
    let text = TINY.replacen(from, to, 1);
    let offset = text.find(at).expect("marker present");
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("recipes/tiny-linux.toml:{line}:{column}: ")),
        "expected location {line}:{column} in {message:?}"
    );
    message
}

#[test]
fn tiny_linux_parses() {
    let recipe = Recipe::parse(Path::new("recipes/tiny-linux.toml"), TINY).unwrap();
    assert_eq!(recipe.stem(), "tiny-linux-2026.11.0");
    assert_eq!(recipe.disk.size.get_ref(), &(256 << 20));
    assert_eq!(recipe.root.filesystem, Filesystem::Erofs);
    assert_eq!(
        recipe.sources["kernel"].kind,
        SourceKind::Deb {
            package: "linux-image-cloud-amd64".into(),
            follow: Some("linux-image-".into())
        }
    );
    let tmp = recipe
        .root
        .files
        .iter()
        .find(|f| f.path.as_str() == "/tmp")
        .unwrap();
    assert_eq!((tmp.mode, tmp.content.clone()), (0o1777, Content::Dir));
    assert_eq!(recipe.lock_path(), Path::new("recipes/tiny-linux.lock"));
}

#[test]
fn a_typo_in_a_key_is_refused() {
    let m = error_at("kubernetes = \"none\"", "kubernets = \"none\"", "kubernets");
    assert!(m.contains("unknown field `kubernets`"), "{m}");
}

#[test]
fn a_wrong_type_is_refused() {
    let m = error_at("format = 1", "format = \"one\"", "\"one\"");
    assert!(m.contains("invalid type"), "{m}");
}

#[test]
fn a_missing_key_is_refused() {
    let m = parse_edited("os = \"linux\"\n", "")
        .unwrap_err()
        .to_string();
    assert!(m.contains("missing field `os`"), "{m}");
}

#[test]
fn another_format_is_refused() {
    let m = error_at("format = 1", "format = 2", "2");
    assert!(m.contains("format 2 is not supported"), "{m}");
}

#[test]
fn an_unknown_os_is_refused() {
    let m = error_at("os = \"linux\"", "os = \"plan9\"", "\"plan9\"");
    assert!(m.contains("unknown variant `plan9`"), "{m}");
}

#[test]
fn a_path_like_image_name_is_refused() {
    let m = error_at("name = \"tiny-linux\"", "name = \"../tiny\"", "\"../tiny\"");
    assert!(m.contains("image name \"../tiny\" is not allowed"), "{m}");
}

#[test]
fn a_bad_kubernetes_version_is_refused() {
    let m = error_at(
        "kubernetes = \"none\"",
        "kubernetes = \"latest\"",
        "\"latest\"",
    );
    assert!(m.contains("expected a version like"), "{m}");
}

#[test]
fn a_bad_sha256_is_refused() {
    let m = error_at(
        "init = { path = \"tiny-linux/init\" }",
        "init = { url = \"https://example.org/init\", sha256 = \"abc\" }",
        "\"abc\"",
    );
    assert!(m.contains("expected 64 lowercase hex digits"), "{m}");
}

#[test]
fn an_unpinned_url_is_refused() {
    let m = error_at(
        "init = { path = \"tiny-linux/init\" }",
        "init = { url = \"https://example.org/init\" }",
        "{ url",
    );
    assert!(m.contains("needs `sha256"), "{m}");
}

#[test]
fn a_source_path_leaving_the_recipe_directory_is_refused() {
    let m = error_at(
        "{ path = \"tiny-linux/init\" }",
        "{ path = \"../../etc/shadow\" }",
        "{ path",
    );
    assert!(m.contains("leaves the recipe's directory"), "{m}");
}

#[test]
fn an_image_path_escaping_the_root_is_refused() {
    let m = error_at(
        "{ path = \"/sbin/init\"",
        "{ path = \"/sbin/../../init\"",
        "\"/sbin/../../init\"",
    );
    assert!(m.contains("escapes the image's root"), "{m}");
}

#[test]
fn an_undeclared_source_is_refused() {
    let m = error_at(
        "layers = [\"busybox\"]",
        "layers = [\"busybx\"]",
        "\"busybx\"",
    );
    assert!(m.contains("does not declare"), "{m}");
}

#[test]
fn a_bad_mode_is_refused() {
    let m = error_at(
        "source = \"init\", mode = \"0755\"",
        "source = \"init\", mode = \"rwxr-xr-x\"",
        "\"rwxr-xr-x\"",
    );
    assert!(m.contains("expected octal digits"), "{m}");
}

#[test]
fn a_bad_owner_is_refused() {
    let m = error_at(
        "source = \"init\", mode = \"0755\"",
        "source = \"init\", mode = \"0755\", owner = \"alice\"",
        "\"alice\"",
    );
    assert!(m.contains("expected \"root\" or \"UID:GID\""), "{m}");
}

#[test]
fn a_bad_block_size_is_refused() {
    let m = error_at("block-size = \"1M\"", "block-size = \"3M\"", "\"3M\"");
    assert!(m.contains("power of two from 1M to 256M"), "{m}");
}

#[test]
fn a_bad_disk_size_is_refused() {
    let m = error_at("size = \"256M\"", "size = \"256Q\"", "\"256Q\"");
    assert!(m.contains("unknown size suffix"), "{m}");
}

#[test]
fn a_kernel_that_is_not_a_package_is_refused() {
    let m = error_at("source = \"kernel\"", "source = \"init\"", "\"init\"\nstub");
    assert!(m.contains("must be a `deb` source"), "{m}");
}

#[test]
fn a_source_of_two_kinds_is_refused() {
    let m = error_at(
        "busybox = { deb = \"busybox-static\" }",
        "busybox = { deb = \"busybox-static\", path = \"x\" }",
        "{ deb",
    );
    assert!(m.contains("exactly one of"), "{m}");
}

#[test]
fn a_layer_placed_outside_the_root_is_refused() {
    let m = error_at(
        "layers = [\"busybox\"]",
        "layers = [{ source = \"busybox\", into = \"/usr/../../x\" }]",
        "{ source = \"busybox\"",
    );
    assert!(m.contains("escapes the image's root"), "{m}");
    let placed = parse_edited(
        "layers = [\"busybox\"]",
        "layers = [{ source = \"busybox\", into = \"/opt/bb\" }]",
    )
    .unwrap();
    assert_eq!(
        placed.root.layers[0].into.as_ref().unwrap().as_str(),
        "/opt/bb"
    );
}

#[test]
fn a_layer_of_the_wrong_shape_is_refused() {
    let m = error_at("layers = [\"busybox\"]", "layers = [42]", "42");
    assert!(m.contains("a layer is a source name or"), "{m}");
    let m = error_at(
        "layers = [\"busybox\"]",
        "layers = [{ source = \"busybox\", to = \"/x\" }]",
        "{ source",
    );
    assert!(m.contains("unknown key `to`"), "{m}");
}

#[test]
fn a_url_source_takes_a_size_cap() {
    const PINNED: &str =
        "sha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"";
    let init = "init = { path = \"tiny-linux/init\" }";
    let capped = parse_edited(
        init,
        &format!("init = {{ url = \"https://example.org/init\", {PINNED}, size = \"2M\" }}"),
    )
    .unwrap();
    assert!(matches!(
        capped.sources["init"].kind,
        SourceKind::Url { size: Some(n), .. } if n == 2 << 20
    ));
    let default = parse_edited(
        init,
        &format!("init = {{ url = \"https://example.org/init\", {PINNED} }}"),
    )
    .unwrap();
    assert!(matches!(
        default.sources["init"].kind,
        SourceKind::Url { size: None, .. }
    ));

    let m = error_at(
        init,
        &format!("init = {{ url = \"https://example.org/init\", {PINNED}, size = \"2Q\" }}"),
        "\"2Q\"",
    );
    assert!(m.contains("unknown size suffix"), "{m}");
    let m = error_at(
        init,
        &format!("init = {{ url = \"https://example.org/init\", {PINNED}, size = \"0\" }}"),
        "\"0\"",
    );
    assert!(m.contains("more than zero"), "{m}");
    let m = error_at(
        init,
        "init = { path = \"tiny-linux/init\", size = \"2M\" }",
        "{ path",
    );
    assert!(m.contains("key `size` does not apply"), "{m}");
}
