//! The file fallback, for nodes where no runtime socket answers: the runtime's OCI bundles on
//! disk. Each bundle's `config.json` carries the Kubernetes names in its annotations (containerd:
//! `io.kubernetes.cri.*`, CRI-O: `io.kubernetes.pod.*`/`io.kubernetes.container.name`) and the
//! sandbox's network namespace path, which names the netns inode even with no process left.
//! These are runtime internals, so this is only a fallback: it knows no pod IPs.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{Container, Inventory, Sandbox, netns_inode};

/// Where containerd (k8s.io namespace) and CRI-O keep their bundles.
pub const BUNDLE_DIRS: &[&str] = &[
    "/run/containerd/io.containerd.runtime.v2.task/k8s.io",
    "/run/containers/storage/overlay-containers",
];

/// Overrides [`BUNDLE_DIRS`] (`:`-separated), for runtimes with another state directory.
pub const BUNDLES_ENV: &str = "NETLAT_CRI_BUNDLES";

/// The bundle dirs to read: [`BUNDLES_ENV`] when set, else [`BUNDLE_DIRS`].
pub fn configured() -> Vec<PathBuf> {
    match std::env::var_os(BUNDLES_ENV) {
        Some(v) => std::env::split_paths(&v).collect(),
        None => BUNDLE_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// The bundle dirs that exist on this node.
pub fn present(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter().filter(|d| d.is_dir()).cloned().collect()
}

/// Every sandbox and container whose bundle is in `dirs`.
pub fn inventory(dirs: &[PathBuf]) -> Inventory {
    let mut inv = Inventory::default();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            // containerd: <dir>/<id>/config.json; CRI-O: <dir>/<id>/userdata/config.json.
            let cfg = [
                e.path().join("config.json"),
                e.path().join("userdata/config.json"),
            ]
            .into_iter()
            .find_map(|p| fs::read_to_string(p).ok());
            if let Some(text) = cfg {
                // A sandbox whose spec names no netns path (the runtime made a fresh one): its
                // init process's namespace (containerd writes the pid next to the spec).
                let pid_netns = fs::read_to_string(e.path().join("init.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .and_then(|p| netns_inode(Path::new(&format!("/proc/{p}/ns/net"))));
                add_bundle(&mut inv, &id, &text, netns_inode, pid_netns);
            }
        }
    }
    inv
}

/// Adds the sandbox or container of one bundle's `config.json`.
pub fn add_bundle(
    inv: &mut Inventory,
    id: &str,
    config: &str,
    inode: fn(&Path) -> Option<u32>,
    pid_netns: Option<u32>,
) {
    let Ok(v) = serde_json::from_str::<Value>(config) else {
        return;
    };
    let a = &v["annotations"];
    let s = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
    let kind =
        s("io.kubernetes.cri.container-type").or_else(|| s("io.kubernetes.cri-o.ContainerType"));
    match kind.as_deref() {
        Some("sandbox") => {
            let (Some(namespace), Some(name), Some(uid)) = (
                s("io.kubernetes.cri.sandbox-namespace")
                    .or_else(|| s("io.kubernetes.pod.namespace")),
                s("io.kubernetes.cri.sandbox-name").or_else(|| s("io.kubernetes.pod.name")),
                s("io.kubernetes.cri.sandbox-uid").or_else(|| s("io.kubernetes.pod.uid")),
            ) else {
                return;
            };
            let net = v
                .pointer("/linux/namespaces")
                .and_then(Value::as_array)
                .and_then(|ns| ns.iter().find(|n| n["type"] == "network"));
            // A network namespace entry without a path is a fresh one the runtime made; none at
            // all means the host's (hostNetwork).
            let host_network = net.is_none();
            let netns = net.and_then(|n| match n["path"].as_str() {
                Some(p) => inode(Path::new(p)),
                None => pid_netns,
            });
            inv.sandboxes.push(Sandbox {
                id: id.to_string(),
                namespace,
                name,
                uid,
                netns,
                ips: Vec::new(),
                host_network,
            });
        }
        Some("container") => {
            let (Some(name), Some(sandbox_id)) = (
                s("io.kubernetes.cri.container-name").or_else(|| s("io.kubernetes.container.name")),
                s("io.kubernetes.cri.sandbox-id").or_else(|| s("io.kubernetes.cri-o.SandboxID")),
            ) else {
                return;
            };
            inv.containers.push(Container {
                id: id.to_string(),
                sandbox_id,
                name,
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_inode(p: &Path) -> Option<u32> {
        (p == Path::new("/var/run/netns/cni-1234")).then_some(4026532999)
    }

    #[test]
    fn containerd_bundles_name_sandbox_and_container() {
        let mut inv = Inventory::default();
        let sandbox = r#"{"annotations":{
            "io.kubernetes.cri.container-type":"sandbox",
            "io.kubernetes.cri.sandbox-name":"web-0",
            "io.kubernetes.cri.sandbox-namespace":"shop",
            "io.kubernetes.cri.sandbox-uid":"u-1"},
          "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1234"}]}}"#;
        let container = r#"{"annotations":{
            "io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.container-name":"app",
            "io.kubernetes.cri.sandbox-id":"sb1"}}"#;
        add_bundle(&mut inv, "sb1", sandbox, fake_inode, None);
        add_bundle(&mut inv, "c1", container, fake_inode, None);
        add_bundle(&mut inv, "junk", "{not json", fake_inode, None);
        assert_eq!(inv.sandboxes.len(), 1);
        let sb = &inv.sandboxes[0];
        assert_eq!((sb.namespace.as_str(), sb.name.as_str()), ("shop", "web-0"));
        assert_eq!(sb.netns, Some(4026532999));
        assert!(!sb.host_network);
        assert_eq!(inv.containers[0].sandbox_id, "sb1");
        assert_eq!(inv.containers[0].name, "app");
    }

    #[test]
    fn crio_bundles_and_host_network_sandboxes() {
        let mut inv = Inventory::default();
        let sandbox = r#"{"annotations":{
            "io.kubernetes.cri-o.ContainerType":"sandbox",
            "io.kubernetes.pod.name":"agent-x",
            "io.kubernetes.pod.namespace":"kube-system",
            "io.kubernetes.pod.uid":"u-2"},
          "linux":{"namespaces":[{"type":"pid"}]}}"#;
        add_bundle(&mut inv, "sb2", sandbox, fake_inode, Some(7));
        let sb = &inv.sandboxes[0];
        assert!(sb.host_network);
        assert_eq!(sb.netns, None);
        assert_eq!(sb.uid, "u-2");
    }
}
