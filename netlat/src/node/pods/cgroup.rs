//! The pod and container of a process from `/proc/PID/cgroup`, as the kubelet lays cgroups out
//! with either driver:
//! - cgroupfs: `/kubepods/<qos>/pod<uid>/<container id>` (Guaranteed pods have no `<qos>`);
//! - systemd: `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice/
//!   cri-containerd-<id>.scope` (CRI-O: `crio-<id>.scope`, docker: `docker-<id>.scope`).
//!
//! Text parsing is pure (the caller reads the file); [`scan`] walks the cgroup v2 tree for the
//! container cgroups by id, so a process that has exited is still placed by the cgroup id the
//! kernel saw it connect from.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Where a process sits in the kubelet's cgroup tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupPod {
    /// The pod UID, with dashes (the systemd driver writes underscores).
    pub pod_uid: String,
    /// The container id, when the process is in a container's cgroup (not the pod's own).
    pub container_id: Option<String>,
}

/// The pod of the first line of a `/proc/PID/cgroup` file that names one (v1 lists one line per
/// hierarchy, v2 one `0::` line; all name the same pod).
pub fn parse(cgroup_file: &str) -> Option<CgroupPod> {
    cgroup_file
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find_map(parse_path)
}

/// The pod of one cgroup path.
pub fn parse_path(path: &str) -> Option<CgroupPod> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (at, uid) = segs
        .iter()
        .enumerate()
        .find_map(|(i, s)| pod_uid(s).map(|u| (i, u)))?;
    let container_id = segs.get(at + 1).and_then(|s| container_id(s));
    Some(CgroupPod {
        pod_uid: uid,
        container_id,
    })
}

/// Mount points of the cgroup v2 hierarchy that show it from its root, from a mountinfo text
/// (`… 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`): `/sys/fs/cgroup` on a
/// v2 host, `/sys/fs/cgroup/unified` on a hybrid one, a hostPath mount of it in a container.
pub fn v2_roots(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (fields, fstype) = l.split_once(" - ")?;
            if !fstype.starts_with("cgroup2 ") {
                return None;
            }
            let mut f = fields.split(' ');
            // A mount of a subtree cannot see the pods; from inside a cgroup namespace, the
            // host's tree (a hostPath mount) shows as an ancestor of the namespace's root.
            let root = f.nth(3)?;
            (root == "/" || root.starts_with("/..")).then(|| f.next().map(PathBuf::from))?
        })
        .collect()
}

/// Directories a [`scan`] visits at most; the rest of a larger tree is left (and said).
pub const SCAN_LIMIT: usize = 50_000;
/// Levels below the root walked whatever their names (nested kubelets: kind, systemd slices).
const OPEN_DEPTH: usize = 4;

/// What a [`scan`] found: pod and container cgroups by id, and whether it stopped at the limit.
#[derive(Debug, Default)]
pub struct Scan {
    pub by_id: HashMap<u64, CgroupPod>,
    pub truncated: bool,
}

/// The pod and container cgroups under cgroup v2 mount `root`, by cgroup id (the inode of the
/// directory: what `bpf_get_current_cgroup_id` returns on 64-bit kernels). Below
/// [`OPEN_DEPTH`] only paths with `kubepods` in them are walked; no deeper than a container.
pub fn scan(root: &Path, out: &mut Scan) {
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut visited = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            visited += 1;
            if visited > SCAN_LIMIT {
                out.truncated = true;
                return;
            }
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
            let place = parse_path(&rel);
            if let Some(p) = &place
                && let Ok(m) = e.metadata()
            {
                out.by_id.insert(m.ino(), p.clone());
            }
            let deeper = match &place {
                // A container's own sub-cgroups (systemd in a pod) are the container's too,
                // but rare: the container level is enough.
                Some(p) => p.container_id.is_none(),
                None => depth < OPEN_DEPTH || rel.contains("kubepods"),
            };
            if deeper && depth < 16 {
                stack.push((path, depth + 1));
            }
        }
    }
}

fn pod_uid(seg: &str) -> Option<String> {
    // systemd: kubepods-besteffort-pod<uid_with_underscores>.slice (or kubepods-pod<uid>.slice)
    if let Some(slice) = seg.strip_suffix(".slice")
        && slice.starts_with("kubepods")
        && let Some((_, uid)) = slice.rsplit_once("-pod")
        && plausible_uid(uid)
    {
        return Some(uid.replace('_', "-"));
    }
    // cgroupfs: pod<uid>
    seg.strip_prefix("pod")
        .filter(|u| plausible_uid(u))
        .map(str::to_string)
}

/// A UID is 36 characters of hex and dashes (or underscores in systemd unit names).
fn plausible_uid(u: &str) -> bool {
    u.len() == 36
        && u.chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
}

fn container_id(seg: &str) -> Option<String> {
    let id = match seg.strip_suffix(".scope") {
        Some(unit) => {
            // conmon (CRI-O's monitor) is not the container.
            if unit.starts_with("crio-conmon-") {
                return None;
            }
            ["cri-containerd-", "crio-", "docker-", "containerd-"]
                .iter()
                .find_map(|p| unit.strip_prefix(p))?
        }
        None => seg,
    };
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-0000-4111-8222-333344445555";
    const CID: &str = "3f7a2c1d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";

    #[test]
    fn cgroupfs_driver_v1_and_v2() {
        let v2 = format!("0::/kubepods/besteffort/pod{UID}/{CID}\n");
        let p = parse(&v2).unwrap();
        assert_eq!(p.pod_uid, UID);
        assert_eq!(p.container_id.as_deref(), Some(CID));
        let v1 = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
        );
        assert_eq!(parse(&v1).unwrap().container_id.as_deref(), Some(CID));
        // Guaranteed QoS: no class segment.
        let g = format!("0::/kubepods/pod{UID}/{CID}");
        assert_eq!(parse(&g).unwrap().pod_uid, UID);
    }

    #[test]
    fn systemd_driver_with_each_runtime() {
        let u = UID.replace('-', "_");
        for (scope, want) in [
            (format!("cri-containerd-{CID}.scope"), Some(CID)),
            (format!("crio-{CID}.scope"), Some(CID)),
            (format!("docker-{CID}.scope"), Some(CID)),
            (format!("crio-conmon-{CID}.scope"), None),
        ] {
            let line = format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/{scope}\n"
            );
            let p = parse(&line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(p.pod_uid, UID, "{line}");
            assert_eq!(p.container_id.as_deref(), want, "{line}");
        }
        // Guaranteed pods sit directly under kubepods.slice.
        let g = format!("0::/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{CID}.scope");
        assert_eq!(parse(&g).unwrap().pod_uid, UID);
    }

    #[test]
    fn cgroup_v2_roots_from_mountinfo() {
        let mi = "35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                  41 35 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                  42 35 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                  90 80 0:38 /kubepods/besteffort/podx /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                  91 80 0:38 / /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw\n\
                  92 80 0:38 /../../.. /host2 ro - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v2_roots(mi),
            [
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/host/sys/fs/cgroup"),
                PathBuf::from("/host2")
            ]
        );
    }

    /// A directory tree shaped like the kubelet's (plain directories: the walk only reads
    /// names and inodes): containers and pods are found by inode, other trees are not walked.
    #[test]
    fn scan_finds_pod_and_container_cgroups_by_inode() {
        let root = std::env::temp_dir().join(format!("netlat-cg-scan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let pod = root.join(format!("kubepods/besteffort/pod{UID}"));
        let ctr = pod.join(CID);
        let sd = root.join(format!(
            "kubepods.slice/kubepods-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        ));
        // Deep outside kubepods: not walked.
        let deep = root.join(format!("a/b/c/d/e/pod{UID}/{CID}"));
        for d in [&ctr, &sd, &deep] {
            fs::create_dir_all(d).unwrap();
        }
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let mut s = Scan::default();
        scan(&root, &mut s);
        let got = |p: &Path| s.by_id.get(&ino(p)).cloned();
        assert_eq!(got(&ctr).unwrap().container_id.as_deref(), Some(CID));
        assert_eq!(got(&pod).unwrap().container_id, None);
        assert_eq!(got(&pod).unwrap().pod_uid, UID);
        assert_eq!(got(&sd).unwrap().container_id.as_deref(), Some(CID));
        assert_eq!(got(&deep), None);
        assert_eq!(s.by_id.len(), 4, "{:?}", s.by_id);
        assert!(!s.truncated);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn processes_outside_pods_have_none() {
        for f in [
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "0::/\n",
            "0::/system.slice/containerd.service\n",
            // A pod-like name that is no UID.
            "0::/kubepods/besteffort/podcast/abc\n",
        ] {
            assert_eq!(parse(f), None, "{f}");
        }
        // The pod's own cgroup (a process not in any container's): the pod, no container.
        let p = parse(&format!("0::/kubepods/besteffort/pod{UID}\n")).unwrap();
        assert_eq!(p.container_id, None);
    }
}
