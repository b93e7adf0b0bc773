//! Recipes and inputs that parse but cannot be built: each fails with a clear error that says
//! where and why, and leaves no output that looks finished. (Parse-time errors have unit tests
//! in `recipe::tests`.)

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// tiny-linux copied into a temporary directory with `edit` applied to the recipe text, and a
/// cache whose downloads are shared with the other tests.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(edit: impl FnOnce(String) -> String) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let recipes = repo().join("recipes");
        std::fs::create_dir_all(dir.path().join("tiny-linux")).unwrap();
        std::fs::copy(
            recipes.join("tiny-linux/init"),
            dir.path().join("tiny-linux/init"),
        )
        .unwrap();
        let text = std::fs::read_to_string(recipes.join("tiny-linux.toml")).unwrap();
        std::fs::write(dir.path().join("tiny-linux.toml"), edit(text)).unwrap();
        let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slipway-downloads");
        std::fs::create_dir_all(shared.join("debs")).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        std::os::unix::fs::symlink(shared.join("debs"), dir.path().join("cache/debs")).unwrap();
        Case { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `slipway ARGS` with the case's cache; returns (success, stderr).
    fn slipway(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(args)
            .env("SLIPWAY_CACHE", self.path("cache"))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Builds and expects failure; returns stderr, having checked no output looks finished.
    fn build_fails(&self, extra: &[&str]) -> String {
        let recipe = self.path("tiny-linux.toml");
        let out = self.path("out");
        let mut args = vec![
            "build",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (success, stderr) = self.slipway(&args);
        assert!(!success, "the build should fail");
        let finished: Vec<_> = std::fs::read_dir(&out)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(finished.is_empty(), "a failed build left {finished:?}");
        stderr
    }

    /// The `line:column` of the first occurrence of `marker` in the recipe.
    fn location(&self, marker: &str) -> String {
        let text = std::fs::read_to_string(self.path("tiny-linux.toml")).unwrap();
        let at = text.find(marker).unwrap();
        let line = text[..at].matches('\n').count() + 1;
        let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("tiny-linux.toml:{line}:{column}: ")
    }
}

#[test]
fn a_missing_source_file_is_named_with_its_location() {
    let case = Case::new(|t| {
        t.replace(
            "path = \"tiny-linux/init\"",
            "path = \"tiny-linux/no-such-init\"",
        )
    });
    let stderr = case.build_fails(&[]);
    assert!(
        stderr.contains(&case.location("{ path = \"tiny-linux/no-such")),
        "{stderr}"
    );
    assert!(
        stderr.contains("source init: cannot read") && stderr.contains("no-such-init"),
        "{stderr}"
    );
}

#[test]
fn a_disk_too_small_for_its_content_says_how_much_is_needed() {
    let case = Case::new(|t| t.replace("size = \"256M\"", "size = \"66M\""));
    let stderr = case.build_fails(&[]);
    assert!(stderr.contains(&case.location("\"66M\"")), "{stderr}");
    assert!(
        stderr.contains("the disk is too small for its content")
            && stderr.contains("raise [disk] size"),
        "{stderr}"
    );
}

#[test]
fn locked_builds_refuse_inputs_the_lock_does_not_pin() {
    let case = Case::new(|t| t);
    // Locked against today's archive, so the check below does not depend on the committed lock.
    let (success, stderr) = case.slipway(&["lock", case.path("tiny-linux.toml").to_str().unwrap()]);
    assert!(success, "{stderr}");
    // A source the lock has never seen.
    let recipe = case.path("tiny-linux.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(
        &recipe,
        text.replace("[root]", "[sources.cpio]\ndeb = \"cpio\"\n\n[root]"),
    )
    .unwrap();
    let stderr = case.build_fails(&["--locked"]);
    assert!(
        stderr.contains("source cpio: the lock does not cover it"),
        "{stderr}"
    );
    assert!(stderr.contains("no longer matches"), "{stderr}");
}

#[test]
fn a_package_whose_digest_differs_from_the_lock_is_refused() {
    let case = Case::new(|t| t);
    // Pin busybox-static at its current version with a digest the archive will not match.
    let (success, stderr) = case.slipway(&["lock", case.path("tiny-linux.toml").to_str().unwrap()]);
    assert!(success, "{stderr}");
    let lock_path = case.path("tiny-linux.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    let section = lock.find("[inputs.busybox]").unwrap();
    let digest_at = section + lock[section..].find("sha256 = \"").unwrap() + "sha256 = \"".len();
    let mut forged = lock.clone();
    forged.replace_range(digest_at..digest_at + 64, &"0".repeat(64));
    std::fs::write(&lock_path, forged).unwrap();
    let stderr = case.build_fails(&["--locked"]);
    assert!(
        stderr.contains("busybox-static") && stderr.contains("refusing it"),
        "{stderr}"
    );
}

#[test]
fn an_archive_entry_leaving_the_tree_is_refused() {
    let case = Case::new(|t| {
        t.replace("layers = [\"busybox\"]", "layers = [\"busybox\", \"evil\"]")
            .replace(
                "[root]",
                "[sources.evil]\npath = \"evil.tar\"\nunpack = true\n\n[root]",
            )
    });
    let script = "import tarfile,io,sys\nt=tarfile.open(sys.argv[1],'w')\ni=tarfile.TarInfo('../../escaped')\n\
                  i.size=4\nt.addfile(i,io.BytesIO(b'evil'))\nt.close()\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(case.path("evil.tar"))
        .status()
        .unwrap();
    assert!(status.success());
    let stderr = case.build_fails(&[]);
    assert!(
        stderr.contains("source evil: path \"../../escaped\" leaves the tree"),
        "{stderr}"
    );
}

#[test]
fn unreachable_downloads_are_listed_with_where_to_place_them() {
    let digest = "ab".repeat(32);
    let case = Case::new(|t| {
        t.replace(
            "[root]",
            &format!(
                "[sources.kubelet]\nurl = \"http://127.0.0.1:9/kubelet\"\nsha256 = \"{digest}\"\n\n\
                 [sources.kubeadm]\nurl = \"http://127.0.0.1:9/kubeadm\"\nsha256 = \"{}\"\n\n[root]",
                "cd".repeat(32)
            ),
        )
    });
    let stderr = case.build_fails(&[]);
    assert!(
        stderr.contains("2 source(s) could not be downloaded"),
        "{stderr}"
    );
    let cache = case.path("cache");
    let place = format!(
        "place the file (sha256 {digest}) at {}/urls/{digest}",
        cache.display()
    );
    assert!(
        stderr.contains("source kubelet: http://127.0.0.1:9/kubelet") && stderr.contains(&place),
        "{stderr}"
    );
    assert!(
        stderr.contains("source kubeadm: http://127.0.0.1:9/kubeadm"),
        "{stderr}"
    );

    // Placed by hand with the wrong content: refused by its digest.
    std::fs::create_dir_all(cache.join("urls")).unwrap();
    std::fs::write(cache.join("urls").join(&digest), b"not kubelet").unwrap();
    let stderr = case.build_fails(&[]);
    assert!(
        stderr.contains(&format!(
            "the cached file {} has sha256",
            cache.join("urls").join(&digest).display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_typo_in_a_recipe_exits_1_with_its_location() {
    let case = Case::new(|t| t.replace("cmdline =", "cmdlin ="));
    let (success, stderr) =
        case.slipway(&["build", case.path("tiny-linux.toml").to_str().unwrap()]);
    assert!(!success);
    assert!(
        stderr.contains(&case.location("cmdlin =")) && stderr.contains("unknown field `cmdlin`"),
        "{stderr}"
    );
}

/// A directory outside the case's recipe directory and build, with `file` in it.
fn outside_dir(case: &Case) -> PathBuf {
    let outside = case.path("elsewhere");
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(outside.join("file"), "#!/bin/busybox sh\n").unwrap();
    outside
}

/// A case whose recipe lives one level down (`recipe/`), so that `elsewhere` is outside it.
fn nested_case(edit: impl FnOnce(String) -> String) -> Case {
    let case = Case::new(edit);
    let recipe = case.path("recipe");
    std::fs::create_dir(&recipe).unwrap();
    std::fs::rename(case.path("tiny-linux"), recipe.join("tiny-linux")).unwrap();
    std::fs::rename(case.path("tiny-linux.toml"), recipe.join("tiny-linux.toml")).unwrap();
    case
}

fn build_nested_fails(case: &Case) -> String {
    let recipe = case.path("recipe/tiny-linux.toml");
    let out = case.path("out");
    let (success, stderr) = case.slipway(&[
        "build",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!success, "the build should fail");
    assert!(!out.join("tiny-linux.vhdx").exists());
    stderr
}

#[test]
fn a_path_source_linking_out_of_the_recipe_directory_is_refused() {
    let case = nested_case(|t| t);
    let outside = outside_dir(&case);
    // The recipe's own init, spelled inside the directory, is a link to a file outside it.
    let init = case.path("recipe/tiny-linux/init");
    std::fs::remove_file(&init).unwrap();
    std::os::unix::fs::symlink(outside.join("file"), &init).unwrap();
    let stderr = build_nested_fails(&case);
    assert!(
        stderr.contains("source init: tiny-linux/init resolves to")
            && stderr.contains(&outside.join("file").display().to_string())
            && stderr.contains("outside the recipe's directory"),
        "{stderr}"
    );
}

#[test]
fn a_path_source_directory_linking_out_of_the_recipe_directory_is_refused() {
    let case = nested_case(|t| {
        t.replace(
            "layers = [\"busybox\"]",
            "layers = [\"busybox\", \"extra\"]",
        )
        .replace("[root]", "[sources.extra]\npath = \"extra\"\n\n[root]")
    });
    let outside = outside_dir(&case);
    std::os::unix::fs::symlink(&outside, case.path("recipe/extra")).unwrap();
    let stderr = build_nested_fails(&case);
    assert!(
        stderr.contains("source extra: extra resolves to")
            && stderr.contains("outside the recipe's directory"),
        "{stderr}"
    );
}

#[test]
fn a_layer_cannot_chmod_outside_the_tree_through_a_link() {
    let case = Case::new(|t| {
        t.replace("layers = [\"busybox\"]", "layers = [\"busybox\", \"evil\"]")
            .replace(
                "[root]",
                "[sources.evil]\npath = \"evil.tar\"\nunpack = true\n\n[root]",
            )
            // Stops the build once the tree is assembled: /bin/busybox is a file.
            .replace(
                "files = [\n",
                "files = [\n  { path = \"/bin/busybox/stop\", text = \"\" },\n",
            )
    });
    let outside = outside_dir(&case);
    let etc_mode = std::fs::metadata("/etc").unwrap().permissions().mode();
    let script = "import tarfile,sys\nt=tarfile.open(sys.argv[1],'w')\n\
                  l=tarfile.TarInfo('x')\nl.type=tarfile.SYMTYPE\nl.linkname=sys.argv[2]\nt.addfile(l)\n\
                  d=tarfile.TarInfo('x/')\nd.type=tarfile.DIRTYPE\nd.mode=0o777\nt.addfile(d)\n\
                  f=tarfile.TarInfo('x/planted')\nt.addfile(f)\nt.close()\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(case.path("evil.tar"))
        .arg(&outside)
        .status()
        .unwrap();
    assert!(status.success());
    let stderr = case.build_fails(&[]);
    assert!(
        stderr.contains("/bin/busybox/stop") && stderr.contains("not a directory"),
        "{stderr}"
    );
    let mode = std::fs::metadata(&outside).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o7777,
        0o755,
        "the directory outside the tree was chmodded"
    );
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["file"], "written outside the tree");
    assert_eq!(
        std::fs::metadata("/etc").unwrap().permissions().mode(),
        etc_mode
    );
}
