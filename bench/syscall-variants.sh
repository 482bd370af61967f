#!/usr/bin/env bash
# Where syscall-stats' per-syscall cost goes (docs/benchmarks.md): the same
# getppid loop as syscall-overhead.sh, with variants of the BPF program
# (bench/variants/syscall_stats_variants.bpf.c) that each drop or replace one
# piece, plus the real ebpf-programs/src/bpf/syscall_stats.bpf.c, all loaded
# by `coral-bench attach` (which fills the filter globals as the agent does).
#
# Needs root, clang-19 and bpftool. Usage: bash bench/syscall-variants.sh
# Knobs: ITERS, REPS (default 5 here), ROUNDS, CPU, BUILD=0, QUIET_WAIT as in
# syscall-overhead.sh; CONFIGS (a space-separated subset of the
# configurations below).
set -euo pipefail

ITERS=${ITERS:-1000000}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-}
BUILD=${BUILD:-1}

# name | clang -D knobs (or "coral" for the real program) | attach arguments
VARIANTS=(
	"enter-stamp|-DEXIT_EMPTY -DNO_TIME|"
	"stamp-lookup|-DNO_TIME -DNO_RECORD|"
	"stamp-lookup-time|-DNO_RECORD|"
	"full||"
	"coral|coral|"
	"coral-pid|coral|--pid IDLE"
	"exit-filter-pid|-DEXIT_FILTER|--pid IDLE"
	"count-exit-rawtp|-DCOUNT_AT_EXIT -DEXIT_RAWTP|"
	"count-exit-tpbtf|-DCOUNT_AT_EXIT|"
	"sampled-64|-DCOUNT_AT_EXIT -DSAMPLE=64|"
)
ALL_CONFIGS=(none floor)
for v in "${VARIANTS[@]}"; do
	ALL_CONFIGS+=("${v%%|*}")
done
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/coral-variants.XXXXXX)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
command -v bpftool >/dev/null || die "bpftool not found in PATH"
clang=${CORAL_CLANG:-clang-19}
command -v "$clang" >/dev/null || die "$clang not found (set CORAL_CLANG)"
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done

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

# The same flags as ebpf-programs/build.rs, plus leave unused helpers alone.
arch=$(uname -m)
case $arch in x86_64) tarch=x86 ;; aarch64) tarch=arm64 ;; *) tarch=$arch ;; esac
bpf_cc() {
	"$clang" -g -O2 -Wall -Werror -Wno-unused-function -Wno-unused-variable \
		-Wno-unused-but-set-variable -target bpf "-D__TARGET_ARCH_$tarch" \
		"-I/usr/include/$arch-linux-gnu" -I"$root/ebpf-programs/src/bpf" "$@"
}
declare -A object attach_args
for v in "${VARIANTS[@]}"; do
	IFS='|' read -r name knobs args <<<"$v"
	if [[ $knobs == coral ]]; then
		object[$name]=$work/coral.o
		[[ -f $work/coral.o ]] || bpf_cc -c ebpf-programs/src/bpf/syscall_stats.bpf.c -o "$work/coral.o"
	else
		object[$name]=$work/$name.o
		# shellcheck disable=SC2086 # knobs are several -D flags
		bpf_cc $knobs -c bench/variants/syscall_stats_variants.bpf.c -o "$work/$name.o"
	fi
	attach_args[$name]=$args
done

# An idle process for the pid-filtered cases: the filter matches nothing hot.
sleep 100000 &
idle_pid=$!

start_tracer() {
	local cfg=$1 log=$work/$1.log args
	: >"$log"
	case $cfg in
	none) return ;;
	floor) "$bench" floor >"$log" 2>&1 & ;;
	*)
		read -r -a args <<<"${attach_args[$cfg]//IDLE/$idle_pid}"
		"$bench" attach "${object[$cfg]}" "${args[@]}" >"$log" 2>&1 &
		;;
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
	count-exit-*) echo 1 ;;
	*) echo 2 ;;
	esac
}

total_start=$SECONDS
run_rounds
print_report $((SECONDS - total_start))
