//! The pod and container of a process from `/proc/PID/cgroup`, as the kubelet lays cgroups out
//! with either driver:
//! - cgroupfs: `/kubepods/<qos>/pod<uid>/<container id>` (Guaranteed pods have no `<qos>`);
//! - systemd: `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice/
//!   cri-containerd-<id>.scope` (CRI-O: `crio-<id>.scope`, docker: `docker-<id>.scope`).
//!
//! Pure text parsing; the caller reads the file.

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
