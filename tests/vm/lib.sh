# Helpers for the VM scenarios (sourced by init.sh; busybox ash).
#
# Result lines go to the result port ($RES, the second serial port, which the host reads into
# its own file); everything else goes to the console. Result lines:
#   NETLAT-SCENARIO <name> dst=<ip:port>   the destination netlat reports this scenario's
#                                          connects under (host groups netlat's lines by it)
#   NETLAT-CLIENT <name> i=.. connect_s=.. sport=.. backend=.. err=..   one per client connect
#   NETLAT-LAB <name> PASS|FAIL [why]      whether the lab itself did what it should
#   NETLAT-INFO <key> <value...>           facts (kernel, timings, sysctls)

: "${RES:=/dev/console}"

# busybox's shell runs its own applets before searching PATH, and its `ip` knows no netns, veth
# or nft-era options: always run iproute2's.
ip() { /usr/sbin/ip "$@"; }

res() { echo "$*" >>"$RES"; }
log() { echo "vm: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# Per-scenario lab verdict: `fail NAME why` records a failure; `lab_done NAME` reports it.
fail() {
	echo "$2" >>"/tmp/labfail.$1"
	log "$1: lab check failed: $2"
}
lab_done() {
	if [ -s "/tmp/labfail.$1" ]; then
		res "NETLAT-LAB $1 FAIL $(tr '\n' ';' <"/tmp/labfail.$1")"
	else
		res "NETLAT-LAB $1 PASS"
	fi
}

# x lo hi: lo <= x < hi (floats).
between() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x + 0 >= lo && x + 0 < hi) }'; }

ns_add() {
	ip netns add "$1" && ip -n "$1" link set lo up
}
in_ns() {
	ns=$1
	shift
	ip netns exec "$ns" "$@"
}

# veth NS_A IF_A ADDR_A NS_B IF_B ADDR_B
veth() {
	ip link add "$2" netns "$1" type veth peer name "$5" netns "$4" &&
		ip -n "$1" addr add "$3" dev "$2" &&
		ip -n "$4" addr add "$6" dev "$5" &&
		ip -n "$1" link set "$2" up &&
		ip -n "$4" link set "$5" up
}

# serve NS ADDR PORT MODE ID: an nlvm server in NS; waits until it listens. Its PID is added to
# $PIDS (killed by `stop_all`).
serve() {
	f=/tmp/serve.$1.$3
	in_ns "$1" nlvm serve "$2" "$3" "$4" "$5" >"$f" 2>&1 &
	PIDS="$PIDS $!"
	i=0
	while [ $i -lt 100 ]; do
		grep -q ready "$f" 2>/dev/null && return 0
		sleep 0.05
		i=$((i + 1))
	done
	log "server $1 $2:$3 did not start: $(cat "$f")"
	return 1
}

stop_all() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	PIDS=
}

# client NAME NS ARGS...: runs `nlvm connect ARGS` in NS, reports every connect line and keeps
# them in $OUT (one per line).
client() {
	name=$1
	ns=$2
	shift 2
	OUT=$(in_ns "$ns" nlvm connect "$@" 2>&1)
	echo "$OUT" | while read -r l; do
		[ -n "$l" ] && res "NETLAT-CLIENT $name $l"
	done
	log "$name: $(echo "$OUT" | tr '\n' '|')"
}

# field KEY LINE_NUMBER: a key=value field of line N (0-based) of $OUT.
field() {
	echo "$OUT" | awk -v k="$1" -v n="$2" 'NR == n + 1 { for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2) }'
}

# ct_stat NS COLUMN: sum over CPUs of a /proc/net/stat/nf_conntrack column (hex) in NS.
ct_stat() {
	in_ns "$1" cat /proc/net/stat/nf_conntrack | {
		read -r header
		col=0
		i=1
		for h in $header; do
			[ "$h" = "$2" ] && col=$i
			i=$((i + 1))
		done
		sum=0
		while read -r row; do
			[ $col -gt 0 ] || break
			v=$(echo "$row" | awk -v c=$col '{ print $c }')
			sum=$((sum + 0x$v))
		done
		echo $sum
	}
}

# ns_sysctl NS KEY VALUE (KEY dotted, as sysctl(8) takes it).
ns_sysctl() {
	in_ns "$1" sh -c "echo $3 >/proc/sys/$(echo "$2" | tr . /)"
}
