//! Prometheus metrics over HTTP on a loopback address: `GET /metrics` answers the OpenMetrics
//! text format (prometheus-client encodes it) from the supervisor's snapshot. The server is a
//! task; each connection is a task of its own with a deadline, so a slow client holds nothing.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, bail};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{ROLLOUT_STATES, Shared, Snapshot};
use crate::model::NodeState;

/// The longest request head read.
const MAX_REQUEST: u64 = 8 << 10;
/// How long one connection may take, request and answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// The upper bounds of the swap duration histogram's buckets, seconds: a swap of a small
/// node takes tens of seconds under KVM, minutes under TCG or with a slow drain.
const SWAP_DURATION_BUCKETS: [f64; 11] = [
    5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
];
/// The results a finished swap can have; each is shown, 0 until one happens.
const SWAP_RESULTS: [&str; 4] = ["committed", "rolled-back", "aborted", "abandoned"];

type Labels = Vec<(&'static str, String)>;

/// Binds `address` (which must be a loopback address; port 0 picks one) and serves the metrics
/// from a task; returns the address bound.
pub async fn serve(address: SocketAddr, shared: Shared) -> anyhow::Result<SocketAddr> {
    if !address.ip().is_loopback() {
        bail!(
            "the metrics address {address} is not a loopback address: metrics are served on loopback only"
        );
    }
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))?;
    let bound = listener
        .local_addr()
        .context("cannot read the metrics address")?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(CONNECTION_DEADLINE, answer(stream, &shared))
                            .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!("a metrics request failed: {e}"),
                            Err(_) => tracing::debug!("a metrics client was too slow"),
                        }
                    });
                }
                // Out of file descriptors, say: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    {
        let mut reader = (&mut stream).take(MAX_REQUEST);
        while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
            if reader.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (status, kind, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => {
            let snapshot = shared.lock().clone();
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                render(&snapshot),
            )
        }
        (Some("GET"), Some(_)) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric = Counter::<u64>::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

/// The rollout metrics of `snapshot`: swap durations, results and downtime, each cluster's
/// rollout state, and the pause.
fn rollouts(registry: &mut Registry, snapshot: &Snapshot) {
    // The snapshot keeps every duration of this process, so the histogram is rebuilt whole
    // on each scrape and stays monotonic as long as the process lives.
    let durations = Histogram::new(SWAP_DURATION_BUCKETS);
    for seconds in &snapshot.swap_durations {
        durations.observe(*seconds);
    }
    registry.register(
        "slipway_swap_duration_seconds",
        "How long finished image swaps took, from planned to committed or rolled back",
        durations,
    );
    let results: Family<Labels, Counter<u64>> = Family::default();
    for result in SWAP_RESULTS {
        results
            .get_or_create(&vec![("result", result.to_owned())])
            .inc_by(0);
    }
    for (result, count) in &snapshot.swap_results {
        results
            .get_or_create(&vec![("result", result.clone())])
            .inc_by(*count);
    }
    registry.register(
        "slipway_swaps",
        "Finished image swaps by result: committed, rolled-back or aborted",
        results,
    );
    let downtime: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    for (node, seconds) in &snapshot.downtime {
        downtime
            .get_or_create(&vec![("node", node.clone())])
            .set(*seconds);
    }
    registry.register(
        "slipway_node_downtime_seconds",
        "How long the node's last image swap kept it down",
        downtime,
    );
    let states: Family<Labels, Gauge> = Family::default();
    for rollout in &snapshot.rollouts {
        for state in ROLLOUT_STATES {
            states
                .get_or_create(&vec![
                    ("cluster", rollout.cluster.clone()),
                    ("state", state.to_owned()),
                ])
                .set(i64::from(rollout.state == state));
        }
    }
    registry.register(
        "slipway_rollout_state",
        "1 for the state of the cluster's rollout: done, rolling, waiting, paused, failed, aborted, refused or idle",
        states,
    );
    let slots: Family<Labels, Gauge> = Family::default();
    let reachable: Family<Labels, Gauge> = Family::default();
    for rollout in &snapshot.rollouts {
        for slot in &rollout.slots {
            slots
                .get_or_create(&vec![
                    ("cluster", rollout.cluster.clone()),
                    ("slot", slot.index.to_string()),
                    ("host", slot.host.clone()),
                    ("node", slot.node.clone()),
                ])
                .set(slot.since);
        }
        reachable
            .get_or_create(&vec![("cluster", rollout.cluster.clone())])
            .set(i64::from(rollout.fleet_problem.is_empty()));
    }
    registry.register(
        "slipway_fleet_slot_since_seconds",
        "When the fleet lock slot was taken (Unix seconds), by cluster, slot, holding host and node",
        slots,
    );
    registry.register(
        "slipway_fleet_store_up",
        "1 when the fleet lock store answered the last read of the cluster's slots",
        reachable,
    );
    let paused = Gauge::<i64>::default();
    paused.set(i64::from(snapshot.rollout_paused));
    registry.register(
        "slipway_rollout_paused",
        "1 while rollouts on this host are paused (by an operator, or after a host failure)",
        paused,
    );
}

/// The metrics of `snapshot`, encoded.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    let states: Family<Labels, Gauge> = Family::default();
    let ready: Family<Labels, Gauge> = Family::default();
    let beacon: Family<Labels, Gauge> = Family::default();
    let uptime: Family<Labels, Gauge> = Family::default();
    for state in NodeState::ALL {
        let state = state.as_str();
        let count = snapshot.nodes.values().filter(|n| n.state == state).count();
        states
            .get_or_create(&vec![("state", state.to_owned())])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    // A surge's replacement (`NODE/next`) counts among the VMs by state, not as a node.
    for node in snapshot.nodes.values().filter(|n| !n.name.contains('/')) {
        let labels = vec![
            ("node", node.name.clone()),
            ("cluster", node.cluster.clone()),
            ("role", node.role.clone()),
        ];
        ready
            .get_or_create(&labels)
            .set(i64::from(node.state.parse().is_ok_and(NodeState::is_up)));
        let name = vec![("node", node.name.clone())];
        beacon.get_or_create(&name).set(node.last_beacon);
        uptime
            .get_or_create(&name)
            .set(i64::try_from(node.uptime).unwrap_or(i64::MAX));
    }
    registry.register("slipway_nodes", "Node VMs by state", states);
    registry.register("slipway_node_ready", "1 when the node reports ready", ready);
    registry.register(
        "slipway_node_last_beacon_timestamp_seconds",
        "When the node's last beacon came (Unix time; 0: never)",
        beacon,
    );
    registry.register(
        "slipway_node_guest_uptime_seconds",
        "The guest's uptime in its last beacon",
        uptime,
    );
    // One series per followed channel, labelled by the OS of the nodes it serves.
    let followed = [
        (
            "linux",
            &snapshot.image,
            &snapshot.channel,
            snapshot.channel_verified,
        ),
        (
            "windows",
            &snapshot.windows_image,
            &snapshot.windows_channel,
            snapshot.windows_channel_verified,
        ),
    ];
    let followed = followed
        .into_iter()
        .filter(|(os, _, state, _)| *os == "linux" || !state.is_empty());
    let image: Family<Labels, Gauge> = Family::default();
    let channel: Family<Labels, Gauge> = Family::default();
    let verified: Family<Labels, Gauge> = Family::default();
    for (os, shown, state, when) in followed {
        let mut parts = shown.split_whitespace();
        if let (Some(name), Some(version), Some(digest)) =
            (parts.next(), parts.next(), parts.next())
        {
            image
                .get_or_create(&vec![
                    ("os", os.to_owned()),
                    ("name", name.to_owned()),
                    ("version", version.to_owned()),
                    ("digest", digest.to_owned()),
                ])
                .set(1);
        }
        for known in ["fresh", "stale", "refused", "expired", "unknown"] {
            channel
                .get_or_create(&vec![("os", os.to_owned()), ("state", known.to_owned())])
                .set(i64::from(state.as_str() == known));
        }
        verified
            .get_or_create(&vec![("os", os.to_owned())])
            .set(when);
    }
    registry.register(
        "slipway_image_info",
        "The verified image each channel names (os: the nodes it serves, linux or windows)",
        image,
    );
    registry.register(
        "slipway_channel_state",
        "1 for each channel's state: fresh, stale (unreadable), refused (failed a check), expired or unknown",
        channel,
    );
    registry.register(
        "slipway_channel_verified_timestamp_seconds",
        "When each channel was last read and verified (Unix time; 0: never)",
        verified,
    );
    let problem = Gauge::<i64>::default();
    problem.set(i64::from(!snapshot.problem.is_empty()));
    registry.register(
        "slipway_problem",
        "1 while something keeps the supervisor from its job (see slipwayd status)",
        problem,
    );
    let c = &snapshot.counters;
    counter(
        &mut registry,
        "slipway_reconcile_passes",
        "Reconcile passes run",
        c.passes,
    );
    counter(&mut registry, "slipway_beacons", "Beacons heard", c.beacons);
    counter(
        &mut registry,
        "slipway_beacon_mismatches",
        "Beacons whose image or kubeadm digest differed from what was sent",
        c.mismatches,
    );
    counter(
        &mut registry,
        "slipway_image_refusals",
        "Times the channel's image was refused (signature, digest, channel checks)",
        c.refusals,
    );
    counter(
        &mut registry,
        "slipway_vm_starts",
        "Node VMs started",
        c.starts,
    );
    rollouts(&mut registry, snapshot);
    let rss = Gauge::<f64, AtomicU64>::default();
    rss.set(resident_bytes());
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory of slipwayd",
        rss,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// slipwayd's resident set size, from /proc/self/statm (pages of 4 KiB on x86-64).
fn resident_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // Exact below 2^53 bytes.
    #[allow(clippy::cast_precision_loss)]
    let bytes = (pages * 4096) as f64;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeInfo;

    #[test]
    fn every_node_and_state_is_counted_and_label_values_are_escaped() {
        let mut snapshot = Snapshot {
            image: "tiny-linux 2026.11.0 sha256:ab".into(),
            ..Snapshot::default()
        };
        snapshot.channel = "stale".into();
        snapshot.channel_verified = 1_700_000_000;
        for (name, state) in [
            ("cp-1", "ready"),
            ("w-1", "ready"),
            ("w\"2", "starting"),
            ("w-3", "crashloop"),
        ] {
            snapshot.nodes.insert(
                name.into(),
                NodeInfo {
                    name: name.into(),
                    state: state.into(),
                    ..NodeInfo::default()
                },
            );
        }
        snapshot.counters.beacons = 7;
        let text = render(&snapshot);
        assert!(
            text.contains("slipway_nodes{state=\"ready\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("slipway_nodes{state=\"starting\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("slipway_beacons_total 7\n"), "{text}");
        assert!(
            text.contains("slipway_nodes{state=\"crashloop\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("slipway_channel_state{os=\"linux\",state=\"stale\"} 1\n")
                && text.contains("slipway_channel_state{os=\"linux\",state=\"fresh\"} 0\n")
                && !text.contains("os=\"windows\""),
            "{text}"
        );
        assert!(
            text.contains("slipway_channel_verified_timestamp_seconds{os=\"linux\"} 1700000000\n"),
            "{text}"
        );
        // A host following a Windows channel too: its image and state, labelled.
        snapshot.windows_image = "windows-node 2026.11.0 sha256:cd".into();
        snapshot.windows_channel = "fresh".into();
        let text = render(&snapshot);
        assert!(
            text.contains("slipway_image_info{os=\"windows\",name=\"windows-node\",version=\"2026.11.0\",digest=\"sha256:cd\"} 1\n")
                && text.contains("slipway_channel_state{os=\"windows\",state=\"fresh\"} 1\n")
                && text.contains("slipway_image_info{os=\"linux\",name=\"tiny-linux\""),
            "{text}"
        );
        assert!(text.contains("node=\"w\\\"2\""), "{text}");
        assert!(text.contains("version=\"2026.11.0\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn swaps_rollouts_and_downtime_are_encoded() {
        let mut snapshot = Snapshot {
            swap_durations: vec![4.0, 12.5, 600.0, 700.0],
            rollout_paused: true,
            ..Snapshot::default()
        };
        snapshot.swap_results.insert("committed".into(), 3);
        snapshot.swap_results.insert("rolled-back".into(), 1);
        snapshot.downtime.insert("cp-1".into(), 41.5);
        snapshot.rollouts.push(crate::api::RolloutInfo {
            cluster: "lab".into(),
            state: "rolling".into(),
            slots: vec![crate::api::SlotInfo {
                index: 0,
                host: "hci-02".into(),
                node: "w-3".into(),
                since: 1_700_000_123,
            }],
            ..Default::default()
        });
        snapshot.rollouts.push(crate::api::RolloutInfo {
            cluster: "edge".into(),
            state: "waiting".into(),
            fleet_problem: "the fleet lock store is unreachable".into(),
            ..Default::default()
        });
        let text = render(&snapshot);
        let has = |line: &str| assert!(text.contains(line), "no {line:?} in\n{text}");
        has("# TYPE slipway_swap_duration_seconds histogram\n");
        has("slipway_swap_duration_seconds_count 4\n");
        has("slipway_swap_duration_seconds_sum 1316.5\n");
        // Buckets are cumulative; 700 s is above the last bound and counts only in +Inf.
        has("slipway_swap_duration_seconds_bucket{le=\"5.0\"} 1\n");
        has("slipway_swap_duration_seconds_bucket{le=\"10.0\"} 1\n");
        has("slipway_swap_duration_seconds_bucket{le=\"20.0\"} 2\n");
        has("slipway_swap_duration_seconds_bucket{le=\"300.0\"} 2\n");
        has("slipway_swap_duration_seconds_bucket{le=\"600.0\"} 3\n");
        has("slipway_swap_duration_seconds_bucket{le=\"+Inf\"} 4\n");
        has("# TYPE slipway_swaps counter\n");
        has("slipway_swaps_total{result=\"committed\"} 3\n");
        has("slipway_swaps_total{result=\"rolled-back\"} 1\n");
        has("slipway_swaps_total{result=\"aborted\"} 0\n");
        has("slipway_node_downtime_seconds{node=\"cp-1\"} 41.5\n");
        has("slipway_rollout_state{cluster=\"lab\",state=\"rolling\"} 1\n");
        has(
            "slipway_fleet_slot_since_seconds{cluster=\"lab\",slot=\"0\",host=\"hci-02\",node=\"w-3\"} 1700000123\n",
        );
        has("slipway_fleet_store_up{cluster=\"lab\"} 1\n");
        has("slipway_fleet_store_up{cluster=\"edge\"} 0\n");
        for state in [
            "done", "waiting", "paused", "failed", "aborted", "refused", "idle",
        ] {
            has(&format!(
                "slipway_rollout_state{{cluster=\"lab\",state=\"{state}\"}} 0\n"
            ));
        }
        has("slipway_rollout_paused 1\n");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn without_swaps_the_histogram_is_empty_and_nothing_is_paused() {
        let text = render(&Snapshot::default());
        assert!(
            text.contains("slipway_swap_duration_seconds_count 0\n")
                && text.contains("slipway_swap_duration_seconds_bucket{le=\"+Inf\"} 0\n")
                && text.contains("slipway_rollout_paused 0\n")
                && !text.contains("slipway_rollout_state{"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn metrics_are_refused_off_loopback() {
        let e = serve("0.0.0.0:0".parse().unwrap(), Shared::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
    }
}
