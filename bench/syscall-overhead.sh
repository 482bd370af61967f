#!/usr/bin/env bash
# Syscall overhead of Coral's syscall-stats collector against its peers
# (docs/benchmarks.md, "## syscall-stats overhead").
#
# A tight getppid loop (coral-bench loop, pinned to one CPU, timed in thread
# CPU time so preemption by other work on a shared machine is left out; BPF
# programs on the syscall hooks run in the thread and are counted) is run with
# nothing attached, with empty raw_tp sys_enter/sys_exit programs (the floor:
# what any tracer on these hooks pays before doing any work), with Coral on
# the whole machine, with Coral filtered to another (idle) process, with
# libbpf-tools syscount and syscount -L, and with a bpftrace count. Rounds go
# round-robin over the configurations (starting one further each round) so
# drift on a shared machine hits every configuration alike; the median over
# rounds is reported.
#
# Needs root, clang-19, bpftool, bpftrace and libbpf-tools' syscount.
# Usage: bash bench/syscall-overhead.sh
# Knobs (environment): ITERS (getppid calls per run, default 1000000),
# REPS (runs per measurement, fastest kept, default 7), ROUNDS (default 5),
# CPU (CPU the loop is pinned to, default: the last one), CONFIGS (a
# space-separated subset of the configurations below, default all), BUILD=0
# (use the binaries already in target/release instead of building), QUIET_WAIT
# (seconds in all to wait for other syscall tracers or BPF stats to go away
# before measuring anyway and flagging the sample, default 120).
set -euo pipefail

ITERS=${ITERS:-1000000}
REPS=${REPS:-7}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-}
BUILD=${BUILD:-1}
ALL_CONFIGS=(none floor coral coral-pid coral-nolat coral-nolat-pid syscount syscount-L bpftrace)
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sock=/tmp/coral-bench.sock
work=$(mktemp -d /tmp/coral-bench.XXXXXX)

# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
for tool in bpftool bpftrace syscount stdbuf; do
	command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done

# --- clean-up of everything started below --------------------------------
agent_pid=
idle_pid=
tracer_pid=
collector=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $collector ]]; then
		"$work/bin/coral" --agent "unix://$sock" tap stop "$collector" >/dev/null 2>&1 || true
	fi
	for pid in ${stats_watch_pid:-} $tracer_pid $idle_pid $agent_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in ${stats_watch_pid:-} $tracer_pid $idle_pid $agent_pid; do
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

# --- build and set up ------------------------------------------------------
if [[ $BUILD != 0 ]]; then
	echo "building (release)..." >&2
	cargo build --release --quiet -p coral-agent -p coral-cli -p coral-bench
fi
# Private copies: a rebuild of target/ during the run cannot swap them.
mkdir "$work/bin"
for b in coral-agent coral coral-bench; do
	cp "$root/target/release/$b" "$work/bin/" || die "target/release/$b missing (build first)"
done
bench=$work/bin/coral-bench
coral=("$work/bin/coral" --agent "unix://$sock")

# libbpf-tools attach tracepoints through tracefs; the agent would mount it
# too, but syscount may run first.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

rm -f "$sock"
"$work/bin/coral-agent" --listen "unix://$sock" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
	"${coral[@]}" caps >/dev/null 2>&1 && break
	kill -0 "$agent_pid" 2>/dev/null || die "coral-agent exited: $(cat "$work/agent.log")"
	sleep 0.1
done
"${coral[@]}" caps >/dev/null || die "coral-agent does not answer on $sock"

# An idle process for the pid-filtered case: its filter matches nothing hot.
sleep 100000 &
idle_pid=$!

# Waits (up to 15 s) until log $1 of tracer $tracer_pid contains $2.
wait_for_line() {
	local log=$1 pattern=$2
	for _ in $(seq 150); do
		grep -q -- "$pattern" "$log" 2>/dev/null && return 0
		kill -0 "$tracer_pid" 2>/dev/null || die "tracer exited before attaching: $(cat "$log")"
		sleep 0.1
	done
	die "tracer not attached after 15s: $(cat "$log")"
}

# bpftrace prints "Attaching N probes..." before it attaches: also wait
# until its perf_event tracepoint link shows up.
wait_for_bpftrace() {
	wait_for_line "$1" "Attaching"
	for _ in $(seq 150); do
		bpftool perf list 2>/dev/null | grep -q "^pid $tracer_pid .*tracepoint *sys_enter" && return 0
		kill -0 "$tracer_pid" 2>/dev/null || die "bpftrace exited: $(cat "$1")"
		sleep 0.1
	done
	die "bpftrace not attached after 15s: $(cat "$1")"
}

# Attaches configuration $1 (returns once it is attached).
start_tracer() {
	local cfg=$1 log=$work/$1.log
	case $cfg in
	none) ;;
	floor)
		"$bench" floor >"$log" 2>&1 &
		tracer_pid=$!
		wait_for_line "$log" "^attached"
		;;
	coral)
		collector=$("${coral[@]}" tap start --kind syscall-stats --duration 10m 2>>"$log") ||
			die "coral tap start failed: $(cat "$log")"
		;;
	coral-pid)
		collector=$("${coral[@]}" tap start --kind syscall-stats --duration 10m --pid "$idle_pid" 2>>"$log") ||
			die "coral tap start --pid failed: $(cat "$log")"
		;;
	coral-nolat)
		collector=$("${coral[@]}" tap start --kind syscall-stats --no-latency --duration 10m 2>>"$log") ||
			die "coral tap start --no-latency failed: $(cat "$log")"
		;;
	coral-nolat-pid)
		collector=$("${coral[@]}" tap start --kind syscall-stats --no-latency --duration 10m --pid "$idle_pid" 2>>"$log") ||
			die "coral tap start --no-latency --pid failed: $(cat "$log")"
		;;
	syscount)
		stdbuf -oL syscount >"$log" 2>&1 &
		tracer_pid=$!
		wait_for_line "$log" "^Tracing syscalls"
		;;
	syscount-L)
		stdbuf -oL syscount -L >"$log" 2>&1 &
		tracer_pid=$!
		wait_for_line "$log" "^Tracing syscalls"
		;;
	bpftrace)
		stdbuf -oL bpftrace -e 'tracepoint:raw_syscalls:sys_enter { @[args->id] = count(); }' >"$log" 2>&1 &
		tracer_pid=$!
		wait_for_bpftrace "$log"
		;;
	esac
}

# Detaches configuration $1; fails if the tracer died while measured.
stop_tracer() {
	local cfg=$1 log=$work/$1.log
	if [[ -n $collector ]]; then
		local id=$collector
		collector=
		"${coral[@]}" tap stop "$id" >"$work/$cfg.result" 2>>"$log" ||
			die "coral tap stop $id failed: $(cat "$log")"
		# The whole-machine collector must have seen the loop; the filtered one must not.
		local seen
		seen=$(awk '$1 == "getppid" && $2 ~ /^[0-9]+$/ { print $2; exit }' "$work/$cfg.result")
		if [[ ($cfg == coral || $cfg == coral-nolat) && ${seen:-0} -lt $ITERS ]]; then
			die "Coral counted ${seen:-no} getppid calls, expected at least $ITERS"
		fi
		if [[ $cfg == *-pid && -n $seen ]]; then
			die "Coral filtered to pid $idle_pid counted $seen getppid calls"
		fi
	fi
	if [[ -n $tracer_pid ]]; then
		local pid=$tracer_pid
		kill -0 "$pid" 2>/dev/null || die "$cfg exited while measured: $(cat "$log")"
		tracer_pid=
		kill -INT "$pid"
		wait "$pid" 2>/dev/null || true
	fi
}

# How many sys_enter/sys_exit programs configuration $1 itself attaches.
expected_hooks() {
	case $1 in
	none) echo 0 ;;
	bpftrace | coral-nolat*) echo 1 ;;
	*) echo 2 ;;
	esac
}

total_start=$SECONDS
run_rounds
print_report $((SECONDS - total_start))
