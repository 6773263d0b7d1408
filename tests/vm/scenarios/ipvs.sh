# IPVS issue A (research signatures.md section A, verified on 6.1): a client namespace iv-c, a
# load balancer iv-lb (VIPs on a dummy kube-ipvs0, ip_forward, vs/conntrack=1,
# conn_reuse_mode=1, expire_nodest_conn=1, and a kube-proxy-like nat-table masquerade chain, so
# conntrack is hooked there) and two backends iv-b1/iv-b2 routed through it. One virtual
# service per case, each with its own VIP, backend port and client source port:
#
#   ipvs-reuse    VIP .1 -> :8001, backends abort (SO_LINGER{1,0}) after one byte; the client
#                 rebinds the same port 0.5 s later: the SYN hits the IPVS conn in CLOSE with a
#                 confirmed conntrack and IPVS drops it (1 s).
#   ipvs-weight0  VIP .2 -> :8002, backends hold; the client's RST is silenced by an nft rule so
#                 the conn stays ESTABLISHED, its real server is set to weight 0, and the client
#                 reconnects from the same port: expire_nodest_conn drops the SYN (1 s), the
#                 retry goes to the other backend.
#   ipvs-stale    VIP .3 -> :8003, conn_reuse_mode=0 and expire_nodest_conn=0: backends
#                 abort; the real server of the connection is removed (ipvsadm -d) and the client
#                 reuses the port: the reused port still maps to the removed real server, so IPVS
#                 drops every SYN until the old conn expires (CLOSE, 10 s): the connect takes
#                 the first retransmit after that (15 s before 6.5, 11 s with linear timeouts).
#                 (With expire_nodest_conn=1, kernels >= 5.9 flush the removed server's conns at
#                 once and nothing is dropped.)
#   ipvs-control  VIP .4 -> :8004, backends close gracefully (IPVS TIME_WAIT, conntrack kills
#                 and re-creates the entry): no drop, fast, and nothing may be attributed.

ipvs_topology() {
	ns_add iv-c && ns_add iv-lb && ns_add iv-b1 && ns_add iv-b2 &&
		veth iv-c iv-c0 10.240.1.2/24 iv-lb iv-l0 10.240.1.1/24 &&
		veth iv-lb iv-l1 10.240.2.1/24 iv-b1 iv-b10 10.240.2.2/24 &&
		veth iv-lb iv-l2 10.240.3.1/24 iv-b2 iv-b20 10.240.3.2/24 &&
		ip -n iv-c route add default via 10.240.1.1 &&
		ip -n iv-b1 route add default via 10.240.2.1 &&
		ip -n iv-b2 route add default via 10.240.3.1 &&
		ip -n iv-lb link add kube-ipvs0 type dummy || return 1
	for v in 1 2 3 4; do
		ip -n iv-lb addr add 10.240.100.$v/32 dev kube-ipvs0 || return 1
	done
	ns_sysctl iv-lb net.ipv4.ip_forward 1 &&
		ns_sysctl iv-lb net.ipv4.vs.conntrack 1 &&
		ns_sysctl iv-lb net.ipv4.vs.conn_reuse_mode 1 &&
		ns_sysctl iv-lb net.ipv4.vs.expire_nodest_conn 1 || return 1
	# kube-proxy (IPVS mode) always has nat-table rules; without any, conntrack is not hooked
	# in the load balancer's namespace and IPVS drops nothing.
	in_ns iv-lb nft -f - <<'NFT' || return 1
table ip kube-proxy-nat {
  chain postrouting {
    type nat hook postrouting priority 100;
    meta mark & 0x4000 == 0x4000 masquerade
  }
}
NFT
	for v in 1 2 3 4; do
		case $v in 1 | 3) mode=rst ;; 2) mode=hold ;; 4) mode=close ;; esac
		serve iv-b1 10.240.2.2 800$v $mode 1 && serve iv-b2 10.240.3.2 800$v $mode 2 &&
			in_ns iv-lb ipvsadm -A -t 10.240.100.$v:80 -s rr &&
			in_ns iv-lb ipvsadm -a -t 10.240.100.$v:80 -r 10.240.2.2:800$v -m &&
			in_ns iv-lb ipvsadm -a -t 10.240.100.$v:80 -r 10.240.3.2:800$v -m || return 1
	done
}

# backend_ip ID: the real server address of backend 1 or 2.
backend_ip() {
	case $1 in 1) echo 10.240.2.2 ;; 2) echo 10.240.3.2 ;; *) echo none ;; esac
}

ipvs_reuse() {
	n=ipvs-reuse
	res "NETLAT-SCENARIO $n dst=10.240.100.1:80"
	client $n iv-c 10.240.100.1 80 -s 41001 -m talk -n 3 -g 0.5 -t 5
	s=$(field connect_s 0)
	between "$s" 0 0.5 || fail $n "the first connect took $s s"
	for i in 1 2; do
		s=$(field connect_s $i)
		between "$s" 0.9 1.6 || fail $n "reuse connect $i took $s s (want ~1 s)"
	done
	lab_done $n
}

ipvs_weight0() {
	n=ipvs-weight0
	res "NETLAT-SCENARIO $n dst=10.240.100.2:80"
	in_ns iv-c nft -f - <<'NFT' || fail $n "nft"
table inet nlrst {
  chain out {
    type filter hook output priority 0; policy accept;
    ip daddr 10.240.100.2 tcp flags & rst == rst drop
  }
}
NFT
	client $n iv-c 10.240.100.2 80 -s 41002 -m abort -t 5
	b=$(field backend 0)
	between "$(field connect_s 0)" 0 0.5 || fail $n "the first connect: $OUT"
	in_ns iv-lb ipvsadm -e -t 10.240.100.2:80 -r "$(backend_ip "$b")":8002 -m -w 0 ||
		fail $n "ipvsadm -e -w 0 for backend '$b'"
	sleep 0.3
	client $n iv-c 10.240.100.2 80 -s 41002 -m abort -t 5 -i 1
	s=$(field connect_s 0)
	between "$s" 0.9 1.6 || fail $n "the reconnect took $s s (want ~1 s)"
	[ "$(field backend 0)" != "$b" ] || fail $n "the reconnect went to the weight-0 backend $b"
	in_ns iv-c nft delete table inet nlrst
	lab_done $n
}

ipvs_stale() {
	n=ipvs-stale
	res "NETLAT-SCENARIO $n dst=10.240.100.3:80"
	{ ns_sysctl iv-lb net.ipv4.vs.conn_reuse_mode 0 &&
		ns_sysctl iv-lb net.ipv4.vs.expire_nodest_conn 0; } || fail $n "sysctls"
	client $n iv-c 10.240.100.3 80 -s 41003 -m talk -t 5
	b=$(field backend 0)
	between "$(field connect_s 0)" 0 0.5 || fail $n "the first connect: $OUT"
	in_ns iv-lb ipvsadm -d -t 10.240.100.3:80 -r "$(backend_ip "$b")":8003 ||
		fail $n "ipvsadm -d for backend '$b'"
	sleep 0.3
	client $n iv-c 10.240.100.3 80 -s 41003 -m talk -t 20 -i 1
	s=$(field connect_s 0)
	between "$s" 2.5 20 || fail $n "the reconnect took $s s (want several dropped SYNs)"
	[ "$(field backend 0)" != "$b" ] || fail $n "the reconnect went to the removed backend $b"
	ns_sysctl iv-lb net.ipv4.vs.conn_reuse_mode 1
	ns_sysctl iv-lb net.ipv4.vs.expire_nodest_conn 1
	lab_done $n
}

ipvs_control() {
	n=ipvs-control
	res "NETLAT-SCENARIO $n dst=10.240.100.4:80"
	client $n iv-c 10.240.100.4 80 -s 41004 -m talk -n 2 -g 0.5 -t 5
	for i in 0 1; do
		s=$(field connect_s $i)
		between "$s" 0 0.5 || fail $n "connect $i took $s s (want fast)"
	done
	lab_done $n
}

scenario_ipvs() {
	if ! ipvs_topology; then
		for c in reuse weight0 stale control; do
			fail ipvs-$c "topology"
			lab_done ipvs-$c
		done
		stop_all
		return
	fi
	if0=$(ct_stat iv-lb insert_failed)
	ipvs_reuse
	ipvs_weight0
	ipvs_stale
	ipvs_control
	if1=$(ct_stat iv-lb insert_failed)
	res "NETLAT-INFO ipvs_insert_failed $((if1 - if0))"
	log "ipvs connections:"
	in_ns iv-lb ipvsadm -Lnc
	in_ns iv-lb ipvsadm -Ln
	stop_all
}
