#!/usr/bin/env bash
# Overhead of Coral's cpu-profile collector against bpftrace
# (docs/benchmarks.md, "## cpu-profile overhead").
#
# A CPU-bound workload (coral-burn: hot_alpha/hot_beta in a 3:1 ratio, one
# thread pinned to one CPU, built with frame pointers as tests/build.rs does)
# runs SECS seconds with nothing attached, with Coral's cpu-profile on the
# whole machine at 49, 99 and 999 Hz and on the workload's pid at 999 Hz, and
# with
# `bpftrace -e 'profile:hz:99 { @[kstack, ustack, comm] = count(); }'`.
#
# Throughput is counted per CPU-second of the workload: this kernel has no
# IRQ time accounting, so a profiler's timer interrupts and BPF program are
# charged to the task they interrupt and show up as fewer rounds per
# CPU-second, while time that other work on a shared machine takes from the
# workload does not. Wall-clock rounds/s are printed too. Rounds go
# round-robin over the configurations (starting one further each round) so
# drift hits every configuration alike; medians over rounds are reported.
#
# For Coral it also reports the samples taken, the BPF program's mean run
# time per sample (kernel.bpf_stats_enabled), the agent's CPU time per 10,000
# samples (the whole process: map reads, symbolization, gRPC) and the
# symbolizer thread's own CPU time per 10,000 samples (from the agent's log).
#
# Needs root, rustc/cargo, bpftrace, bpftool, jq, taskset.
# Usage: bash bench/cpu-profile.sh
# Knobs (environment): SECS (seconds per run, default 5), ROUNDS (default 5),
# CPU (CPU the workload is pinned to, default: the last one), CONFIGS (a
# subset of: none coral-49 coral-99 coral-999 coral-999-pid bpftrace-99),
# BUILD=0 (use the binaries already in target/release).
set -euo pipefail

SECS=${SECS:-5}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-$(($(nproc) - 1))}
BUILD=${BUILD:-1}
ALL_CONFIGS=(none coral-49 coral-99 coral-999 coral-999-pid bpftrace-99)
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/coral-cpu-bench.XXXXXX)
sock=$work/agent.sock

die() {
	echo "cpu-profile.sh: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
for tool in bpftrace bpftool jq taskset rustc; do
	command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done

agent_pid=
tracer_pid=
collector=
stats_before=$(cat /proc/sys/kernel/bpf_stats_enabled)

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $collector ]]; then
		"$work/coral" --agent "unix://$sock" tap stop "$collector" >/dev/null 2>&1 || true
	fi
	if [[ -n $tracer_pid ]]; then
		kill -INT "$tracer_pid" 2>/dev/null || true
		wait "$tracer_pid" 2>/dev/null || true
	fi
	if [[ -n $agent_pid ]]; then
		kill "$agent_pid" 2>/dev/null || true
		wait "$agent_pid" 2>/dev/null || true
	fi
	echo "$stats_before" >/proc/sys/kernel/bpf_stats_enabled
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT INT TERM

# --- binaries: copied, so a concurrent build cannot swap them mid-run -----
if [[ $BUILD == 1 ]]; then
	cargo build --release -q -p coral-agent -p coral-cli
fi
cp target/release/coral-agent target/release/coral "$work/"
# The flags tests/build.rs uses: optimised, line tables, frame pointers.
rustc --edition 2024 --crate-name coral_burn --crate-type bin -C opt-level=2 \
	-C debuginfo=1 -C force-frame-pointers=yes -o "$work/coral-burn" tests/burn/coral-burn.rs

coral() { "$work/coral" --agent "unix://$sock" "$@"; }

# utime + stime of a process, in ms (USER_HZ is 100).
cpu_ms() { awk '{ sub(/^.*\) /, ""); print ($12 + $13) * 10 }' "/proc/$1/stat"; }

RUST_LOG=warn,coral_agent::collectors::cpu_profile=info NO_COLOR=1 \
	"$work/coral-agent" --listen "unix://$sock" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
	coral caps >/dev/null 2>&1 && break
	sleep 0.1
done
coral caps >/dev/null || die "the agent did not come up (see $work/agent.log)"
echo 1 >/proc/sys/kernel/bpf_stats_enabled

# Mean run time per call of BPF program $1 so far, in ns ("-" if unknown).
bpf_ns() {
	bpftool -j prog show id "$1" |
		jq -r 'if (.run_cnt // 0) > 0 then (.run_time_ns / .run_cnt | floor) else "-" end'
}

# perf_event-attached BPF programs held by anyone but the agent and the
# bpftrace under test: another profiler would slow the workload too.
foreign_perf() {
	bpftool -j perf list | jq --argjson a "${agent_pid:-0}" --argjson t "${tracer_pid:-0}" \
		'[.[] | select(.fd_type == "perf_event" and .pid != $a and .pid != $t)] | length'
}

# Waits until file $2 has a line matching $1, at most $3 seconds.
wait_for() {
	local deadline=$((SECONDS + $3))
	until grep -q "$1" "$2" 2>/dev/null; do
		((SECONDS < deadline)) || die "no '$1' in $2 after $3s"
		sleep 0.05
	done
}

# One measurement: prints "rounds/cpu-s rounds/s samples agent_ms bpf_ns sym_ms
# flag" ("-" where a field does not apply; flag "*" when a foreign perf_event
# program was attached before or after).
measure() {
	local config=$1 out burned ops samples=- agent_ms=- bpf=- sym_ms=- flag=-
	local agent_before prog= burner wl_pid fifo=$work/go
	(($(foreign_perf) == 0)) || flag="*"
	# Someone else on the machine may have turned statistics off meanwhile.
	echo 1 >/proc/sys/kernel/bpf_stats_enabled

	# The workload waits for "go" on stdin, so a collector can be filtered
	# on its pid before it burns.
	rm -f "$fifo" "$work/burn.out"
	mkfifo "$fifo"
	taskset -c "$CPU" "$work/coral-burn" --wait --seconds "$SECS" --report \
		<"$fifo" >"$work/burn.out" &
	burner=$!
	exec 3>"$fifo"
	wait_for '^ready' "$work/burn.out" 10
	wl_pid=$(awk '/^ready/ { print $2 }' "$work/burn.out")

	case $config in
	coral-*)
		local hz=${config#coral-} filter=()
		hz=${hz%-pid}
		[[ $config == *-pid ]] && filter=(--pid "$wl_pid")
		agent_before=$(cpu_ms "$agent_pid")
		collector=$(coral -o json tap start --kind cpu-profile -F "$hz" "${filter[@]}" \
			--duration "$((SECS + 30))s" | jq -r .collector.id)
		prog=$(coral -o json tap get "$collector" | jq -r '.bpfProgramIds[0]')
		;;
	bpftrace-99)
		# 3>&-: it must not hold the workload's stdin open.
		bpftrace -e 'profile:hz:99 { @[kstack, ustack, comm] = count(); }' \
			>"$work/bpftrace.out" 2>&1 3>&- &
		tracer_pid=$!
		# Until its probes are attached.
		for _ in $(seq 100); do
			grep -q "Attaching" "$work/bpftrace.out" && break
			sleep 0.1
		done
		sleep 0.5
		prog=$(bpftool -j prog show | jq -r '[.[] | select(.type == "perf_event"
			and .name != "coral_cpu_sample")] | max_by(.id) | .id')
		;;
	esac

	echo go >&3
	wait_for '^ops' "$work/burn.out" $((SECS * 4 + 10))
	exec 3>&-
	wait "$burner"
	out=$(cat "$work/burn.out")
	burned=$(awk '/^burned/ { print $2 }' <<<"$out")
	ops=$(awk '/^ops/ { print $2 }' <<<"$out")
	[[ -n $prog ]] && bpf=$(bpf_ns "$prog")
	(($(foreign_perf) == 0)) || flag="*"

	case $config in
	coral-*)
		local sym_before sym_after
		sym_before=$(grep -c "cpu-profile symbolization" "$work/agent.log" || true)
		coral tap stop "$collector" >/dev/null
		samples=$(coral -o json tap events "$collector" |
			jq -r 'select(.record.final) | .record.cpuProfile.totalSamples // 0')
		collector=
		agent_ms=$(($(cpu_ms "$agent_pid") - agent_before))
		# The worker logs its own CPU time once it ends (right after the stop).
		for _ in $(seq 50); do
			sym_after=$(grep -c "cpu-profile symbolization" "$work/agent.log" || true)
			((sym_after > sym_before)) && break
			sleep 0.1
		done
		sym_ms=$(grep "cpu-profile symbolization" "$work/agent.log" | tail -1 |
			sed -E 's/\x1b\[[0-9;]*m//g; s/.*symbolize_cpu_ms=([0-9.]+).*/\1/')
		;;
	bpftrace-99)
		kill -INT "$tracer_pid"
		wait "$tracer_pid" || true
		tracer_pid=
		;;
	esac
	awk -v o="$ops" -v b="$burned" -v s="$SECS" \
		'BEGIN { printf "%.1f %.1f ", o / b, o / s }'
	echo "$samples $agent_ms $bpf $sym_ms $flag"
}

echo "workload: coral-burn, 1 thread pinned to CPU $CPU, ${SECS}s per run, $ROUNDS rounds" >&2
echo "kernel $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" >&2
n=${#CONFIGS[@]}
for ((round = 0; round < ROUNDS; round++)); do
	for ((i = 0; i < n; i++)); do
		config=${CONFIGS[$(((i + round) % n))]}
		result=$(measure "$config")
		echo "round $((round + 1)) $config $result" >&2
		echo "$((round + 1)) $config $result" >>"$work/results"
	done
done

# results: round config cpu wall samples agent_ms bpf_ns sym_ms flag
median() {
	awk '$1 != "-"' | sort -g |
		awk '{ v[NR] = $1 } END { if (!NR) print "-"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
field() { awk -v c="$1" -v k="$2" '$2 == c { print $k }' "$work/results"; }
col() { field "$1" "$2" | median; }
round() { awk '{ if ($1 == "-") print; else printf "%.0f\n", $1 }'; }
range() { field "$1" "$2" | awk '$1 != "-"' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }'; }
# Per round: the configuration's rounds/CPU-s over the unprofiled run's of the
# same round, as a change in percent.
ratios() {
	awk -v c="$1" '{ cpu[$1 " " $2] = $3 } END { for (k in cpu) { split(k, f, " "); if (f[2] == c && cpu[f[1] " none"] > 0) printf "%.2f\n", (cpu[k] / cpu[f[1] " none"] - 1) * 100 } }' \
		"$work/results"
}
# Field $2 per 10,000 samples (field 5), per round, median.
per10k() {
	awk -v c="$1" -v k="$2" '$2 == c && $5 != "-" && $5 > 0 && $k != "-" { printf "%.0f\n", $k * 10000 / $5 }' \
		"$work/results" | median
}
flagged() { awk -v c="$1" '$2 == c && $9 == "*"' "$work/results" | wc -l; }

printf '\n| configuration | rounds/CPU-s (median) | vs none, median [min, max] of rounds | rounds/s wall (median) | BPF µs/sample | rounds with a foreign profiler |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for c in "${CONFIGS[@]}"; do
	if [[ $c == none ]]; then
		vs="-"
	else
		read -r lo hi < <(ratios "$c" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }')
		vs=$(printf '%+.2f%% [%+.2f, %+.2f]' "$(ratios "$c" | median)" "$lo" "$hi")
	fi
	bpf=$(col "$c" 7)
	[[ $bpf != - ]] && bpf=$(awk -v b="$bpf" 'BEGIN { printf "%.1f", b / 1000 }')
	printf '| %s | %.1f | %s | %.1f | %s | %s |\n' "$c" "$(col "$c" 3)" "$vs" "$(col "$c" 4)" "$bpf" "$(flagged "$c")"
done

printf '\n| configuration | samples | agent CPU ms | agent CPU ms / 10k samples | symbolizer CPU ms | symbolizer CPU ms / 10k samples |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for c in "${CONFIGS[@]}"; do
	[[ $c == coral-* ]] || continue
	read -r slo shi < <(range "$c" 8)
	printf '| %s | %s | %s | %s | %.0f [%.0f, %.0f] | %s |\n' "$c" "$(col "$c" 5 | round)" "$(col "$c" 6)" \
		"$(per10k "$c" 6 | round)" "$(col "$c" 8)" "$slo" "$shi" "$(per10k "$c" 8 | round)"
done
