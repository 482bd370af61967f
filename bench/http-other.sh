#!/usr/bin/env bash
# What http-latency costs the OTHER processes of the machine while it watches
# one (docs/benchmarks.md): the loop of syscall-overhead.sh, run by a process
# the collector's pid filter does not name, with
#   none        nothing attached
#   floor       empty raw_tp sys_enter + sys_exit (coral-bench floor)
#   exit-hook   one empty tp_btf/sys_exit program
#   before-pid  the http-latency program before issue 16 (raw_tp pair, built
#               from git), --pid of an idle process
#   coral-pid   the tree's program (tp_btf/sys_exit), --pid of an idle process
# twice: with getppid (a syscall the program does not dispatch on) and with
# 64-byte writes to /dev/null (one it does: it reaches the filter).
#
#   bash bench/http-other.sh                 (as root)
#
# Knobs: ITERS, REPS (default 5), ROUNDS, CPU, BUILD=0, QUIET_WAIT as in
# syscall-overhead.sh; SYSCALLS (default "getppid write"); BEFORE_REV.
set -euo pipefail

ITERS=${ITERS:-1000000}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-}
BUILD=${BUILD:-1}
read -r -a SYSCALLS <<<"${SYSCALLS:-getppid write}"
CONFIGS=(none floor exit-hook before-pid coral-pid)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/coral-http-other.XXXXXX)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
clang=${CORAL_CLANG:-clang-19}
command -v "$clang" >/dev/null || die "$clang not found (set CORAL_CLANG)"

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
bpf_cc() {
	"$clang" -g -O2 -Wall -Werror -target bpf "-D__TARGET_ARCH_$tarch" "-I/usr/include/$arch-linux-gnu" "$@"
}
# The program before issue 16: main before the http-latency rework merged.
BEFORE_REV=${BEFORE_REV:-23114c5^1}
mkdir -p "$work/before"
for f in http_latency.bpf.c http_latency.h; do
	git show "$BEFORE_REV:ebpf-programs/src/bpf/$f" >"$work/before/$f"
done
bpf_cc -I"$work/before" -Iebpf-programs/src/bpf -c "$work/before/http_latency.bpf.c" -o "$work/before.o"
bpf_cc -Iebpf-programs/src/bpf -c ebpf-programs/src/bpf/http_latency.bpf.c -o "$work/coral.o"
bpf_cc -Iebpf-programs/src/bpf -Wno-unused-function -DEMPTY_EXIT -c bench/variants/http_latency_variants.bpf.c -o "$work/exit-hook.o"

sleep 100000 &
idle_pid=$!

start_tracer() {
	local cfg=$1 log=$work/$1.log
	: >"$log"
	case $cfg in
	none) return ;;
	floor) "$bench" floor >"$log" 2>&1 & ;;
	exit-hook) "$bench" attach "$work/exit-hook.o" >"$log" 2>&1 & ;;
	before-pid)
		"$bench" attach "$work/before.o" --prog coral_http_enter=sys_enter \
			--prog coral_http_exit=sys_exit --pid "$idle_pid" >"$log" 2>&1 &
		;;
	coral-pid) "$bench" attach "$work/coral.o" --prog coral_http_exit=sys_exit --pid "$idle_pid" >"$log" 2>&1 & ;;
	esac
	tracer_pid=$!
	for _ in $(seq 150); do
		grep -q '^attached' "$log" && return 0
		kill -0 "$tracer_pid" 2>/dev/null || die "$cfg did not attach: $(cat "$log")"
		sleep 0.1
	done
	die "$cfg not attached after 15s: $(cat "$log")"
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
	none) echo 0 ;;
	floor | before-pid) echo 2 ;;
	*) echo 1 ;;
	esac
}

for LOOP_SYSCALL in "${SYSCALLS[@]}"; do
	unset samples flagged
	declare -A samples flagged
	total_start=$SECONDS
	run_rounds
	print_report $((SECONDS - total_start))
done
