//! Whether a node is healthy as it was started: its beacon against the image it booted and
//! the kubeadm documents it was sent.

use images::store::StoredImage;

use crate::beacon::Beacon;
use crate::model::NodeState;

/// The image a VM was started from: what its beacons must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Booted {
    pub(super) digest: String,
    pub(super) name: String,
    pub(super) version: String,
    pub(super) root_hash: String,
}

impl From<&StoredImage> for Booted {
    fn from(image: &StoredImage) -> Booted {
        Booted {
            digest: image.digest.clone(),
            name: image.manifest.name.clone(),
            version: image.manifest.version.clone(),
            root_hash: image.manifest.root_hash().to_owned(),
        }
    }
}

/// Whether a beacon shows the node as it was started: its image's root, its own documents,
/// and its cluster's endpoint reachable. Returns the state and, when not ready, why.
pub(super) fn judge(
    beacon: &Beacon,
    booted: Option<&Booted>,
    documents: &str,
) -> (NodeState, String) {
    if let Some(booted) = booted
        && beacon.root_hash != booted.root_hash
    {
        return (
            NodeState::Mismatch,
            format!(
                "it booted root {} ({} {}), not the root of {} {} it was started from",
                beacon.root_hash, beacon.image, beacon.version, booted.name, booted.version
            ),
        );
    }
    // An image without a verity root (Windows) is known by its name and version alone.
    if let Some(booted) = booted
        && booted.root_hash.is_empty()
        && (beacon.image != booted.name || beacon.version != booted.version)
    {
        return (
            NodeState::Mismatch,
            format!(
                "it says it runs {} {}, not {} {} it was started from",
                beacon.image, beacon.version, booted.name, booted.version
            ),
        );
    }
    if beacon.kubeadm_sha256 != documents {
        return (
            NodeState::Mismatch,
            format!(
                "it received kubeadm documents with sha256 {}; it was sent {documents}",
                beacon.kubeadm_sha256
            ),
        );
    }
    if beacon.event != "ready" {
        let why = if beacon.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", beacon.reason)
        };
        return (
            NodeState::Starting,
            format!("it says {}{why}", beacon.event),
        );
    }
    if beacon.endpoint != "reachable" {
        return (
            NodeState::Unreachable,
            "it cannot reach its cluster's control-plane endpoint".into(),
        );
    }
    if beacon.host == "unreachable" {
        return (
            NodeState::Unreachable,
            "it cannot reach the host at its gateway address".into(),
        );
    }
    (NodeState::Ready, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon() -> Beacon {
        Beacon {
            event: "ready".into(),
            image: "tiny-linux".into(),
            version: "2026.11.0".into(),
            root_hash: "aa".into(),
            kubeadm_sha256: "dd".into(),
            address: "10.44.0.10/24".into(),
            endpoint: "reachable".into(),
            host: "reachable".into(),
            uptime: 30.0,
            node_id: "0d1c217e-2311-4c12-8715-d73b93a5d65d".into(),
            boot_count: 1,
            state_disk: "formatted".into(),
            reason: String::new(),
        }
    }

    #[test]
    fn an_image_without_a_verity_root_is_known_by_name_and_version() {
        let windows = Booted {
            name: "windows-node".into(),
            root_hash: String::new(),
            ..booted()
        };
        let mut said = Beacon {
            image: "windows-node".into(),
            root_hash: String::new(),
            ..beacon()
        };
        assert_eq!(judge(&said, Some(&windows), "dd").0, NodeState::Ready);
        said.version = "2026.10.0".into();
        let (state, why) = judge(&said, Some(&windows), "dd");
        assert_eq!(state, NodeState::Mismatch, "{why}");
        assert!(why.contains("windows-node 2026.10.0"), "{why}");
        said.version = "2026.11.0".into();
        said.event = "failed".into();
        said.reason = "join: kubeadm join failed 3 times".into();
        assert_eq!(
            judge(&said, Some(&windows), "dd"),
            (
                NodeState::Starting,
                "it says failed: join: kubeadm join failed 3 times".into()
            )
        );
    }

    fn booted() -> Booted {
        Booted {
            digest: "sha256:11".into(),
            name: "tiny-linux".into(),
            version: "2026.11.0".into(),
            root_hash: "aa".into(),
        }
    }

    #[test]
    fn a_beacon_is_ready_only_with_its_own_root_documents_and_endpoint() {
        assert_eq!(judge(&beacon(), Some(&booted()), "dd").0, NodeState::Ready);
        let other_root = Beacon {
            root_hash: "bb".into(),
            ..beacon()
        };
        let (state, reason) = judge(&other_root, Some(&booted()), "dd");
        assert_eq!(state, NodeState::Mismatch);
        assert!(reason.contains("root bb"), "{reason}");
        let (state, reason) = judge(&beacon(), Some(&booted()), "ee");
        assert_eq!(state, NodeState::Mismatch);
        assert!(reason.contains("sha256 dd; it was sent ee"), "{reason}");
        let cut_off = Beacon {
            endpoint: "unreachable".into(),
            ..beacon()
        };
        assert_eq!(
            judge(&cut_off, Some(&booted()), "dd").0,
            NodeState::Unreachable
        );
        let no_host = Beacon {
            host: "unreachable".into(),
            ..beacon()
        };
        let (state, reason) = judge(&no_host, Some(&booted()), "dd");
        assert_eq!(state, NodeState::Unreachable);
        assert!(reason.contains("host"), "{reason}");
    }
}
