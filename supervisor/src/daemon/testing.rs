//! Test support for the daemon's units: node images placed in a store as a pull leaves them
//! (a manifest and a VHDX file in the image's directory), of either OS, and a supervisor over a
//! Hyper-V host.toml with Linux and Windows nodes, driven without VMs.

use std::path::Path;

use images::manifest::Os;
use images::store::{Store, StoredImage};

use super::{Daemon, Event};
use crate::config::HostConfig;
use crate::driver::Driver;
use crate::driver::testing::NoVms;
use crate::model::Digest;

/// Image `digest` (of `os`) placed in the store at `root` as a pull admits one; the store
/// reads it back.
pub fn put(root: &Path, digest: &Digest, os: Os, version: &str) -> StoredImage {
    let name = match os {
        Os::Linux => "linux-node",
        Os::Windows => "windows-node",
    };
    let manifest = tests::image::manifest(os, name, version, Some("1.32.10"));
    let dir = root.join("images").join(digest.as_str().replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}-{version}.manifest.json")),
        manifest.to_json(),
    )
    .unwrap();
    std::fs::write(dir.join(&manifest.disk.file), b"vhdx").unwrap();
    let store = Store::open(root).unwrap();
    store.get(digest.as_str()).unwrap().unwrap()
}

/// A Hyper-V host's config: cluster lab with `nodes` (name, role, os), following channel
/// `stable` and, with `windows`, `stable-windows`; rollouts of `max_unavailable`.
pub fn hyperv_config(state: &Path, nodes: &[(&str, &str, &str)], max_unavailable: u32) -> String {
    let mut text = format!(
        "format = 1\n[host]\nname = \"hv-01\"\nstate-dir = \"{}\"\n\
         [source]\nreference = \"oci:/srv/nodes\"\nchannel = \"stable\"\n\
         windows-channel = \"stable-windows\"\nkeys = [\"/k.pub\"]\n\
         [hypervisor]\nkind = \"hyperv\"\nswitch = \"Slipway\"\nroot = 'D:\\Slipway'\n\
         executor = {{ ssh = \"slipway@hv-01\" }}\n\
         [[clusters]]\nname = \"lab\"\nkubernetes = \"1.32.10\"\n\
         control-plane-endpoint = \"10.44.0.10:6443\"\npod-cidr = \"10.244.0.0/16\"\n\
         service-cidr = \"10.96.0.0/12\"\n\
         network = {{ cidr = \"10.44.0.0/24\", gateway = \"10.44.0.1\", pool = \"10.44.0.10-10.44.0.20\" }}\n\
         [clusters.rollout]\nmax-unavailable = {max_unavailable}\n",
        state.display(),
    );
    for (name, role, os) in nodes {
        text.push_str(&format!(
            "[[nodes]]\nname = \"{name}\"\ncluster = \"lab\"\nrole = \"{role}\"\nos = \"{os}\"\n\
             memory = \"1G\"\nstate-disk = \"1G\"\n"
        ));
    }
    text
}

/// A supervisor without VMs over `text` (a host.toml) written in `dir`.
pub fn daemon(dir: &Path, text: &str) -> Daemon<NoVms> {
    daemon_over(dir, text, NoVms::default())
}

/// A supervisor over `text` (a host.toml) written in `dir`, driving `driver`.
pub fn daemon_over<D: Driver>(dir: &Path, text: &str, driver: D) -> Daemon<D> {
    daemon_heard(dir, text, driver).0
}

/// [`daemon_over`], with the inbox its tasks send their events to.
pub fn daemon_heard<D: Driver>(
    dir: &Path,
    text: &str,
    driver: D,
) -> (Daemon<D>, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let path = dir.join("host.toml");
    std::fs::write(&path, text).unwrap();
    let config = HostConfig::parse(&path, text).unwrap();
    let (events, inbox) = tokio::sync::mpsc::unbounded_channel();
    (Daemon::new(&path, config, driver, events).unwrap(), inbox)
}
