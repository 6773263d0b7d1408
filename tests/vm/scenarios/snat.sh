# snat-single (issue B, deterministic; tests/src/lab.rs `single_port_snat`): two pods on a bridge
# in a router that SNATs them to the single port 10.235.1.1:40000. pod1 connects and holds its
# connection; pod2's SYNs then clash with pod1's conntrack entry at confirm and are dropped
# (insert_failed) until pod2 gives up after 4 s.

snat_topology() {
	ns_add sn-p1 && ns_add sn-p2 && ns_add sn-r && ns_add sn-s &&
		ip -n sn-r link add sn-br type bridge &&
		ip -n sn-r addr add 10.235.0.1/24 dev sn-br &&
		ip -n sn-r link set sn-br up || return 1
	for i in 1 2; do
		ip link add sn-e$i netns sn-p$i type veth peer name sn-v$i netns sn-r &&
			ip -n sn-r link set sn-v$i master sn-br &&
			ip -n sn-r link set sn-v$i up &&
			ip -n sn-p$i addr add 10.235.0.1$i/24 dev sn-e$i &&
			ip -n sn-p$i link set sn-e$i up &&
			ip -n sn-p$i route add default via 10.235.0.1 || return 1
	done
	veth sn-r sn-up 10.235.1.1/24 sn-s sn-sv 10.235.1.2/24 &&
		ns_sysctl sn-r net.ipv4.ip_forward 1
}

scenario_snat_single() {
	n=snat-single
	snat_topology || {
		fail $n "topology"
		lab_done $n
		return
	}
	in_ns sn-r nft -f - <<'NFT' || fail $n "nft"
table ip labnat {
  chain post {
    type nat hook postrouting priority 100;
    ip saddr 10.235.0.0/24 oifname "sn-up" meta l4proto tcp snat to 10.235.1.1:40000
  }
}
NFT
	serve sn-s 10.235.1.2 8080 hold s || fail $n "server"
	res "NETLAT-SCENARIO $n dst=10.235.1.2:8080"
	in_ns sn-p1 nlvm connect 10.235.1.2 8080 -m hold -t 5 >/tmp/snat.hold 2>&1 &
	PIDS="$PIDS $!"
	i=0
	while [ $i -lt 100 ] && ! grep -q connect_s /tmp/snat.hold; do
		sleep 0.05
		i=$((i + 1))
	done
	h=$(cat /tmp/snat.hold)
	res "NETLAT-CLIENT $n-hold $h"
	s=$(echo "$h" | awk '{ for (i = 1; i <= NF; i++) if (index($i, "connect_s=") == 1) print substr($i, 11) }')
	between "$s" 0 0.5 || fail $n "pod1's connect took '$s' s: $h"
	if0=$(ct_stat sn-r insert_failed)
	client $n sn-p2 10.235.1.2 8080 -t 4
	if1=$(ct_stat sn-r insert_failed)
	res "NETLAT-INFO snat_insert_failed $((if1 - if0))"
	s=$(field connect_s 0)
	[ "$s" = fail ] || between "$s" 0.9 100 || fail $n "pod2's connect did not clash: $OUT"
	[ $((if1 - if0)) -ge 2 ] || fail $n "insert_failed rose by $((if1 - if0)) (want >= 2)"
	stop_all
	lab_done $n
}
