//! Tests of bringing images to the hypervisor in the background.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use images::manifest::Os;

use super::*;
use crate::daemon::testing;
use crate::driver::testing::{Hooked, Hooks};
use crate::model::NodeState;
use crate::swap::{Outcome, Swap};

/// A hypervisor whose uploads take as long as the test says: each waits for a permit, then
/// answers the next of `answers` (Ok once they are used up). It makes no VMs.
struct Uploads {
    permits: tokio::sync::Semaphore,
    answers: Mutex<Vec<Result<(), String>>>,
    calls: AtomicUsize,
}

impl Uploads {
    fn new(answers: Vec<Result<(), String>>) -> Uploads {
        Uploads {
            permits: tokio::sync::Semaphore::new(0),
            answers: Mutex::new(answers),
            calls: 0.into(),
        }
    }
}

impl Hooks for Uploads {
    async fn stage(&self, base: &Path) -> anyhow::Result<()> {
        assert!(base.is_file(), "the store's VHDX is what goes");
        self.calls.fetch_add(1, SeqCst);
        self.permits.acquire().await?.forget();
        let mut answers = self.answers.lock().unwrap();
        if answers.is_empty() {
            return Ok(());
        }
        answers.remove(0).map_err(anyhow::Error::msg)
    }
    fn stages(&self) -> bool {
        true
    }
}

/// Cluster lab on a Hyper-V host: cp-1 (Linux) and win-1 (Windows); image `c` (Windows) in
/// the store.
fn lab(
    dir: &Path,
    driver: Uploads,
) -> (
    Daemon<Hooked<Uploads>>,
    tokio::sync::mpsc::UnboundedReceiver<Event>,
    Digest,
) {
    let state = dir.join("state");
    let image = Digest::repeated('c');
    testing::put(&state.join("store"), &image, Os::Windows, "1");
    let nodes = [
        ("cp-1", "control-plane", "linux"),
        ("win-1", "worker", "windows"),
    ];
    let text = testing::hyperv_config(&state, &nodes, 1);
    let (daemon, inbox) = testing::daemon_heard(dir, &text, Hooked::new(driver));
    (daemon, inbox, image)
}

/// The next image a stage task says it brought, handed to the daemon as its loop does.
async fn next_staged(
    daemon: &mut Daemon<Hooked<Uploads>>,
    inbox: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("no stage task ended")
            .expect("the inbox closed");
        if let Event::Staged(image, result) = event {
            daemon.stage_ended(image, result);
            return;
        }
    }
}

#[tokio::test]
async fn an_image_is_brought_in_the_background_once_and_again_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let driver = Uploads::new(vec![Err("ssh: connection refused".into())]);
    let (mut daemon, mut inbox, image) = lab(dir.path(), driver);
    assert_eq!(daemon.staged(&image), Ok(false));
    assert_eq!(daemon.staged(&image), Ok(false), "still on its way");
    tokio::task::yield_now().await;
    assert_eq!(
        daemon.driver.hooks.calls.load(SeqCst),
        1,
        "one upload at a time"
    );

    daemon.driver.hooks.permits.add_permits(1);
    next_staged(&mut daemon, &mut inbox).await;
    let failed = daemon.staged(&image);
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.contains("connection refused")),
        "{failed:?}"
    );
    assert_eq!(
        daemon.driver.hooks.calls.load(SeqCst),
        1,
        "not again at once"
    );
    let why = daemon.waits_for_image(&image).unwrap();
    assert!(
        why.contains("cannot bring") && why.contains("connection refused"),
        "{why}"
    );

    // Its wait over, it is tried again, and this time it gets there.
    let Some(Staging::Failed { at, .. }) = daemon.stages.get_mut(&image) else {
        panic!("{:?}", daemon.stages);
    };
    *at = Instant::now().checked_sub(STAGE_RETRY).unwrap();
    assert_eq!(daemon.staged(&image), Ok(false));
    daemon.driver.hooks.permits.add_permits(1);
    next_staged(&mut daemon, &mut inbox).await;
    assert_eq!(daemon.driver.hooks.calls.load(SeqCst), 2);
    assert_eq!(daemon.staged(&image), Ok(true));
    assert_eq!(daemon.waits_for_image(&image), None);
    assert_eq!(
        daemon.driver.hooks.calls.load(SeqCst),
        2,
        "brought once for good"
    );

    // An image the store does not have is not waited for: booting it fails with its own reason.
    assert_eq!(daemon.staged(&Digest::repeated('d')), Ok(true));
}

#[tokio::test]
async fn a_node_and_a_swap_wait_for_their_image_without_touching_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, mut inbox, image) = lab(dir.path(), Uploads::new(Vec::new()));
    daemon.ensure_records().unwrap();

    // A node whose image is on its way waits, and no failure counts towards its backoff.
    daemon.start("win-1", &image).await;
    let node = &daemon.nodes["win-1"];
    assert_eq!(node.state, NodeState::Waiting, "{}", node.reason);
    assert!(
        node.reason.contains("being brought to the hypervisor"),
        "{}",
        node.reason
    );
    assert_eq!((node.failures, node.next_start), (0, None));

    // A planned swap stays planned, saying why, until its image is there.
    let swap = Swap::plan("win-1", "lab", Digest::repeated('b'), image.clone(), 0);
    assert_eq!(daemon.planned(&swap), None);
    let waits = daemon.progress["win-1"].waiting.clone().unwrap_or_default();
    assert!(waits.contains("being brought to the hypervisor"), "{waits}");
    daemon.driver.hooks.permits.add_permits(1);
    next_staged(&mut daemon, &mut inbox).await;
    assert_eq!(daemon.planned(&swap), Some((Outcome::Done, String::new())));
    assert_eq!(daemon.driver.hooks.calls.load(SeqCst), 1);
}

#[tokio::test]
async fn a_hypervisor_that_reads_images_where_they_are_is_never_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let nodes = [("cp-1", "control-plane", "linux")];
    let text = testing::hyperv_config(&state, &nodes, 1);
    let mut daemon = testing::daemon(dir.path(), &text);
    // Not even in the store: nothing is asked of the driver.
    assert_eq!(daemon.staged(&Digest::repeated('e')), Ok(true));
    assert!(daemon.stages.is_empty());
}
