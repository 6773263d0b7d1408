# ladder: every SYN to 10.250.0.2:9000 is dropped by an nft rule in the server's namespace and
# the client gives up after $t s. netlat's `retransmit_at_ms` for the connect must be the
# kernel's SYN ladder: 1, 3, 7, 15, 31, 63 s before 6.5; 1, 2, 3, 4, 5, 7, 11, 19, 35 s with
# `tcp_syn_linear_timeouts=4` (6.5+). Runs in the background while the other scenarios run.

scenario_ladder() {
	n=ladder
	{ ns_add lad-c && ns_add lad-s &&
		veth lad-c lad-c0 10.250.0.1/24 lad-s lad-s0 10.250.0.2/24; } || {
		fail $n "topology"
		lab_done $n
		return
	}
	in_ns lad-s nft -f - <<'NFT' || fail $n "nft"
table inet ladder {
  chain in {
    type filter hook input priority 0; policy accept;
    tcp dport 9000 drop
  }
}
NFT
	# A few seconds past the last expected retransmit: under TCG the ladder runs ~2 % late.
	if [ -e /proc/sys/net/ipv4/tcp_syn_linear_timeouts ]; then t=40; else t=70; fi
	res "NETLAT-SCENARIO $n dst=10.250.0.2:9000"
	res "NETLAT-INFO ladder_timeout_s $t"
	client $n lad-c 10.250.0.2 9000 -t $t
	[ "$(field err 0)" = ETIMEDOUT ] || fail $n "the connect did not time out: $OUT"
	res "NETLAT-INFO ladder_done_s $(uptime_s)"
	lab_done $n
}
