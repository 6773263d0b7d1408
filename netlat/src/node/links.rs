//! Links over route netlink (`rtnetlink`: names, state, VXLAN attributes from IFLA_INFO_DATA) and
//! the tx checksum offload of each VXLAN device over ethtool netlink (`ethtool` crate).

use ethtool::{EthtoolAttr, EthtoolFeatureAttr, EthtoolHandle};
use futures_util::TryStreamExt;
use netlat_core::facts::VxlanDev;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};

use super::NETLINK_TIMEOUT;

/// The ethtool feature that is tx checksum offload on virtual devices such as VXLAN (what
/// `ethtool -K DEV tx off` turns off, and Calico's `ChecksumOffloadBroken` workaround too).
const TX_CSUM_FEATURE: &str = "tx-checksum-ip-generic";

/// What the fingerprint needs from one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub index: u32,
    pub name: String,
    /// IFF_UP.
    pub up: bool,
    /// Set for VXLAN devices.
    pub vxlan: Option<VxlanDev>,
}

/// Every link of the calling thread's namespace, VXLAN ones with their offload state.
pub(super) async fn read(notes: &mut Vec<String>) -> Vec<Link> {
    let mut links = match tokio::time::timeout(NETLINK_TIMEOUT, dump_links()).await {
        Ok(Ok(links)) => links,
        Ok(Err(e)) => {
            notes.push(format!("links: cannot dump them over route netlink: {e}"));
            return Vec::new();
        }
        Err(_) => {
            notes.push("links: route netlink did not answer in time".into());
            return Vec::new();
        }
    };
    if !links.iter().any(|l| l.vxlan.is_some()) {
        return links;
    }
    let mut handle = match ethtool::new_connection() {
        Ok((conn, handle, _)) => {
            tokio::spawn(conn);
            handle
        }
        Err(e) => {
            notes.push(format!(
                "vxlan: cannot open an ethtool netlink socket: {e}; tx checksum offload unknown"
            ));
            return links;
        }
    };
    for link in &mut links {
        let Some(vxlan) = &mut link.vxlan else {
            continue;
        };
        match tokio::time::timeout(NETLINK_TIMEOUT, tx_csum_offload(&mut handle, &vxlan.name)).await
        {
            Ok(Ok(on)) => vxlan.tx_csum_offload = Some(on),
            Ok(Err(e)) => notes.push(format!(
                "vxlan {}: cannot read ethtool features: {e}",
                vxlan.name
            )),
            Err(_) => notes.push(format!(
                "vxlan {}: ethtool netlink did not answer in time",
                vxlan.name
            )),
        }
    }
    links
}

async fn dump_links() -> Result<Vec<Link>, String> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let mut stream = handle.link().get().execute();
    let mut links = Vec::new();
    let result = loop {
        match stream.try_next().await {
            Ok(Some(msg)) => links.push(link_from_message(&msg)),
            Ok(None) => break Ok(links),
            Err(e) => break Err(e.to_string()),
        }
    };
    task.abort();
    result
}

/// The [`Link`] in one RTM_NEWLINK message.
pub(super) fn link_from_message(msg: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut is_vxlan = false;
    let mut vxlan_attrs: &[InfoVxlan] = &[];
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
                        LinkInfo::Data(InfoData::Vxlan(attrs)) => vxlan_attrs = attrs,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let vxlan = is_vxlan.then(|| {
        let mut dev = VxlanDev {
            name: name.clone(),
            ifindex: msg.header.index,
            ..VxlanDev::default()
        };
        for attr in vxlan_attrs {
            match attr {
                InfoVxlan::Id(vni) => dev.vni = Some(*vni),
                InfoVxlan::Port(port) => dev.port = Some(*port),
                // Reported as the kernel holds it: devices created without the attribute get
                // the kernel's default (on in 6.x, off in 3.18/4.x).
                InfoVxlan::UDPCsum(on) => dev.udp_csum = Some(*on),
                _ => {}
            }
        }
        dev
    });
    Link {
        index: msg.header.index,
        name,
        up: msg.header.flags.contains(LinkFlags::Up),
        vxlan,
    }
}

/// Whether [`TX_CSUM_FEATURE`] is active on `name`.
async fn tx_csum_offload(handle: &mut EthtoolHandle, name: &str) -> Result<bool, String> {
    let mut replies = handle
        .feature()
        .get(Some(name))
        .execute()
        .await
        .map_err(|e| e.to_string())?;
    while let Some(msg) = replies.try_next().await.map_err(|e| e.to_string())? {
        for attr in &msg.payload.nlas {
            // The active set lists only the features that are on.
            if let EthtoolAttr::Feature(EthtoolFeatureAttr::Active(bits)) = attr {
                return Ok(bits.iter().any(|b| b.name == TX_CSUM_FEATURE && b.value));
            }
        }
    }
    Err("the reply has no active feature set".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(index: u32, name: &str, infos: Vec<LinkInfo>, up: bool) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        if !infos.is_empty() {
            msg.attributes.push(LinkAttribute::LinkInfo(infos));
        }
        msg
    }

    #[test]
    fn vxlan_attributes() {
        let msg = message(
            5,
            "vxlan.calico",
            vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(4096),
                    InfoVxlan::Port(4789),
                    InfoVxlan::UDPCsum(false),
                ])),
            ],
            true,
        );
        let link = link_from_message(&msg);
        assert!(link.up);
        assert_eq!(
            link.vxlan,
            Some(VxlanDev {
                name: "vxlan.calico".into(),
                ifindex: 5,
                vni: Some(4096),
                port: Some(4789),
                udp_csum: Some(false),
                tx_csum_offload: None,
            })
        );
    }

    #[test]
    fn other_links() {
        let link = link_from_message(&message(1, "lo", vec![], false));
        assert_eq!(
            link,
            Link {
                index: 1,
                name: "lo".into(),
                up: false,
                vxlan: None
            }
        );
        let dummy = link_from_message(&message(
            2,
            "kube-ipvs0",
            vec![LinkInfo::Kind(InfoKind::Dummy)],
            false,
        ));
        assert_eq!(dummy.vxlan, None);
        // A VXLAN whose data was not sent still counts, with unknown settings.
        let bare = link_from_message(&message(
            3,
            "flannel.1",
            vec![LinkInfo::Kind(InfoKind::Vxlan)],
            true,
        ));
        assert_eq!(bare.vxlan.map(|v| (v.port, v.udp_csum)), Some((None, None)));
    }
}
