# first-syn (the foundation's lab, as tests/tests/lab_first_syn.rs): an nft rule in the server's
# namespace drops the first SYN of every new flow to port 8080, so each 8080 connect takes the
# 1 s RTO; port 8081 is the control and must stay fast (and unreported).
# first-syn-ipt: the same with an iptables-legacy rule (port 8082, every other SYN dropped by
# `-m statistic --mode nth`, i.e. each connect's first), so the drop comes from ipt_do_table.

scenario_first_syn() {
	n=first-syn
	{ ns_add fs-a && ns_add fs-b &&
		veth fs-a fs-a0 10.231.0.1/24 fs-b fs-b0 10.231.0.2/24; } || {
		fail $n "topology"
		lab_done $n
		return
	}
	in_ns fs-b nft -f - <<'NFT' || fail $n "nft"
table inet labsyn {
  set seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 60s; }
  chain in {
    type filter hook input priority 0; policy accept;
    tcp dport 8080 tcp flags & (syn|ack) == syn ip saddr . tcp sport @seen accept
    tcp dport 8080 tcp flags & (syn|ack) == syn add @seen { ip saddr . tcp sport } drop
  }
}
NFT
	serve fs-b 0.0.0.0 8080 accept x || fail $n "server 8080"
	serve fs-b 0.0.0.0 8081 accept x || fail $n "server 8081"
	res "NETLAT-SCENARIO $n dst=10.231.0.2:8080"
	res "NETLAT-SCENARIO $n-control dst=10.231.0.2:8081"
	i=0
	for port in 8080 8081 8080 8081 8080; do
		if [ $port = 8080 ]; then c=$n; else c=$n-control; fi
		client $c fs-a 10.231.0.2 $port -t 5 -i $i
		s=$(field connect_s 0)
		if [ $port = 8080 ]; then
			between "$s" 0.9 1.6 || fail $n "connect $i to 8080 took $s s (want ~1 s)"
		else
			between "$s" 0 0.5 || fail $n-control "connect $i to 8081 took $s s (want < 0.5 s)"
		fi
		i=$((i + 1))
		sleep 0.05
	done
	lab_done $n
	lab_done $n-control
	first_syn_ipt
	stop_all
}

first_syn_ipt() {
	n=first-syn-ipt
	res "NETLAT-SCENARIO $n dst=10.231.0.2:8082"
	{ in_ns fs-b iptables-legacy -A INPUT -p tcp --dport 8082 --syn \
		-m statistic --mode nth --every 2 --packet 0 -j DROP &&
		serve fs-b 0.0.0.0 8082 accept x; } || {
		fail $n "iptables-legacy rule or server"
		lab_done $n
		return
	}
	for i in 0 1; do
		client $n fs-a 10.231.0.2 8082 -t 5 -i $i
		s=$(field connect_s 0)
		between "$s" 0.9 1.6 || fail $n "connect $i to 8082 took $s s (want ~1 s)"
		sleep 0.05
	done
	lab_done $n
}
