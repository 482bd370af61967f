#!/usr/bin/env bash
# What the file-io kind costs (docs/benchmarks.md): a loop of one file
# operation, made by coral-bench, with
#   none        nothing attached
#   floor       empty raw_tp sys_enter + sys_exit (coral-bench floor)
#   coral       ebpf-programs/src/bpf/file_io.bpf.c (its two programs, as
#               the agent attaches them), no filter: the loop is traced
#   coral-pid   the same with --pid of an idle process: what the kind costs
#               the processes it does not watch
#   opensnoop   libbpf-tools opensnoop, the closest peer that runs here
#               (syscalls:sys_{enter,exit}_open* tracepoints, one perf-buffer
#               line per open, printed to /dev/null; fileslower and filetop
#               need kprobes, which this kernel lacks)
# for two loops: open (openat + close of a 4 KiB file: every open a record
# for file-io and a line for opensnoop) and pread (4 KiB from that file:
# counted by file-io per path, unseen by opensnoop).
#
#   bash bench/file-io.sh                  (as root)
#
# Knobs: ITERS, REPS (default 5), ROUNDS, CPU, BUILD=0, QUIET_WAIT as in
# syscall-overhead.sh; SYSCALLS (default "open pread").
set -euo pipefail

ITERS=${ITERS:-200000}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-}
BUILD=${BUILD:-1}
read -r -a SYSCALLS <<<"${SYSCALLS:-open pread}"
CONFIGS=(none floor coral coral-pid opensnoop)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/coral-file-io.XXXXXX)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
clang=${CORAL_CLANG:-clang-19}
command -v "$clang" >/dev/null || die "$clang not found (set CORAL_CLANG)"
opensnoop=$(command -v opensnoop || true)
[[ -n $opensnoop ]] || die "opensnoop not found (Debian's libbpf-tools; .ci/install-deps installs it)"
# opensnoop's tracepoints are perf events found through tracefs, which is
# not mounted at boot on every machine.
if [[ ! -d /sys/kernel/tracing/events/syscalls ]]; then
	mount -t tracefs tracefs /sys/kernel/tracing || die "cannot mount tracefs for opensnoop"
fi

idle_pid=
tracer_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in ${stats_watch_pid:-} $tracer_pid $idle_pid; do
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
	-Iebpf-programs/src/bpf -c ebpf-programs/src/bpf/file_io.bpf.c -o "$work/coral.o"
progs=(--prog coral_fio_enter=sys_enter --prog coral_fio_exit=sys_exit)

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
	opensnoop) "$opensnoop" >/dev/null 2>"$log" & ;;
	esac
	tracer_pid=$!
	for _ in $(seq 300); do
		if [[ $cfg == opensnoop ]]; then
			(($(bpftool perf list 2>/dev/null | grep -c "pid $tracer_pid .*sys_exit_openat") > 0)) && return 0
		else
			grep -q '^attached' "$log" && return 0
		fi
		kill -0 "$tracer_pid" 2>/dev/null || die "$cfg did not attach: $(cat "$log")"
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
}

expected_hooks() {
	case $1 in
	none | opensnoop) echo 0 ;; # opensnoop's are sys_enter_openat & co.
	*) echo 2 ;;
	esac
}

for LOOP_SYSCALL in "${SYSCALLS[@]}"; do
	unset samples flagged
	declare -A samples flagged
	total_start=$SECONDS
	run_rounds
	print_report $((SECONDS - total_start))
	declare -A med
	for cfg in none coral opensnoop; do
		s=${samples[$cfg]:-${flagged[$cfg]:-}}
		med[$cfg]=$(median <<<"$s")
	done
	awk -v n="${med[none]}" -v c="${med[coral]}" -v b="${med[opensnoop]}" 'BEGIN {
		printf "traced/untraced: coral %.2fx, opensnoop %.2fx", c / n, b / n
		if (b - n > 0) printf "; coral adds %.2fx what opensnoop adds", (c - n) / (b - n)
		printf "\n"
	}'
done
