# VXLAN outer checksum (issue C; tests/tests/lab_vxlan.rs, tests/src/lab.rs `VxlanLab`): a
# sender and a receiver joined by a veth underlay (tx checksum offload off on the sender's
# end, so the receiver verifies outer UDP checksums), a vxlan device with `udpcsum` on each,
# and in the sender kube-proxy's double NAT: the service flow is marked 0x4000 and a
# `masquerade fully-random` on that mark also rewrites the encapsulated outer packet, whose
# checksum tx offload leaves stale. The receiver drops it (UDP_CSUM).
#
#   vxlan-first-syn  net.core.txrehash=1: every RTO picks a new outer source port, so the
#                    re-sent SYN rides a fresh, un-NATed outer flow: ~1 s per connect.
#   vxlan-escape     a stable outer source port (the vxlan device's `srcport` range is one
#                    port: kernels before 5.19 have no txrehash=0 and re-hash on every SYN
#                    RTO): every re-sent SYN rides the same mis-NATed outer conntrack
#                    until a retry gap outlasts its 30 s unreplied timeout: the connect ends
#                    at 63 s (classic ladder), ~67 s with tcp_syn_linear_timeouts (6.5+).
#                    Runs in the background alongside the other scenarios. The same connect
#                    is judged twice: its verdict (vxlan-escape) and its ladder
#                    (vxlan-escape-ladder). NETLAT-INFO vxlan_escape_start_s is the guest
#                    uptime when it began (netlat's lines carry their own times).

# vxlan_topology K TXREHASH [SRCPORT]: sender vx<K>a (overlay 10.237.<K>.1), receiver vx<K>b
# (10.237.<K>.2) with a server on 8080; SRCPORT pins the sender's outer UDP source port.
vxlan_topology() {
	k=$1
	a=vx${k}a
	b=vx${k}b
	pin=
	[ -n "$3" ] && pin="srcport $3 $(($3 + 1))"
	ns_add $a && ns_add $b &&
		veth $a vx${k}u0 10.236.$k.1/24 $b vx${k}u1 10.236.$k.2/24 || return 1
	# Kernels before 5.19 have no txrehash sysctl (the tx hash then stays put on SYN RTOs).
	if in_ns $a test -e /proc/sys/net/core/txrehash; then
		ns_sysctl $a net.core.txrehash "$2" || return 1
	fi
	# shellcheck disable=SC2086 # $pin is two words or none
	ip -n $a link add vx$k type vxlan id 42 dstport 4789 local 10.236.$k.1 remote 10.236.$k.2 \
		dev vx${k}u0 udpcsum $pin &&
		ip -n $b link add vx$k type vxlan id 42 dstport 4789 local 10.236.$k.2 \
			remote 10.236.$k.1 dev vx${k}u1 udpcsum &&
		ip -n $a addr add 10.237.$k.1/24 dev vx$k && ip -n $b addr add 10.237.$k.2/24 dev vx$k ||
		return 1
	if [ -n "$pin" ]; then
		# With one outer port, the first tunnel packet must be the SYN: an ARP request or an
		# IPv6 neighbour/MLD packet first would create the outer flow's conntrack un-NATed.
		for ns in $a $b; do
			if in_ns $ns test -e /proc/sys/net/ipv6/conf/vx$k/disable_ipv6; then
				ns_sysctl $ns net.ipv6.conf.vx$k.disable_ipv6 1 || return 1
			fi
		done
		ip -n $a neigh add 10.237.$k.2 lladdr "$(mac $b vx$k)" dev vx$k nud permanent &&
			ip -n $b neigh add 10.237.$k.1 lladdr "$(mac $a vx$k)" dev vx$k nud permanent ||
			return 1
	fi
	ip -n $a link set vx$k up && ip -n $b link set vx$k up || return 1
	# veth trusts CHECKSUM_PARTIAL across the pair: computed before it crosses, the receiver
	# checks it. The tunnel device keeps tx offload on (the bug's condition).
	in_ns $a nlvm txcsum vx${k}u0 off && in_ns $a nlvm txcsum vx$k on || return 1
	in_ns $a nft -f - <<NFT || return 1
table ip labvx {
  chain out_nat {
    type nat hook output priority -100;
    ip daddr 10.237.$k.2 tcp dport 8080 meta mark set 0x4000
  }
  chain post_nat {
    type nat hook postrouting priority 100;
    meta mark & 0x4000 == 0x4000 masquerade fully-random
  }
}
NFT
	serve $b 0.0.0.0 8080 accept x
}

# mac NS DEV: the device's MAC address.
mac() {
	ip -n "$1" -o link show "$2" | awk '{ for (i = 1; i < NF; i++) if ($i == "link/ether") print $(i + 1) }'
}

# Udp InCsumErrors of NS.
udp_csum_errors() {
	in_ns "$1" cat /proc/net/snmp |
		awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["InCsumErrors"] }'
}

scenario_vxlan_first_syn() {
	n=vxlan-first-syn
	vxlan_topology 1 1 || {
		fail $n "topology"
		lab_done $n
		return
	}
	res "NETLAT-SCENARIO $n dst=10.237.1.2:8080"
	e0=$(udp_csum_errors vx1b)
	for i in 0 1; do
		client $n vx1a 10.237.1.2 8080 -t 10 -i $i
		s=$(field connect_s 0)
		between "$s" 0.9 1.6 || fail $n "connect $i took $s s (want ~1 s)"
		sleep 0.05
	done
	e1=$(udp_csum_errors vx1b)
	res "NETLAT-INFO vxlan_first_syn_csum_errors $((e1 - e0))"
	[ $((e1 - e0)) -ge 2 ] || fail $n "receiver UdpInCsumErrors rose by $((e1 - e0)) (want >= 2)"
	lab_done $n
}

# In the background: its own namespaces and server, stopped here, not by stop_all.
scenario_vxlan_escape() {
	n=vxlan-escape
	PIDS=
	vxlan_topology 2 0 47890 || {
		fail $n "topology"
		lab_done $n
		lab_done $n-ladder
		return
	}
	res "NETLAT-SCENARIO $n dst=10.237.2.2:8080"
	res "NETLAT-SCENARIO $n-ladder dst=10.237.2.2:8080"
	res "NETLAT-INFO vxlan_escape_start_s $(uptime_s)"
	e0=$(udp_csum_errors vx2b)
	OUT=$(in_ns vx2a nlvm connect 10.237.2.2 8080 -t 85 2>&1)
	e1=$(udp_csum_errors vx2b)
	res "NETLAT-CLIENT $n $OUT"
	res "NETLAT-CLIENT $n-ladder $OUT"
	res "NETLAT-INFO vxlan_escape_csum_errors $((e1 - e0))"
	res "NETLAT-INFO vxlan_escape_done_s $(uptime_s)"
	s=$(field connect_s 0)
	if [ -e /proc/sys/net/ipv4/tcp_syn_linear_timeouts ]; then lo=60; else lo=58; fi
	between "$s" $lo 75 || fail $n "the connect took $s s (want the escape after the ladder)"
	[ $((e1 - e0)) -ge 5 ] || fail $n "receiver UdpInCsumErrors rose by $((e1 - e0)) (want >= 5)"
	[ -s /tmp/labfail.$n ] && cp /tmp/labfail.$n /tmp/labfail.$n-ladder
	lab_done $n
	lab_done $n-ladder
	stop_all
}
