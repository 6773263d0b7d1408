# listen-overflow (look-alike; tests/tests/lab_listen.rs): a server in li-s listens with backlog
# 1 and never accepts. Two connects fill its accept queue, then six clients connect at once:
# every one of their SYNs is refused in tcp_conn_request (ListenOverflows/ListenDrops) and
# consumed, not dropped, so no drop event exists; each client gives up after 2.5 s (one SYN
# retry). netlat must name `listen-overflow` from the listener namespace's counters.

scenario_listen() {
	n=listen-overflow
	{ ns_add li-c && ns_add li-s &&
		veth li-c li-c0 10.238.0.1/24 li-s li-s0 10.238.0.2/24 &&
		serve li-s 0.0.0.0 8090 noaccept x; } || {
		fail $n "topology or server"
		lab_done $n
		return
	}
	res "NETLAT-SCENARIO $n dst=10.238.0.2:8090"
	# netlat looks for new namespaces every 2 s: let it baseline the server's counters.
	sleep 2.5
	# Two connects (each from its own port) fill the queue; the server never takes them.
	for i in 100 101; do
		OUT=$(in_ns li-c nlvm connect 10.238.0.2 8090 -t 2 -i $i 2>&1)
		res "NETLAT-CLIENT $n-fill $OUT"
		between "$(field connect_s 0)" 0 0.5 || fail $n "filling connect $i: $OUT"
	done
	pids=
	for i in 0 1 2 3 4 5; do
		in_ns li-c nlvm connect 10.238.0.2 8090 -t 2.5 -i $i >/tmp/listen.$i 2>&1 &
		pids="$pids $!"
	done
	for p in $pids; do wait "$p"; done
	for i in 0 1 2 3 4 5; do
		OUT=$(cat /tmp/listen.$i)
		res "NETLAT-CLIENT $n $OUT"
		[ "$(field err 0)" = ETIMEDOUT ] || fail $n "connect $i was not refused: $OUT"
	done
	res "NETLAT-INFO listen_overflows $(in_ns li-s cat /proc/net/netstat |
		awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["ListenOverflows"] }')"
	lab_done $n
	stop_all
}
