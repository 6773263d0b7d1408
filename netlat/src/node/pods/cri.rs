//! The node's pods from a container runtime's CRI socket (containerd, CRI-O): sandboxes with
//! their metadata, IPs and network namespace, and the containers of each. Read-only calls
//! (`ListPodSandbox`, `PodSandboxStatus` verbose, `ListContainers`), each under a deadline.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, PodSandboxStatusRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Container, Inventory, Sandbox, netns_inode};

/// A runtime that does not answer within this long is reported down, and the run goes on.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{call} on {path}: {status}")]
    Call {
        call: &'static str,
        path: String,
        status: String,
    },
}

/// One runtime socket, connected on first use and again after a failure.
pub struct Runtime {
    pub path: PathBuf,
    client: Option<RuntimeServiceClient<Channel>>,
    /// Sandbox details already read, by sandbox id: they do not change while it lives.
    known: HashMap<String, Sandbox>,
}

/// A gRPC channel to a unix socket (the URI is a placeholder the connector ignores).
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_static("http://[::1]:0")
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

fn call_err(call: &'static str, path: &Path, s: &tonic::Status) -> CriError {
    CriError::Call {
        call,
        path: path.display().to_string(),
        status: format!("{}: {}", s.code(), s.message()),
    }
}

impl Runtime {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            client: None,
            known: HashMap::new(),
        }
    }

    /// Every sandbox and container the runtime has now.
    pub async fn inventory(&mut self) -> Result<Inventory, CriError> {
        let r = self.read().await;
        if r.is_err() {
            // Reconnect next time: the runtime may have restarted.
            self.client = None;
        }
        r
    }

    async fn read(&mut self) -> Result<Inventory, CriError> {
        if self.client.is_none() {
            let ch = connect(&self.path)
                .await
                .map_err(|source| CriError::Connect {
                    path: self.path.display().to_string(),
                    source,
                })?;
            self.client = Some(RuntimeServiceClient::new(ch));
        }
        let Some(client) = &mut self.client else {
            return Ok(Inventory::default());
        };
        let items = client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| call_err("ListPodSandbox", &self.path, &s))?
            .into_inner()
            .items;
        let mut inv = Inventory::default();
        let mut known = HashMap::new();
        for s in items {
            let sb = if let Some(sb) = self.known.remove(&s.id) {
                sb
            } else {
                let Some(sb) = sandbox(client, &self.path, s.id.clone()).await? else {
                    continue;
                };
                sb
            };
            known.insert(sb.id.clone(), sb.clone());
            inv.sandboxes.push(sb);
        }
        // Sandboxes gone from the runtime are forgotten here; the cache keeps their names for
        // its grace period.
        self.known = known;
        let containers = client
            .list_containers(ListContainersRequest { filter: None })
            .await
            .map_err(|s| call_err("ListContainers", &self.path, &s))?
            .into_inner()
            .containers;
        inv.containers = containers
            .into_iter()
            .filter_map(|c| {
                Some(Container {
                    name: c.metadata?.name,
                    id: c.id,
                    sandbox_id: c.pod_sandbox_id,
                })
            })
            .collect();
        Ok(inv)
    }
}

/// One sandbox's metadata, IPs and network namespace (verbose status); `None` when the runtime
/// reports it without metadata.
async fn sandbox(
    client: &mut RuntimeServiceClient<Channel>,
    path: &Path,
    id: String,
) -> Result<Option<Sandbox>, CriError> {
    let st = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        })
        .await
        .map_err(|e| call_err("PodSandboxStatus", path, &e))?
        .into_inner();
    let Some(status) = st.status else {
        return Ok(None);
    };
    let Some(md) = status.metadata else {
        return Ok(None);
    };
    let host_network = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .is_some_and(|o| o.network == NamespaceMode::Node as i32);
    let ips = status
        .network
        .map(|n| {
            std::iter::once(n.ip)
                .chain(n.additional_ips.into_iter().map(|a| a.ip))
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
                .collect()
        })
        .unwrap_or_default();
    let netns = if host_network {
        None
    } else {
        st.info.get("info").and_then(|j| netns_of_info(j))
    };
    Ok(Some(Sandbox {
        id,
        namespace: md.namespace,
        name: md.name,
        uid: md.uid,
        netns,
        ips,
        host_network,
    }))
}

/// The sandbox's network namespace inode from its verbose status `info` JSON: the netns path
/// of its OCI spec (containerd, CRI-O), else its pid's namespace.
fn netns_of_info(json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let by_path = v
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|n| n.as_array())
        .and_then(|ns| {
            ns.iter()
                .find(|n| n["type"] == "network")
                .and_then(|n| n["path"].as_str())
        })
        .and_then(|p| netns_inode(Path::new(p)));
    by_path.or_else(|| {
        let pid = v.get("pid")?.as_u64()?;
        netns_inode(Path::new(&format!("/proc/{pid}/ns/net")))
    })
}
