#!/bin/busybox sh
# PID 1 of netlat's test VM (`cargo xtask vm-test`): mounts what netlat reads, loads the network
# modules, starts `netlat watch --output json` in the root namespace (`ip netns exec` would hide
# tracefs), runs the scenarios of /vm/scenarios, prints every netlat line and the lab results on
# the result port (the second serial port, read by the host), and powers off.
#
# The kernel command line may carry `netlat.only=NAME,NAME` to run only some scenario groups
# (ladder, first-syn, snat, ipvs, listen, vxlan).

/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpffs /sys/fs/bpf

RES=/dev/ttyS1
if [ -c $RES ]; then stty -F $RES raw -echo 2>/dev/null; else RES=/dev/console; fi
. /vm/lib.sh
for f in /vm/scenarios/*.sh; do . "$f"; done

finish() {
	res "NETLAT-VERDICT $1"
	res "NETLAT-END"
	sync
	poweroff -f
	reboot -f
}

V=$(uname -r)
res "NETLAT-BEGIN"
res "NETLAT-INFO kernel $V"
res "NETLAT-INFO init_s $(uptime_s)"

while read -r m args; do
	# shellcheck disable=SC2086 # module parameters are separate words
	out=$(insmod "/lib/modules/$V/$m" $args 2>&1) || case $out in
	*"File exists"*) ;;
	*) res "NETLAT-INFO insmod_failed $m $out" ;;
	esac
done </vm/modules
res "NETLAT-INFO modules_s $(uptime_s)"
res "NETLAT-INFO modules $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"

# Under a container runtime's usual locked-memory limit (64 KiB): kernels before 5.11 charge
# eBPF maps to it, so netlat must raise it itself (its 4 MiB ring alone is over it).
(
	ulimit -l 64 || res "NETLAT-ERROR cannot set ulimit -l 64"
	res "NETLAT-INFO memlock_kib $(ulimit -l)"
	exec netlat watch --output json
) >/tmp/netlat.out 2>/tmp/netlat.err &
NETLAT=$!
i=0
while [ $i -lt 1200 ] && ! grep -q '"type":"capabilities"' /tmp/netlat.out 2>/dev/null; do
	kill -0 $NETLAT 2>/dev/null || break
	sleep 0.05
	i=$((i + 1))
done
if ! grep -q '"type":"capabilities"' /tmp/netlat.out 2>/dev/null; then
	res "NETLAT-ERROR netlat did not report its hooks"
	while read -r l; do res "NETLAT-STDERR $l"; done </tmp/netlat.err
	while read -r l; do res "NETLAT-JSON $l"; done </tmp/netlat.out
	finish FAIL
fi
res "NETLAT-INFO netlat_ready_s $(uptime_s)"

ONLY=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^netlat\.only=//p')
wanted() { [ -z "$ONLY" ] || echo ",$ONLY," | grep -q ",$1,"; }

# The ladder and the VXLAN escape take over a minute of waiting each: they run alongside the
# others (and each other), so they cost the run about one ladder, not one each.
LONG=
if wanted ladder; then
	scenario_ladder &
	LONG="$LONG $!"
fi
if wanted vxlan; then
	scenario_vxlan_escape &
	LONG="$LONG $!"
fi
wanted first-syn && scenario_first_syn
wanted snat && scenario_snat_single
wanted ipvs && scenario_ipvs
res "NETLAT-INFO first_groups_s $(uptime_s)"
wanted listen && scenario_listen
wanted vxlan && scenario_vxlan_first_syn
res "NETLAT-INFO foreground_s $(uptime_s)"
for p in $LONG; do wait "$p"; done
res "NETLAT-INFO scenarios_s $(uptime_s)"

# Let the last events drain, then stop netlat as a user would (SIGINT) and wait for its summary.
sleep 1
kill -INT $NETLAT
i=0
while [ $i -lt 400 ] && kill -0 $NETLAT 2>/dev/null; do
	sleep 0.05
	i=$((i + 1))
done
if kill -0 $NETLAT 2>/dev/null; then
	res "NETLAT-ERROR netlat did not exit within 20 s of SIGINT"
	kill -KILL $NETLAT
fi
wait $NETLAT
rc=$?
res "NETLAT-INFO netlat_exit $rc"
while read -r l; do res "NETLAT-JSON $l"; done </tmp/netlat.out
head -n 100 /tmp/netlat.err | while read -r l; do res "NETLAT-STDERR $l"; done
res "NETLAT-INFO done_s $(uptime_s)"

verdict=PASS
[ "$rc" = 0 ] || verdict=FAIL
ls /tmp/labfail.* >/dev/null 2>&1 && verdict=FAIL
finish $verdict
