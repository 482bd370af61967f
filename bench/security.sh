#!/usr/bin/env bash
# What the security kind costs (docs/benchmarks.md): a loop of one syscall,
# made by coral-bench, with
#   none        nothing attached
#   floor       empty raw_tp sys_enter + sys_exit (coral-bench floor)
#   coral       ebpf-programs/src/bpf/security.bpf.c (its three programs,
#               as the agent attaches them), no filter: the loop is traced
#               and, for setuid and capset, every call is an event (ring
#               buffer 64 MiB and drained every 5 ms, so events are written,
#               not dropped)
#   coral-pid   the same with --pid of an idle process: what the kind costs
#               the processes it does not watch
#   bpftrace    the closest peer that runs here: a bpftrace script on the
#               syscalls:sys_{enter,exit}_{setuid,capset} tracepoints that
#               prints pid, parent, comm, uid before and after and the
#               result of each call (libbpf-tools `capable` needs a kprobe
#               on cap_capable: this kernel has none)
# for three loops: getppid (a syscall nobody reports), setuid(getuid()) and
# capset (the current sets again): both real credential changes, reported.
#
#   bash bench/security.sh                 (as root)
#
# Knobs: ITERS, REPS (default 5), ROUNDS, CPU, BUILD=0, QUIET_WAIT as in
# syscall-overhead.sh; SYSCALLS (default "getppid setuid capset").
set -euo pipefail

ITERS=${ITERS:-1000000}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-}
BUILD=${BUILD:-1}
read -r -a SYSCALLS <<<"${SYSCALLS:-getppid setuid capset}"
CONFIGS=(none floor coral coral-pid bpftrace)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/coral-security.XXXXXX)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
clang=${CORAL_CLANG:-clang-19}
command -v "$clang" >/dev/null || die "$clang not found (set CORAL_CLANG)"
command -v bpftrace >/dev/null || die "bpftrace not found in PATH"

idle_pid=
tracer_pid=
reader_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in ${stats_watch_pid:-} $tracer_pid $reader_pid $idle_pid; do
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
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
	echo "building coral-bench (release)..." >&2
	cargo build --release --quiet -p coral-bench
fi
cp "$root/target/release/coral-bench" "$work/" || die "target/release/coral-bench missing (build first)"
bench=$work/coral-bench

arch=$(uname -m)
case $arch in x86_64) tarch=x86 ;; aarch64) tarch=arm64 ;; *) tarch=$arch ;; esac
"$clang" -g -O2 -Wall -Werror -target bpf "-D__TARGET_ARCH_$tarch" "-I/usr/include/$arch-linux-gnu" \
	-Iebpf-programs/src/bpf -c ebpf-programs/src/bpf/security.bpf.c -o "$work/coral.o"
progs=(--prog coral_sec_enter=sys_enter --prog coral_sec_exit=sys_exit
	--prog coral_sec_exec=sched_process_exec --max-entries events=67108864)

cat >"$work/peer.bt" <<'BT'
tracepoint:syscalls:sys_enter_setuid, tracepoint:syscalls:sys_enter_capset { @uid[tid] = uid; }
tracepoint:syscalls:sys_exit_setuid, tracepoint:syscalls:sys_exit_capset {
	printf("%s %d %d %s uid %d->%d ret %d\n", probe, pid, curtask->real_parent->tgid, comm,
		@uid[tid], uid, args->ret);
	delete(@uid[tid]);
}
BT
mkfifo "$work/bt.fifo"

sleep 100000 &
idle_pid=$!

start_tracer() {
	local cfg=$1 log=$work/$1.log
	: >"$log"
	case $cfg in
	none) return ;;
	floor) "$bench" floor >"$log" 2>&1 & ;;
	coral) "$bench" attach "$work/coral.o" "${progs[@]}" >"$log" 2>&1 & ;;
	coral-pid) "$bench" attach "$work/coral.o" "${progs[@]}" --pid "$idle_pid" >"$log" 2>&1 & ;;
	bpftrace)
		# Its output is read (and thrown away) as fast as it comes. It is
		# block-buffered, so attachment is seen in bpftool, not in it.
		cat "$work/bt.fifo" >/dev/null &
		reader_pid=$!
		bpftrace -o "$work/bt.fifo" "$work/peer.bt" 2>"$work/bpftrace.err" &
		;;
	esac
	tracer_pid=$!
	for _ in $(seq 300); do
		if [[ $cfg == bpftrace ]]; then
			(($(bpftool perf list 2>/dev/null | grep -c "pid $tracer_pid .*sys_exit_capset") > 0)) && return 0
		else
			grep -q '^attached' "$log" && return 0
		fi
		kill -0 "$tracer_pid" 2>/dev/null || die "$cfg did not attach: $(cat "$log" "$work/bpftrace.err" 2>/dev/null)"
		sleep 0.1
	done
	die "$cfg not attached after 30s: $(cat "$log")"
}

stop_tracer() {
	[[ -n $tracer_pid ]] || return 0
	local pid=$tracer_pid
	kill -0 "$pid" 2>/dev/null || die "$1 exited while measured: $(cat "$work/$1.log")"
	tracer_pid=
	kill -INT "$pid"
	wait "$pid" 2>/dev/null || true
	if [[ -n $reader_pid ]]; then
		wait "$reader_pid" 2>/dev/null || true
		reader_pid=
	fi
}

expected_hooks() {
	case $1 in
	none | bpftrace) echo 0 ;; # bpftrace's are sys_enter_setuid & co.
	*) echo 2 ;;
	esac
}

for LOOP_SYSCALL in "${SYSCALLS[@]}"; do
	unset samples flagged
	declare -A samples flagged
	total_start=$SECONDS
	run_rounds
	print_report $((SECONDS - total_start))
	# Coral's added cost against the peer's.
	declare -A med
	for cfg in none coral bpftrace; do
		s=${samples[$cfg]:-${flagged[$cfg]:-}}
		med[$cfg]=$(median <<<"$s")
	done
	awk -v n="${med[none]}" -v c="${med[coral]}" -v b="${med[bpftrace]}" 'BEGIN {
		printf "traced/untraced: coral %.2fx, bpftrace %.2fx", c / n, b / n
		if (b - n > 0) printf "; coral adds %.2fx what bpftrace adds", (c - n) / (b - n)
		printf "\n"
	}'
done
