//! A cluster's pod network (`cni` in host.toml): the add-on its first control plane applies
//! after `kubeadm init`. Flannel by default (its VXLAN backend is the one Windows workers can
//! join later); `none` for a cluster that brings its own and applies it itself.

use std::fmt;

use serde::Deserialize;

/// The pod network add-on of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    /// Flannel, from the manifest pinned in the node image, its network the cluster's
    /// `pod-cidr`.
    #[default]
    Flannel,
    /// Nothing: the nodes stay NotReady until the operator applies a pod network.
    None,
}

impl Cni {
    /// Its name in host.toml and in the seed's `cni` file.
    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Flannel => "flannel",
            Cni::None => "none",
        }
    }
}

impl fmt::Display for Cni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Cni;
    use crate::config::HostConfig;

    const EXAMPLE: &str = include_str!("../../examples/host.toml");

    #[test]
    fn flannel_unless_a_cluster_says_none_and_nothing_else_is_accepted() {
        let config = HostConfig::parse(Path::new("host.toml"), EXAMPLE).unwrap();
        assert_eq!(config.clusters["lab"].cni, Cni::Flannel);
        let with = |value: &str| {
            EXAMPLE.replace(
                "pod-cidr = \"10.244.0.0/16\"",
                &format!("pod-cidr = \"10.244.0.0/16\"\ncni = {value}"),
            )
        };
        let none = HostConfig::parse(Path::new("host.toml"), &with("\"none\"")).unwrap();
        assert_eq!(none.clusters["lab"].cni, Cni::None);
        let err = HostConfig::parse(Path::new("host.toml"), &with("\"calico\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("host.toml:") && err.contains("calico") && err.contains("flannel"),
            "{err}"
        );
    }
}
