//! Node images brought to the hypervisor in the background, before a VM boots them.
//!
//! On a Hyper-V host an image's first use is an upload of gigabytes over SFTP ([`Driver::stage`]).
//! Made inline, it held the loop (signals, D-Bus calls, every other node) for minutes, and an
//! in-place swap made it after the node's VM had stopped. Here the upload runs as a task of its
//! own: a node waits (`waiting: its image is being brought to the hypervisor`) and a swap stays
//! planned, its VM untouched, until the image is there. A failed upload is tried again after
//! [`STAGE_RETRY`]; it never marks the image failed (the host, not the image, is at fault).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Daemon, Event};
use crate::driver::Driver;
use crate::model::Digest;

/// How long after a failed upload the next one starts.
pub(super) const STAGE_RETRY: Duration = Duration::from_secs(30);

/// Where bringing one image to the hypervisor stands.
#[derive(Debug)]
pub(super) enum Staging {
    /// Its task runs.
    Busy,
    /// The hypervisor has it.
    Done,
    /// The last try failed, then.
    Failed { reason: String, at: Instant },
}

/// Each image's [`Staging`].
pub(super) type Stages = BTreeMap<Digest, Staging>;

impl<D: Driver> Daemon<D> {
    /// Whether `image` is on the hypervisor: true when it is (or the driver needs nothing
    /// brought, or the store lacks it: booting it fails on its own, with its own reason), false
    /// while its task runs (one is started when none has yet, or when the last failed over
    /// [`STAGE_RETRY`] ago), or why the last try failed.
    pub(super) fn staged(&mut self, image: &Digest) -> Result<bool, String> {
        if !self.driver.stages() {
            return Ok(true);
        }
        match self.stages.get(image) {
            Some(Staging::Done) => return Ok(true),
            Some(Staging::Busy) => return Ok(false),
            Some(Staging::Failed { reason, at }) if at.elapsed() < STAGE_RETRY => {
                return Err(reason.clone());
            }
            Some(Staging::Failed { .. }) | None => {}
        }
        let stored = match self.store.get(image.as_ref()) {
            Ok(Some(stored)) => stored,
            Ok(None) => return Ok(true),
            Err(e) => {
                let reason = format!("cannot read the store: {e:#}");
                let at = Instant::now();
                self.stages.insert(
                    image.clone(),
                    Staging::Failed {
                        reason: reason.clone(),
                        at,
                    },
                );
                return Err(reason);
            }
        };
        self.stages.insert(image.clone(), Staging::Busy);
        let (driver, events, image) = (self.driver.clone(), self.events.clone(), image.clone());
        let digest = image.to_string();
        let upload = tokio::spawn(async move {
            driver
                .stage(&stored.vhdx, &digest)
                .await
                .map_err(|e| format!("{e:#}"))
        });
        // Its end is always told, a panic's too: a stage never told of would hold its nodes
        // and swaps for good.
        tokio::spawn(async move {
            let result = upload
                .await
                .unwrap_or_else(|e| Err(format!("the upload task failed: {e}")));
            let _ = events.send(Event::Staged(image, result));
        });
        Ok(false)
    }

    /// An image's task ended.
    pub(super) fn stage_ended(&mut self, image: Digest, result: Result<(), String>) {
        let stage = match result {
            Ok(()) => {
                tracing::info!(%image, "the image is on the hypervisor");
                Staging::Done
            }
            Err(reason) => {
                tracing::warn!(%image, "cannot bring the image to the hypervisor: {reason} (tried again in {} s)", STAGE_RETRY.as_secs());
                Staging::Failed {
                    reason,
                    at: Instant::now(),
                }
            }
        };
        self.stages.insert(image, stage);
    }

    /// Why a node or swap on `image` waits for it, or None when it is on the hypervisor.
    pub(super) fn waits_for_image(&mut self, image: &Digest) -> Option<String> {
        match self.staged(image) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "its image {} is being brought to the hypervisor",
                self.image_label(image)
            )),
            Err(reason) => Some(format!(
                "cannot bring its image {} to the hypervisor (tried again in {} s): {reason}",
                self.image_label(image),
                STAGE_RETRY.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod tests;
