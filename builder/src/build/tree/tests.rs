//! Unit tests of the tree: confinement, modes, owners.
use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::process::Stdio;

fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if kind.is_symlink() || kind.is_hard_link() {
            header.set_size(0);
            header.set_link_name(data).unwrap();
            // set_path refuses `..`: write the name bytes directly, as a hostile archive would.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, io::empty()).unwrap();
        } else {
            header.set_size(data.len() as u64);
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, data.as_bytes()).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

#[test]
fn parent_directory_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let tar = tar_with(&[("../escape", tar::EntryType::Regular, "x")]);
    let err = Tree::new(&root)
        .unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap_err();
    assert!(err.to_string().contains("leaves the tree"), "{err}");
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn absolute_symlinks_are_rerooted_not_followed_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    let escape = outside.to_str().unwrap().to_owned();
    let tar = tar_with(&[
        ("evil", tar::EntryType::Symlink, &escape),
        ("evil/file", tar::EntryType::Regular, "payload"),
        ("up", tar::EntryType::Symlink, "../../.."),
        ("up/second", tar::EntryType::Regular, "payload"),
    ]);
    Tree::new(&root)
        .unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap();
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    // The link target was re-rooted: the file landed inside the tree.
    assert_eq!(
        fs::read_to_string(root.join(escape.trim_start_matches('/')).join("file")).unwrap(),
        "payload"
    );
    assert_eq!(fs::read_to_string(root.join("second")).unwrap(), "payload");
}

#[test]
fn recipe_files_follow_links_inside_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    let tree = Tree::new(&root);
    let spec = FileSpec {
        path: crate::recipe::ImagePath::new("/bin/hello").unwrap(),
        content: Content::Text("hi\n".into()),
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    tree.place(&spec, None).unwrap();
    let placed = root.join("usr/bin/hello");
    assert_eq!(fs::read_to_string(&placed).unwrap(), "hi\n");
    assert_eq!(
        fs::metadata(&placed).unwrap().permissions().mode() & 0o7777,
        0o755
    );
}

/// A tree beside a directory standing in for the host's /etc (mode 0755, empty).
struct Hostile {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Hostile {
    fn new() -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("etc");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        Hostile {
            _dir: dir,
            root,
            outside,
        }
    }

    fn outside_str(&self) -> &str {
        self.outside.to_str().unwrap()
    }

    /// The outside directory inside the tree, as an absolute link to it resolves there.
    fn rerooted(&self) -> PathBuf {
        self.root.join(self.outside_str().trim_start_matches('/'))
    }

    fn assert_outside_untouched(&self, etc_mode: u32) {
        let meta = fs::symlink_metadata(&self.outside).unwrap();
        assert_eq!(
            meta.mode() & 0o7777,
            0o755,
            "the outside directory was chmodded"
        );
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        let inside: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(inside.is_empty(), "written outside the tree: {inside:?}");
        assert_eq!(
            fs::metadata("/etc").unwrap().mode(),
            etc_mode,
            "the host's /etc changed"
        );
    }
}

fn etc_mode() -> u32 {
    fs::metadata("/etc").unwrap().mode()
}

fn tar_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &str,
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let linked = kind.is_symlink() || kind.is_hard_link();
    if linked {
        header.set_link_name(data).unwrap();
    }
    let body = if linked { "" } else { data };
    header.set_size(body.len() as u64);
    header.set_path(path).unwrap();
    header.set_cksum();
    builder.append(&header, body.as_bytes()).unwrap();
}

#[test]
fn a_directory_entry_over_a_link_out_of_the_tree_stays_inside() {
    let etc = etc_mode();
    let h = Hostile::new();
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "x", tar::EntryType::Symlink, 0o777, h.outside_str());
    tar_entry(&mut b, "x/", tar::EntryType::Directory, 0o777, "");
    // A relative link that climbs out of the staging directory on the host.
    tar_entry(&mut b, "up", tar::EntryType::Symlink, 0o777, "../etc");
    tar_entry(&mut b, "up/", tar::EntryType::Directory, 0o700, "");
    // A link that leads nowhere is replaced by the directory.
    tar_entry(&mut b, "loop", tar::EntryType::Symlink, 0o777, "loop");
    tar_entry(&mut b, "loop/", tar::EntryType::Directory, 0o750, "");
    // A directory holding links out, replaced by a file: removed without following them.
    tar_entry(
        &mut b,
        "d/sub/out",
        tar::EntryType::Symlink,
        0o777,
        h.outside_str(),
    );
    tar_entry(
        &mut b,
        "d/sub/up",
        tar::EntryType::Symlink,
        0o777,
        "../../../etc",
    );
    tar_entry(
        &mut b,
        "d/sub/deeper/f",
        tar::EntryType::Regular,
        0o644,
        "f",
    );
    tar_entry(&mut b, "d/g", tar::EntryType::Regular, 0o644, "g");
    tar_entry(&mut b, "d", tar::EntryType::Regular, 0o600, "now a file");
    let tar = b.into_inner().unwrap();
    Tree::new(&h.root)
        .unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap();
    h.assert_outside_untouched(etc);
    // `x/` is the directory the link names inside the tree, as in the image.
    assert!(
        fs::symlink_metadata(h.root.join("x"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::metadata(h.rerooted()).unwrap().mode() & 0o7777, 0o777);
    assert_eq!(
        fs::metadata(h.root.join("etc")).unwrap().mode() & 0o7777,
        0o700
    );
    let replaced = fs::symlink_metadata(h.root.join("loop")).unwrap();
    assert!(replaced.is_dir() && replaced.mode() & 0o7777 == 0o750);
    assert_eq!(fs::read_to_string(h.root.join("d")).unwrap(), "now a file");
}

#[test]
fn hard_links_in_a_layer_name_files_of_that_layer() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "bin/a", tar::EntryType::Regular, 0o755, "a");
    tar_entry(&mut b, "bin/b", tar::EntryType::Link, 0o755, "bin/a");
    let tar = b.into_inner().unwrap();
    Tree::new(dir.path())
        .unpack_tar(tar.as_slice(), Path::new("opt/tool"), "layer")
        .unwrap();
    let (a, b) = (
        fs::metadata(dir.path().join("opt/tool/bin/a")).unwrap(),
        fs::metadata(dir.path().join("opt/tool/bin/b")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

/// The environment variable that makes [`tree_under_umask_077`] do its work (in the child
/// process [`the_host_umask_does_not_reach_the_tree`] starts): where to build the tree.
const UMASK_CHILD_DIR: &str = "SLIPWAY_TREE_TEST_UMASK_DIR";

/// The child half of [`the_host_umask_does_not_reach_the_tree`]: the umask is per process, so
/// it is changed in a process of its own.
#[test]
#[ignore = "run by the_host_umask_does_not_reach_the_tree in a process of its own"]
fn tree_under_umask_077() {
    let Some(root) = std::env::var_os(UMASK_CHILD_DIR) else {
        return;
    };
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let tree = Tree::new(Path::new(&root));
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(
        &mut b,
        "usr/bin/tool",
        tar::EntryType::Regular,
        0o755,
        "tool",
    );
    tar_entry(&mut b, "usr/share/", tar::EntryType::Directory, 0o775, "");
    let tar = b.into_inner().unwrap();
    tree.unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap();
    tree.place(&spec("/etc/motd", Content::Text("hi".into()), 0o644), None)
        .unwrap();
    tree.place(&spec("/srv/data", Content::Dir, 0o755), None)
        .unwrap();
    tree.write_file("etc/slipway/image.env", b"X=1\n").unwrap();
}

#[test]
fn the_host_umask_does_not_reach_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "build::tree::tests::tree_under_umask_077",
            "--ignored",
        ])
        .env(UMASK_CHILD_DIR, dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |rel: &str| fs::symlink_metadata(dir.path().join(rel)).unwrap().mode() & 0o7777;
    for (rel, expected) in [
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/bin/tool", 0o755),
        ("usr/share", 0o775),
        ("etc", 0o755),
        ("etc/motd", 0o644),
        ("srv/data", 0o755),
        ("etc/slipway", 0o755),
        ("etc/slipway/image.env", 0o644),
    ] {
        assert_eq!(mode(rel), expected, "{rel}: {:o}", mode(rel));
    }
}

#[test]
fn directories_are_copied_with_their_links_as_links() {
    let h = Hostile::new();
    let source = h._dir.path().join("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("sub/file"), "inside").unwrap();
    fs::write(h.outside.join("secret"), "secret").unwrap();
    symlink(h.outside.join("secret"), source.join("sub/secret")).unwrap();
    symlink(&h.outside, source.join("etc")).unwrap();
    Tree::new(&h.root)
        .copy_dir(&source, Path::new("opt"), "layer")
        .unwrap();
    assert_eq!(
        fs::read_to_string(h.root.join("opt/sub/file")).unwrap(),
        "inside"
    );
    for link in ["opt/sub/secret", "opt/etc"] {
        assert!(
            fs::symlink_metadata(h.root.join(link))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    assert!(!h.rerooted().exists());
}

fn spec(path: &str, content: Content, mode: u32) -> FileSpec {
    FileSpec {
        path: crate::recipe::ImagePath::new(path).unwrap(),
        content,
        mode,
        uid: 0,
        gid: 0,
    }
}

#[test]
fn a_recipe_directory_over_a_link_out_of_the_tree_stays_inside() {
    let etc = etc_mode();
    let h = Hostile::new();
    symlink(&h.outside, h.root.join("x")).unwrap();
    symlink("../etc", h.root.join("up")).unwrap();
    let tree = Tree::new(&h.root);
    tree.place(&spec("/x", Content::Dir, 0o777), None).unwrap();
    tree.place(&spec("/up", Content::Dir, 0o700), None).unwrap();
    h.assert_outside_untouched(etc);
    assert_eq!(fs::metadata(h.rerooted()).unwrap().mode() & 0o7777, 0o777);
    assert_eq!(
        fs::metadata(h.root.join("etc")).unwrap().mode() & 0o7777,
        0o700
    );
}

#[test]
fn recipe_files_through_a_link_out_of_the_tree_stay_inside() {
    let etc = etc_mode();
    let h = Hostile::new();
    fs::write(h.outside.join("shadow"), "secret").unwrap();
    fs::set_permissions(h.outside.join("shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink(&h.outside, h.root.join("x")).unwrap();
    symlink("../etc", h.root.join("up")).unwrap();
    symlink(h.outside.join("shadow"), h.root.join("shadow")).unwrap();
    let tree = Tree::new(&h.root);
    tree.place(&spec("/x/foo", Content::Text("hi".into()), 0o777), None)
        .unwrap();
    tree.place(&spec("/up/bar", Content::Dir, 0o777), None)
        .unwrap();
    // The last component is a link out: replaced, never followed.
    tree.place(&spec("/shadow", Content::Text("mine".into()), 0o644), None)
        .unwrap();
    fs::remove_file(h.outside.join("shadow")).unwrap();
    h.assert_outside_untouched(etc);
    assert_eq!(fs::read_to_string(h.rerooted().join("foo")).unwrap(), "hi");
    assert!(h.root.join("etc/bar").is_dir());
    assert_eq!(fs::read_to_string(h.root.join("shadow")).unwrap(), "mine");
}

#[test]
fn hard_links_through_links_out_of_the_tree_stay_inside() {
    let etc = etc_mode();
    let h = Hostile::new();
    let secret = h.outside.join("shadow");
    fs::write(&secret, "secret").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "x", tar::EntryType::Symlink, 0o777, h.outside_str());
    tar_entry(
        &mut b,
        "direct",
        tar::EntryType::Symlink,
        0o777,
        secret.to_str().unwrap(),
    );
    // A hard link to a link is a second name for the link, not for its target.
    tar_entry(&mut b, "twin", tar::EntryType::Link, 0o644, "direct");
    tar_entry(&mut b, "dir-twin", tar::EntryType::Link, 0o644, "x");
    tar_entry(&mut b, "dir-twin/", tar::EntryType::Directory, 0o777, "");
    let tar = b.into_inner().unwrap();
    let tree = Tree::new(&h.root);
    tree.unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap();
    // Through a directory link: the target is looked for inside the tree, where it is not.
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "through", tar::EntryType::Link, 0o644, "x/shadow");
    let tar = b.into_inner().unwrap();
    let err = tree
        .unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap_err();
    assert!(err.to_string().contains("through"), "{err}");
    assert_eq!(
        fs::metadata(&secret).unwrap().nlink(),
        1,
        "the outside file gained a link"
    );
    fs::remove_file(&secret).unwrap();
    h.assert_outside_untouched(etc);
    assert!(
        fs::symlink_metadata(h.root.join("twin"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(h.rerooted().join("shadow").symlink_metadata().is_err());
}

#[test]
fn setuid_bits_survive_the_owner_being_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "su", tar::EntryType::Regular, 0o4755, "x");
    tar_entry(&mut b, "wall", tar::EntryType::Regular, 0o2755, "x");
    let tar = b.into_inner().unwrap();
    Tree::new(dir.path())
        .unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap();
    assert_eq!(
        fs::metadata(dir.path().join("su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(dir.path().join("wall")).unwrap().mode() & 0o7777,
        0o2755
    );
}

#[test]
fn a_directory_entry_over_a_link_to_the_root_leaves_the_root_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let before = fs::metadata(&root).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "x", tar::EntryType::Symlink, 0o777, "/");
    tar_entry(&mut b, "y", tar::EntryType::Symlink, 0o777, "sub/..");
    for path in ["x/", "y/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o777);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_size(0);
        header.set_path(path).unwrap();
        header.set_cksum();
        b.append(&header, io::empty()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    Tree::new(&root)
        .unpack_tar(tar.as_slice(), Path::new(""), "layer")
        .unwrap();
    // As `./`: the root's mode and owner are not a layer's to set.
    let after = fs::metadata(&root).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o755);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert!(fs::symlink_metadata(root.join("x")).unwrap().is_symlink());
}

#[test]
fn copied_directories_belong_to_root_not_to_their_host_owner() {
    let h = Hostile::new();
    let source = h._dir.path().join("source");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("sub/key"), "private").unwrap();
    fs::set_permissions(source.join("sub/key"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("key", source.join("sub/link")).unwrap();
    for path in ["", "sub", "sub/key"] {
        std::os::unix::fs::chown(source.join(path), Some(1000), Some(1000)).unwrap();
    }
    std::os::unix::fs::lchown(source.join("sub/link"), Some(1000), Some(1000)).unwrap();
    Tree::new(&h.root)
        .copy_dir(&source, Path::new("opt"), "layer")
        .unwrap();
    for path in ["opt/sub", "opt/sub/key", "opt/sub/link"] {
        let meta = fs::symlink_metadata(h.root.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}");
    }
    // The mode is the file's own: a private file stays private.
    let key = fs::metadata(h.root.join("opt/sub/key")).unwrap();
    assert_eq!(key.mode() & 0o7777, 0o600);
}
