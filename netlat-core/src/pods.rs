//! Kubernetes pod identity: the nouns a line names a pod with, and [`PodView`], the port the
//! engine asks at report time. The shell implements it with a cache of the node's container
//! runtime (CRI) that is refreshed off the event loop; replays answer from the recording, tests
//! from [`crate::testkit::FakePods`].

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

/// A pod (and, where the process is known, its container) as the node's runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The container of the process; absent when only the sandbox (the netns) is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl fmt::Display for PodRef {
    /// `namespace/name[/container]`, the human line's form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if let Some(c) = &self.container {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// What the view can say about the process behind a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodAnswer {
    Pod(PodRef),
    /// Known not to be in a pod (a host process, a plain `ip netns` namespace), or no pod
    /// source is configured at all.
    NotAPod,
    /// Could not be told now (runtime down or slow, lookup still running): why, for the line.
    Unknown(String),
}

/// The node's pods, as the engine needs them when it prints a line. Answers come from memory:
/// an implementation never blocks the event loop on the runtime.
pub trait PodView {
    /// A connect began in `netns` by process `tgid`: the moment to start a lookup, so the answer
    /// is there by the time the connect is slow. No answer, so nothing to record or replay.
    fn prefetch(&mut self, _netns: u32, _tgid: u32) {}
    /// The pod of process `tgid` (when known) whose network namespace is `netns`.
    fn pod(&mut self, netns: u32, tgid: Option<u32>) -> PodAnswer;
    /// The pod on this node whose address is `ip`.
    fn pod_by_ip(&mut self, ip: IpAddr) -> Option<PodRef>;
}

/// No pod knowledge (replays of recordings made before pods were named, most tests).
pub struct NoPods;

impl PodView for NoPods {
    fn pod(&mut self, _: u32, _: Option<u32>) -> PodAnswer {
        PodAnswer::NotAPod
    }
    fn pod_by_ip(&mut self, _: IpAddr) -> Option<PodRef> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_form_names_the_container_only_when_known() {
        let mut p = PodRef {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u1".into(),
            container: None,
        };
        assert_eq!(p.to_string(), "shop/web-0");
        p.container = Some("app".into());
        assert_eq!(p.to_string(), "shop/web-0/app");
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["container"], "app");
        p.container = None;
        let j = serde_json::to_value(&p).unwrap();
        assert!(j.get("container").is_none(), "{j}");
    }
}
