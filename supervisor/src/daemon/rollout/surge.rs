//! A surge swap's own steps: the replacement's disks and boot, the handover of the node's
//! record to it, and, on the way back, dropping it (see [`crate::swap`]'s second diagram).

use crate::daemon::Daemon;
use crate::driver::{Driver, VmStatus};
use crate::model::NodeState;
use crate::records::{self, NodeRecord};
use crate::swap::{Outcome, Step, Swap, replacement_key};

impl<D: Driver> Daemon<D> {
    /// The work of a surge swap's step (see [`crate::swap`]'s second diagram).
    pub(super) async fn work_surge(
        &mut self,
        swap: &Swap,
        probe: bool,
    ) -> Option<(Outcome, String)> {
        let name = swap.node.as_str();
        let next = replacement_key(name);
        let (generation, previous) = swap
            .surge
            .as_ref()
            .map_or((1, 0), |r| (r.generation, r.previous_generation));
        let old_dir = records::run_dir(&self.config.state_dir, name, previous);
        // The old VM serves until it is drained: listened to (after a restart too), so status
        // shows it and its last healthy beacon is known when it stops; started again if it
        // exited meanwhile (the ordinary supervision leaves a node its swap owns alone).
        let serving = matches!(
            swap.step,
            Step::Planned | Step::DisksSwitched | Step::Booting | Step::Verifying
        );
        let lost = self.nodes.get(name).is_some_and(|n| n.is_lost());
        if serving && (lost || !self.listening(name)) {
            match self.driver.status(name, &old_dir).await {
                VmStatus::Stopped => self.restart_exited(name, &old_dir, &swap.from).await,
                status if !self.listening(name) => self.keep(name, Some(&swap.from), status),
                _ => {}
            }
        }
        match swap.step {
            Step::Planned => self.planned(swap),
            Step::DisksSwitched => {
                let made = match self.prepare(&next, &swap.to).await {
                    Ok(_) => Ok(()),
                    // No fresh join token yet (the API server did not answer): the
                    // replacement waits for one rather than boot with a dead token.
                    Err(e)
                        if e.downcast_ref::<crate::daemon::tokens::WaitForToken>()
                            .is_some() =>
                    {
                        let progress = self.progress.entry(name.to_owned()).or_default();
                        let why = format!("{e:#}");
                        if progress.waiting.as_ref() != Some(&why) {
                            tracing::warn!(node = %name, "surge waits: {why}");
                        }
                        progress.waiting = Some(why);
                        return None;
                    }
                    Err(e) => Err(format!("cannot make its replacement's disks: {e:#}")),
                };
                Some(self.host_outcome(name, made))
            }
            Step::Booting => {
                let booted = self.boot_for_swap(name, &next, &swap.to).await;
                Some(self.host_outcome(name, booted))
            }
            Step::Verifying => self.verify(swap, &next, probe).await,
            // The old VM's node is cordoned and drained (with `[clusters.kube]`).
            Step::Drained => self.drain_step(swap).await,
            Step::Stopping => {
                // The old VM stops only while the replacement serves (once the stop runs,
                // it runs: the next step checks again).
                if self
                    .progress
                    .get(name)
                    .is_none_or(|p| p.stopping.is_none() && p.stopped.is_none())
                {
                    match self.replacement_serving(swap).await? {
                        Ok(()) => {}
                        Err(why) => return Some((Outcome::Failed, why)),
                    }
                }
                let reason = format!(
                    "surge to {}: its replacement is healthy: powering down",
                    self.image_label(&swap.to)
                );
                self.mark_swapping(name, reason);
                let stopped = self.stop_for_swap(name, name)?;
                Some(self.host_outcome(name, stopped.map(|_| ())))
            }
            Step::Stopped => match self.driver.status(name, &old_dir).await {
                VmStatus::Stopped => {
                    // Once handed over (a journal write after it failed), the replacement is
                    // the node: its tracking and listener are the node's now.
                    let handed = self.records.get(name).map(|r| r.generation) == Some(generation);
                    if !handed && let Err(why) = self.replacement_serving(swap).await? {
                        return Some((Outcome::Failed, why));
                    }
                    let handed = self.hand_over(swap);
                    Some(self.host_outcome(name, handed))
                }
                _ => {
                    Some(self.host_outcome(name, Err("its VM runs again after it stopped".into())))
                }
            },
            Step::RollingBack => self.drop_replacement(swap).await,
            Step::BootingPrevious => self.back_on_previous(swap, probe).await,
            Step::Committed | Step::RolledBack => None,
        }
    }

    /// A surge's handover: the node's record takes the replacement's generation, address, MAC
    /// and image, in one write, and the replacement's tracking becomes the node's.
    fn hand_over(&mut self, swap: &Swap) -> Result<(), String> {
        let name = swap.node.as_str();
        let (Some(next), Some(record)) = (&swap.surge, self.records.get(name)) else {
            return Err(format!("node {name} has no record"));
        };
        let handed = NodeRecord {
            generation: next.generation,
            address: next.address,
            mac: next.mac.clone(),
            image: Some(swap.to.clone()),
            ..record.clone()
        };
        let changed = *record != handed;
        if changed {
            records::save(&self.config.state_dir, &handed)
                .map_err(|e| format!("cannot hand its record over: {e:#}"))?;
            self.records.insert(name.to_owned(), handed);
            tracing::info!(node = %name, generation = next.generation, address = %next.address, mac = %next.mac, "surge handover: its replacement is the node now");
        }
        // Already handed over by this supervisor, the node's tracking is the replacement's.
        if changed || self.nodes.contains_key(&replacement_key(name)) {
            self.adopt_replacement(name);
        }
        Ok(())
    }

    /// rolling-back, for a surge: the node's record as before the handover (if it was made),
    /// then the replacement stopped and its disks deleted. The old VM is left as it is
    /// (booting-previous starts it if it does not run).
    async fn drop_replacement(&mut self, swap: &Swap) -> Option<(Outcome, String)> {
        let name = swap.node.as_str();
        if self.waits_to_retry(name) {
            return None;
        }
        let next = swap.surge.as_ref()?;
        let key = replacement_key(name);
        // Written once by each supervisor that rolls the surge back, whatever it believes the
        // record says: a handover whose write failed late may be on the disk anyway.
        let restored_here = self.progress.get(name).is_some_and(|p| p.restored);
        if let Some(record) = self.records.get(name).cloned()
            && (!restored_here || record.generation == next.generation)
        {
            let restored = NodeRecord {
                generation: next.previous_generation,
                address: next.previous_address,
                mac: next.previous_mac.clone(),
                image: Some(swap.from.clone()),
                ..record.clone()
            };
            if let Err(e) = records::save(&self.config.state_dir, &restored) {
                return Some((
                    Outcome::Failed,
                    format!("cannot set its record back: {e:#}"),
                ));
            }
            self.records.insert(name.to_owned(), restored);
            self.progress.entry(name.to_owned()).or_default().restored = true;
            if record.generation == next.generation {
                // What was tracked as the node was the replacement.
                self.forget(name);
                tracing::warn!(node = %name, "surge handover undone: its record names its previous VM again");
            }
        }
        // Its old VM, still running, is judged again (it was shown swapping while it stopped).
        if let Some(node) = self.nodes.get_mut(name)
            && node.state == NodeState::Swapping
        {
            node.set(
                NodeState::Starting,
                format!("back from its surge: {}", swap.reason),
            );
        }
        let dir = self.node_dir(&key);
        let stopped = self.stop_for_swap(name, &key)?;
        if let Err(e) = stopped {
            return Some((Outcome::Failed, format!("cannot stop its replacement: {e}")));
        }
        self.forget(&key);
        if let Err(e) = self.remove_generation(name, next.generation).await {
            return Some((
                Outcome::Failed,
                format!(
                    "cannot delete its replacement's disks {}: {e:#}",
                    dir.display()
                ),
            ));
        }
        Some((Outcome::Done, String::new()))
    }

    /// Whether a surge's replacement still serves (its VM runs, ready, its beacon recent):
    /// None while that is not known yet (a restarted supervisor waits for its next beacon,
    /// for as long as a silent node may be), else Ok or why not.
    async fn replacement_serving(&mut self, swap: &Swap) -> Option<Result<(), String>> {
        let name = swap.node.as_str();
        let key = replacement_key(name);
        let dir = self.node_dir(&key);
        let status = self.driver.status(&key, &dir).await;
        if status == VmStatus::Stopped {
            return Some(Err(format!(
                "its replacement's VM exited before the handover (see {})",
                dir.join("console.log").display()
            )));
        }
        if !self.listening(&key) {
            self.keep(&key, Some(&swap.to), status);
        }
        let watched = *self
            .progress
            .entry(name.to_owned())
            .or_default()
            .watched
            .get_or_insert_with(crate::daemon::unix_now);
        let node = self.nodes.get(&key)?;
        let recent = node.quiet().is_some_and(|q| q < self.deadlines.silence);
        if node.state == NodeState::Ready && recent && !node.is_lost() {
            return Some(Ok(()));
        }
        let waited = u64::try_from(crate::daemon::unix_now() - watched).unwrap_or(0);
        if node.state == NodeState::Mismatch || waited > self.deadlines.silence.as_secs() {
            return Some(Err(format!(
                "its replacement no longer serves before the handover: {} {}",
                node.state, node.reason
            )));
        }
        None
    }

    /// Deletes the run directory of generation `generation` of node `name` (generation 0's
    /// files: the node's directory keeps its record and later generations), unless a VM runs
    /// there.
    pub(in crate::daemon) async fn remove_generation(
        &mut self,
        name: &str,
        generation: u32,
    ) -> anyhow::Result<()> {
        let dir = records::run_dir(&self.config.state_dir, name, generation);
        if !dir.exists() {
            return Ok(());
        }
        if self.driver.status(name, &dir).await != VmStatus::Stopped {
            anyhow::bail!("a VM still runs in {}", dir.display());
        }
        // What the hypervisor could not give back stays with its directory (the next surge's
        // generation number goes past it, so no VM is made over those disks again): logged, and
        // the swap goes on (a rollback must still boot the old VM).
        if let Err(e) = self.driver.forget(&dir).await {
            tracing::warn!(node = %name, dir = %dir.display(), "its VM's leftovers on the hypervisor stay (remove them there by hand): {e:#}");
            return Ok(());
        }
        if generation > 0 {
            return match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if file == "record" || records::generation_dir(&file).is_some() {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}
