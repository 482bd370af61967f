#!/usr/bin/env bash
# Overhead of Coral's dns collector on a DNS query loop (docs/benchmarks.md,
# "## dns overhead").
#
# coral-bench dns-loop sends A queries over UDP to a local dnsmasq (started
# here on a free port with a one-name hosts file), one at a time, each
# waiting for its answer, and prints the CPU ns per query of the loop's
# thread and of dnsmasq (on loopback the answers' softirq runs in dnsmasq's
# send, the queries' in the loop's: what BPF programs on the packet hooks
# cost is in one of the two), the best of REPS runs of ITERS queries. CPU
# time, not wall time, so preemption by other work on a shared machine is
# left out. It is run, in one go, with:
#   none           nothing attached
#   syscall-floor  empty raw_tp sys_enter/sys_exit programs (coral-bench floor):
#                  the least a design on the socket syscalls would pay, and
#                  every other syscall on the machine with it
#   packet-floor   empty tp_btf net_dev_queue/netif_receive_skb programs
#                  (bench/variants/dns_floor.bpf.c): the least any program on
#                  the hooks the dns kind uses pays, per packet
#   coral          the dns collector, filtered to the loop's pid
#   coral-other    the dns collector filtered to another (idle) process: what
#                  processes it does not watch pay
# Rounds go round-robin over the configurations (starting one further each
# round); the median over rounds is reported, with each configuration's
# ratio to none and its cost over none against the packet floor's.
#
# Needs root, clang-19, bpftool, dnsmasq (Debian dnsmasq-base).
# Usage: bash bench/dns.sh
# Knobs (environment): ITERS (queries per run, default 20000), REPS (runs
# per measurement, fastest kept, default 3), ROUNDS (default 5), CONFIGS (a
# subset of the configurations above), BUILD=0 (use target/release as is).
set -euo pipefail

ITERS=${ITERS:-20000}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-5}
BUILD=${BUILD:-1}
ALL_CONFIGS=(none syscall-floor packet-floor coral coral-other)
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sock=/tmp/coral-bench-dns.sock
work=$(mktemp -d /tmp/coral-bench-dns.XXXXXX)

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
for tool in bpftool dnsmasq clang-19 python3; do
	command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done

agent_pid=
dnsmasq_pid=
idle_pid=
tracer_pid=
loop_pid=
collector=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $collector ]]; then
		"$work/bin/coral" --agent "unix://$sock" tap stop "$collector" >/dev/null 2>&1 || true
	fi
	for pid in $loop_pid $tracer_pid $idle_pid $dnsmasq_pid $agent_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $loop_pid $tracer_pid $idle_pid $dnsmasq_pid $agent_pid; do
		wait "$pid" 2>/dev/null || true
	done
	rm -f "$sock"
	if [[ $rc -ne 0 ]]; then
		echo "${0##*/}: failed (exit $rc); logs kept in $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $BUILD != 0 ]]; then
	echo "building (release)..." >&2
	cargo build --release --quiet -p coral-agent -p coral-cli -p coral-bench
fi
mkdir "$work/bin"
for b in coral-agent coral coral-bench; do
	cp "$root/target/release/$b" "$work/bin/" || die "target/release/$b missing (build first)"
done
bench=$work/bin/coral-bench
coral=("$work/bin/coral" --agent "unix://$sock")
clang-19 -g -O2 -target bpf -D__TARGET_ARCH_x86 -I"$root/ebpf-programs/src/bpf" \
	-c "$root/bench/variants/dns_floor.bpf.c" -o "$work/floor.bpf.o"

port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "127.0.0.5 alpha.test" >"$work/hosts"
dnsmasq --no-daemon --port="$port" --listen-address=127.0.0.1 --bind-interfaces --no-resolv \
	--no-hosts --addn-hosts="$work/hosts" --local=/test/ --conf-file=/dev/null --pid-file= \
	--user=root --cache-size=1000 >"$work/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!

rm -f "$sock"
"$work/bin/coral-agent" --listen "unix://$sock" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
	"${coral[@]}" caps >/dev/null 2>&1 && break
	kill -0 "$agent_pid" 2>/dev/null || die "coral-agent exited: $(cat "$work/agent.log")"
	sleep 0.1
done
"${coral[@]}" caps >/dev/null || die "coral-agent does not answer on $sock"
"$bench" dns-loop --server "127.0.0.1:$port" --iters 100 --reps 1 >/dev/null ||
	die "dnsmasq does not answer: $(cat "$work/dnsmasq.log")"

sleep 100000 &
idle_pid=$!

wait_for_line() {
	local log=$1 pattern=$2
	for _ in $(seq 150); do
		grep -q -- "$pattern" "$log" 2>/dev/null && return 0
		kill -0 "$tracer_pid" 2>/dev/null || die "tracer exited before attaching: $(cat "$log")"
		sleep 0.1
	done
	die "tracer not attached after 15s: $(cat "$log")"
}

# Attaches configuration $1; $2 is the loop's pid.
start_tracer() {
	local cfg=$1 pid=$2 log=$work/$1.log
	case $cfg in
	none) ;;
	syscall-floor)
		"$bench" floor >"$log" 2>&1 &
		tracer_pid=$!
		wait_for_line "$log" "^attached"
		;;
	packet-floor)
		"$bench" attach "$work/floor.bpf.o" --prog dns_floor_egress=net_dev_queue \
			--prog dns_floor_ingress=netif_receive_skb >"$log" 2>&1 &
		tracer_pid=$!
		wait_for_line "$log" "^attached"
		;;
	coral | coral-other)
		local target=$pid
		[[ $cfg == coral-other ]] && target=$idle_pid
		collector=$("${coral[@]}" tap start --kind dns --dns-port "$port" --duration 10m \
			--pid "$target" 2>>"$log") || die "coral tap start failed: $(cat "$log")"
		;;
	esac
}

# Detaches configuration $1; checks what Coral counted.
stop_tracer() {
	local cfg=$1 log=$work/$1.log
	if [[ -n $collector ]]; then
		local id=$collector
		collector=
		"${coral[@]}" -o json tap stop "$id" >/dev/null 2>>"$log" || die "coral tap stop failed: $(cat "$log")"
		local stats
		stats=$("${coral[@]}" -o json tap events "$id" | tail -1)
		local queries dropped
		queries=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1])["record"]["dnsStats"]; print(s.get("queries", 0), int(s.get("droppedEvents", 0)) + int(s.get("droppedInflight", 0)))' "$stats")
		read -r queries dropped <<<"$queries"
		local want=$((ITERS * REPS))
		if [[ $cfg == coral ]] && ((queries + dropped < want)); then
			die "Coral counted $queries queries ($dropped lost), expected at least $want"
		fi
		if [[ $cfg == coral-other ]] && ((queries != 0)); then
			die "Coral filtered to pid $idle_pid counted $queries queries"
		fi
		[[ $cfg == coral ]] && echo "$queries $dropped" >>"$work/coral.counts"
	fi
	if [[ -n $tracer_pid ]]; then
		kill -0 "$tracer_pid" 2>/dev/null || die "$cfg exited while measured: $(cat "$log")"
		kill -TERM "$tracer_pid"
		wait "$tracer_pid" 2>/dev/null || true
		tracer_pid=
	fi
}

# CPU ns a process has used (its process CPU clock: ((~pid) << 3) | 2).
cpu_of() { python3 -c 'import sys, time; print(time.clock_gettime_ns(((~int(sys.argv[1])) << 3) | 2))' "$1"; }

declare -A samples agent_cpu
n=${#CONFIGS[@]}
for ((round = 0; round < ROUNDS; round++)); do
	for ((k = 0; k < n; k++)); do
		cfg=${CONFIGS[(round + k) % n]}
		coproc LOOP { "$bench" dns-loop --server "127.0.0.1:$port" --server-pid "$dnsmasq_pid" --iters "$ITERS" --reps "$REPS" --wait; }
		loop_pid=$LOOP_PID
		read -r ready pid <&"${LOOP[0]}"
		[[ $ready == ready ]] || die "dns-loop said $ready $pid"
		start_tracer "$cfg" "$pid"
		a0=$(cpu_of "$agent_pid")
		echo go >&"${LOOP[1]}"
		read -r out <&"${LOOP[0]}"
		a1=$(cpu_of "$agent_pid")
		agent_cpu[$cfg]+="$(((a1 - a0) / (ITERS * REPS))) "
		wait "$loop_pid" || die "dns-loop failed"
		loop_pid=
		stop_tracer "$cfg"
		ns=${out%% *}
		samples[$cfg]+="$ns "
		printf 'round %d/%d  %-14s %s\n' $((round + 1)) "$ROUNDS" "$cfg" "$out" >&2
	done
done

declare -A med
for cfg in "${CONFIGS[@]}"; do
	med[$cfg]=$(median <<<"${samples[$cfg]}")
done
echo
echo "DNS query loop over UDP to dnsmasq on 127.0.0.1: CPU ns per query (loop + dnsmasq), $ITERS queries per run, best of $REPS, median of $ROUNDS rounds"
printf '%-14s %10s %14s %8s %10s %14s\n' configuration ns/query range ratio added "added/floor"
base=${med[none]:-}
floor=${med[packet-floor]:-}
for cfg in "${CONFIGS[@]}"; do
	m=${med[$cfg]}
	range=$(minmax <<<"${samples[$cfg]}")
	if [[ -n $base ]]; then
		ratio=$(awk -v m="$m" -v b="$base" 'BEGIN { printf "%.3f", m / b }')
		added=$(awk -v m="$m" -v b="$base" 'BEGIN { printf "%+.0f", m - b }')
	else
		ratio=- added=-
	fi
	if [[ -n $base && -n $floor ]] && awk -v f="$floor" -v b="$base" 'BEGIN { exit !(f - b > 0) }'; then
		vs=$(awk -v m="$m" -v b="$base" -v f="$floor" 'BEGIN { printf "%.2fx", (m - b) / (f - b) }')
	else
		vs=-
	fi
	printf '%-14s %10s %14s %8s %10s %14s\n' "$cfg" "$m" "$range" "$ratio" "$added" "$vs"
done
echo
echo "coral-agent's own CPU ns per query (draining and parsing the events; median): $(for cfg in "${CONFIGS[@]}"; do printf '%s %s  ' "$cfg" "$(median <<<"${agent_cpu[$cfg]}")"; done)"
if [[ -f $work/coral.counts ]]; then
	echo
	echo "coral counted (queries, lost) per measurement: $(tr '\n' ';' <"$work/coral.counts")"
fi
