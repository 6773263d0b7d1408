//! A real container runtime for the pod lab: Debian's containerd (CRI plugin) + runc + the CNI
//! bridge/host-local plugins, started from its own config, root, state and socket in a
//! [`TempDir`], with a one-layer busybox image packed here from Debian's `busybox-static` (no
//! registry). Pods are made through CRI by [`Containerd`]'s own client, as the kubelet would.
//!
//! Everything it starts is stopped by PID and removed on drop, also when a test panics: pods
//! (through CRI while the runtime is up), containerd, the shims it started (found by the socket
//! address on their command line), mounts under the temp dir, the bridge and the pod cgroups.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::Channel;

use crate::{TempDir, sh};

/// The image every lab container and sandbox runs (`/bin/busybox` only).
pub const IMAGE: &str = "docker.io/library/netlat-busybox:1";
const BUSYBOX: &str = "/bin/busybox";
/// Where containerd's shims put their sockets, fixed at build time.
const SHIM_RUN_DIR: &str = "/run/containerd";

/// A pod made through CRI.
#[derive(Debug, Clone)]
pub struct Pod {
    pub sandbox_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Option<String>,
    /// Container name → id.
    pub containers: HashMap<String, String>,
    /// Its cgroup parent (removed on drop).
    cgroup_parent: String,
}

/// A running lab containerd.
pub struct Containerd {
    dir: TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    bridge: String,
    /// The pod network, `10.236.<n>.0/24`.
    pub subnet: String,
    rt: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
    pods: Vec<Pod>,
    /// Whether /run/containerd existed before (the shims put their sockets under it whatever
    /// the config says); if not, its empty leftovers are removed on drop.
    had_run_dir: bool,
}

/// What the lab needs from apt (`cargo xtask setup` installs them); the reason when missing.
pub fn missing_tools() -> Option<String> {
    for p in [
        "/usr/bin/containerd",
        "/usr/bin/ctr",
        "/usr/sbin/runc",
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
        BUSYBOX,
    ] {
        if !Path::new(p).exists() {
            return Some(format!(
                "{p} is missing (apt-get install containerd runc containernetworking-plugins busybox-static, or `cargo xtask setup`)"
            ));
        }
    }
    None
}

impl Containerd {
    /// Start containerd on a private socket with a CNI bridge on `10.236.<net>.0/24`.
    pub fn start(tag: &str, net: u8) -> Containerd {
        let dir = TempDir::new(tag);
        let d = dir.0.clone();
        let socket = d.join("containerd.sock");
        // The bridge name must fit IFNAMSIZ and be unique per run.
        let bridge = format!("nlc{}{net}", std::process::id() % 100_000);
        let subnet = format!("10.236.{net}.0/24");
        fs::create_dir_all(d.join("cni")).expect("cni dir");
        fs::write(
            d.join("cni/10-lab.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"lab","plugins":[{{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"dataDir":"{}"}}}},{{"type":"loopback"}}]}}"#,
                d.join("ipam").display()
            ),
        )
        .expect("cni config");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            d = d.display(),
        );
        fs::write(d.join("config.toml"), config).expect("containerd config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut c = Containerd {
            had_run_dir: Path::new(SHIM_RUN_DIR).exists(),
            dir,
            socket,
            child: None,
            bridge,
            subnet,
            rt,
            client: None,
            pods: Vec::new(),
        };
        c.run_daemon();
        c.import_image();
        c
    }

    /// Where the runtime keeps its OCI bundles (`<id>/config.json`, `<id>/rootfs`): what
    /// netlat's file fallback reads (`NETLAT_CRI_BUNDLES`).
    pub fn bundle_dir(&self) -> PathBuf {
        self.dir()
            .join("state/io.containerd.runtime.v2.task/k8s.io")
    }

    /// The CNI bridge the pods are on.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Start (or restart) the daemon and wait for CRI to answer.
    fn run_daemon(&mut self) {
        let log = fs::File::create(self.dir().join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if self.socket.exists() {
                let ch = self.rt.block_on(netlat_connect(&self.socket));
                if let Ok(ch) = ch {
                    let mut cl = RuntimeServiceClient::new(ch);
                    if self
                        .rt
                        .block_on(cl.version(VersionRequest::default()))
                        .is_ok()
                    {
                        self.client = Some(cl);
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < end,
                "containerd did not answer on {}: {}",
                self.socket.display(),
                fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the daemon (SIGTERM by PID); pods keep running, as when a node's runtime dies.
    pub fn stop_daemon(&mut self) {
        self.client = None;
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the child we started, by its PID.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the daemon again after [`Self::stop_daemon`].
    pub fn restart_daemon(&mut self) {
        self.run_daemon();
    }

    /// Pack `/bin/busybox` into a one-layer OCI archive and import it.
    fn import_image(&self) {
        let d = self.dir().join("image");
        let layer_dir = d.join("layer");
        fs::create_dir_all(layer_dir.join("bin")).expect("layer dir");
        fs::copy(BUSYBOX, layer_dir.join("bin/busybox")).expect("copy busybox");
        let blobs = d.join("oci/blobs/sha256");
        fs::create_dir_all(&blobs).expect("blobs dir");
        let layer = d.join("layer.tar");
        sh(&[
            "tar",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-C",
            &layer_dir.display().to_string(),
            "-cf",
            &layer.display().to_string(),
            "bin",
        ]);
        let put = |bytes: &[u8]| -> (String, usize) {
            let p = d.join("blob.tmp");
            fs::write(&p, bytes).expect("blob");
            let sum = sha256(&p);
            fs::rename(&p, blobs.join(&sum)).expect("blob");
            (sum, bytes.len())
        };
        let (layer_sum, layer_len) = put(&fs::read(&layer).expect("layer"));
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["{BUSYBOX}","sleep","2147483647"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_sum}"]}}}}"#
        );
        let (config_sum, config_len) = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_sum}","size":{config_len}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_sum}","size":{layer_len}}}]}}"#
        );
        let (man_sum, man_len) = put(manifest.as_bytes());
        let oci = d.join("oci");
        fs::write(
            oci.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{man_sum}","size":{man_len},"annotations":{{"io.containerd.image.name":"{IMAGE}","org.opencontainers.image.ref.name":"1"}}}}]}}"#
            ),
        )
        .expect("index");
        fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
        let archive = d.join("image.tar");
        sh(&[
            "tar",
            "-C",
            &oci.display().to_string(),
            "-cf",
            &archive.display().to_string(),
            "index.json",
            "oci-layout",
            "blobs",
        ]);
        sh(&[
            "ctr",
            "--address",
            &self.socket.display().to_string(),
            "-n",
            "k8s.io",
            "images",
            "import",
            &archive.display().to_string(),
        ]);
    }

    fn client(&mut self) -> RuntimeServiceClient<Channel> {
        self.client.clone().expect("containerd is running")
    }

    /// Run a pod with one `sleep` container per name in `containers`; `host_network` shares
    /// the node's network namespace (hostNetwork: true).
    pub fn run_pod(
        &mut self,
        namespace: &str,
        name: &str,
        containers: &[&str],
        host_network: bool,
    ) -> Pod {
        let uid = uuid_like(name);
        let cgroup_parent = format!("/kubepods/besteffort/pod{uid}");
        let net = if host_network {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        } as i32;
        let ns_opts = NamespaceOption {
            network: net,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..NamespaceOption::default()
        };
        let logs = self.dir().join("logs").join(name);
        fs::create_dir_all(&logs).expect("log dir");
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            // A hostNetwork pod has the node's UTS namespace: the kubelet sets no hostname.
            hostname: if host_network {
                String::new()
            } else {
                name.into()
            },
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(ns_opts.clone()),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let mut cl = self.client();
        let sandbox_id = self
            .rt
            .block_on(cl.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"))
            .into_inner()
            .pod_sandbox_id;
        let mut pod = Pod {
            sandbox_id: sandbox_id.clone(),
            namespace: namespace.into(),
            name: name.into(),
            uid,
            ip: None,
            containers: HashMap::new(),
            cgroup_parent,
        };
        // Registered before anything else can fail, so drop removes it.
        self.pods.push(pod.clone());
        for c in containers {
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: (*c).into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..ImageSpec::default()
                }),
                command: vec![BUSYBOX.into(), "sleep".into(), "2147483647".into()],
                log_path: format!("{c}.log"),
                linux: Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        namespace_options: Some(ns_opts.clone()),
                        ..LinuxContainerSecurityContext::default()
                    }),
                    ..LinuxContainerConfig::default()
                }),
                ..ContainerConfig::default()
            };
            let id = self
                .rt
                .block_on(cl.create_container(CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.clone(),
                    config: Some(config),
                    sandbox_config: Some(sandbox_config.clone()),
                }))
                .unwrap_or_else(|e| panic!("CreateContainer {c}: {e}"))
                .into_inner()
                .container_id;
            self.rt
                .block_on(cl.start_container(StartContainerRequest {
                    container_id: id.clone(),
                }))
                .unwrap_or_else(|e| panic!("StartContainer {c}: {e}"));
            pod.containers.insert((*c).into(), id);
        }
        let st = self
            .rt
            .block_on(cl.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id,
                verbose: false,
            }))
            .expect("PodSandboxStatus")
            .into_inner();
        pod.ip = st
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty());
        if let Some(p) = self.pods.last_mut() {
            *p = pod.clone();
        }
        pod
    }

    /// Run `cmd` in container `name` of `pod` (CRI ExecSync); returns (exit code, stdout and stderr).
    pub fn exec(&mut self, pod: &Pod, name: &str, cmd: &[&str], timeout_s: i64) -> (i32, String) {
        let id = pod
            .containers
            .get(name)
            .expect("container of the pod")
            .clone();
        let mut cl = self.client();
        let r = self
            .rt
            .block_on(cl.exec_sync(ExecSyncRequest {
                container_id: id,
                cmd: cmd.iter().map(|s| (*s).to_string()).collect(),
                timeout: timeout_s,
            }))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
            .into_inner();
        let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&r.stderr));
        (r.exit_code, out)
    }

    /// Stop and remove a pod (as `kubectl delete pod` ends up doing on the node).
    pub fn remove_pod(&mut self, pod: &Pod) {
        let mut cl = self.client();
        let id = pod.sandbox_id.clone();
        let _ = self.rt.block_on(cl.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        }));
        self.rt
            .block_on(cl.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }))
            .unwrap_or_else(|e| panic!("RemovePodSandbox {}: {e}", pod.name));
        self.pods.retain(|p| p.sandbox_id != pod.sandbox_id);
        remove_cgroups(&pod.cgroup_parent);
    }

    /// The network namespace path of a pod (`/var/run/netns/cni-…`), from its verbose status.
    pub fn netns_path(&mut self, pod: &Pod) -> PathBuf {
        let mut cl = self.client();
        let st = self
            .rt
            .block_on(cl.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
                verbose: true,
            }))
            .expect("PodSandboxStatus")
            .into_inner();
        let info: serde_json::Value =
            serde_json::from_str(st.info.get("info").map_or("{}", String::as_str))
                .unwrap_or_default();
        let path = info
            .pointer("/runtimeSpec/linux/namespaces")
            .and_then(|n| n.as_array())
            .and_then(|ns| ns.iter().find(|n| n["type"] == "network"))
            .and_then(|n| n["path"].as_str())
            .expect("a network namespace path in the sandbox's spec");
        PathBuf::from(path)
    }
}

/// A gRPC channel to the lab socket (netlat's own connector is in its library; this is the
/// test's, so the test does not exercise only code under test).
async fn netlat_connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://[::1]:0")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

fn sha256(p: &Path) -> String {
    let out = sh(&["sha256sum", &p.display().to_string()]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// A stable UID-shaped string for a pod name, unique per test process.
fn uuid_like(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(std::process::id().to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let x = format!("{h:016x}{:016x}", h.rotate_left(17) ^ 0x5555_aaaa_5555_aaaa);
    format!(
        "{}-{}-4{}-8{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

/// The cgroup dirs runc made for a pod (cgroup v1: one per controller; v2: one).
fn remove_cgroups(parent: &str) {
    let Ok(roots) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = roots
        .flatten()
        .map(|e| e.path().join(parent.trim_start_matches('/')))
        .collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')));
    for d in dirs {
        if let Ok(children) = fs::read_dir(&d) {
            for c in children.flatten() {
                if c.path().is_dir() {
                    let _ = fs::remove_dir(c.path());
                }
            }
        }
        let _ = fs::remove_dir(&d);
        // The QoS and kubepods levels, when no other pod is left in them.
        if let Some(qos) = d.parent() {
            let _ = fs::remove_dir(qos);
            if let Some(top) = qos.parent() {
                let _ = fs::remove_dir(top);
            }
        }
    }
}

/// PIDs of the shims serving the containerd at `socket` (their command line names it).
fn shims_of(socket: &Path) -> Vec<i32> {
    let want = socket.display().to_string();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let is_shim = args
                .first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"));
            (is_shim && args.contains(&want.as_bytes())).then_some(pid)
        })
        .collect()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Pods first, through CRI, so the runtime tears down mounts, netns and CNI state.
        if self.client.is_none() && self.child.is_none() && !self.pods.is_empty() {
            // Stopped by a test: bring it back to clean up properly.
            let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_daemon();
            }));
            if restarted.is_err() {
                self.client = None;
            }
        }
        let pods = std::mem::take(&mut self.pods);
        if let Some(mut cl) = self.client.clone() {
            for p in &pods {
                let _ = self.rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), async {
                        let _ = cl
                            .stop_pod_sandbox(StopPodSandboxRequest {
                                pod_sandbox_id: p.sandbox_id.clone(),
                            })
                            .await;
                        let _ = cl
                            .remove_pod_sandbox(RemovePodSandboxRequest {
                                pod_sandbox_id: p.sandbox_id.clone(),
                            })
                            .await;
                    })
                    .await
                });
            }
        }
        self.stop_daemon();
        // Shims of pods the runtime could not remove: by PID, as started (indirectly) by us.
        for pid in shims_of(&self.socket) {
            // SAFETY: a shim of our own containerd, by its PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for p in &pods {
            remove_cgroups(&p.cgroup_parent);
        }
        // Mounts left under the temp dir (rootfs, shm), deepest first. Under it, not merely
        // starting with its name: `…-pods` is a prefix of a parallel test's `…-podsdown`.
        let dir = format!("{}/", self.dir().display());
        if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
            let mut mounts: Vec<&str> = mi
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&dir))
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = Command::new("umount").args(["-l", m]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        if !self.had_run_dir {
            // Only empty directories go: another runtime started meanwhile keeps its own.
            for d in ["s", "runc/k8s.io", "runc", ""] {
                let _ = fs::remove_dir(Path::new(SHIM_RUN_DIR).join(d));
            }
        }
    }
}
