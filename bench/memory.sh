#!/usr/bin/env bash
# Cost of Coral's memory collector on an allocation-heavy process
# (docs/benchmarks.md, "## memory overhead").
#
# The load is `coral-grow churn` (tests/src/bin/coral-grow.rs): mmap 64 MiB,
# write one byte in every page, munmap, ITERS times; it prints the best of
# REPS runs in ns per page, in the thread's CPU time (page faults and
# munmap's work included, time preempted by others left out), pinned to one
# CPU. Every page fault changes the process's anon counter, so every page
# runs the rss_stat program once: this is the hook's worst case.
#
# Configurations:
#   none         nothing attached;
#   floor        an empty program on tp_btf/rss_stat
#                (bench/variants/memory_floor.bpf.c): what any program on
#                the hook costs before it does anything;
#   coral        a memory collector on the whole machine: the load is tracked,
#                each fault re-reads its counters and every MiB is sent on
#                the ring buffer;
#   coral-other  a memory collector with a pid filter naming another process:
#                the load's faults are turned away by the filter.
# Rounds go round-robin over the configurations, starting one further each
# round, so drift on a shared machine hits every configuration alike. The
# report gives the median ns/page, its range, the medians of the per-round
# ratios to "none" and to "floor", and the CPU time the agent used.
#
# Needs root, clang-19 and bpftool. Usage: bash bench/memory.sh
# Knobs (environment): ITERS (64 MiB cycles per run, default 20), REPS (runs
# per sample, best kept, default 3), ROUNDS (default 7), CPU (default: the
# last one), CONFIGS (subset of: none floor coral coral-other), BUILD=0 (use the
# binaries already in target/release).
set -euo pipefail

ITERS=${ITERS:-20}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-7}
CPU=${CPU:-$(($(nproc) - 1))}
BUILD=${BUILD:-1}
ALL_CONFIGS=(none floor coral coral-other)
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sock=/tmp/coral-bench-memory.sock
work=$(mktemp -d /tmp/coral-bench-memory.XXXXXX)

die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
command -v bpftool >/dev/null || die "bpftool not found in PATH"
clang=${CORAL_CLANG:-clang-19}
command -v "$clang" >/dev/null || die "$clang not found (set CORAL_CLANG)"
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done

agent_pid=
collector=
floor_pid=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $collector ]]; then
		"$work/bin/coral" --agent "unix://$sock" tap stop "$collector" >/dev/null 2>&1 || true
	fi
	for pid in $floor_pid $agent_pid; do
		kill -TERM "$pid" 2>/dev/null || true
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
	cargo build --release --quiet -p coral-agent -p coral-cli -p coral-e2e -p coral-bench --bins
fi
# Private copies: a rebuild of target/ during the run cannot swap them.
mkdir "$work/bin"
for b in coral-agent coral coral-grow coral-bench; do
	cp "$root/target/release/$b" "$work/bin/" || die "target/release/$b missing (build first)"
done
coral=("$work/bin/coral" --agent "unix://$sock")

# The floor's object, with the flags of ebpf-programs/build.rs.
arch=$(uname -m)
case $arch in x86_64) tarch=x86 ;; aarch64) tarch=arm64 ;; *) tarch=$arch ;; esac
"$clang" -g -O2 -Wall -Werror -target bpf "-D__TARGET_ARCH_$tarch" "-I/usr/include/$arch-linux-gnu" \
	-I"$root/ebpf-programs/src/bpf" -c "$root/bench/variants/memory_floor.bpf.c" -o "$work/floor.bpf.o"

rm -f "$sock"
"$work/bin/coral-agent" --listen "unix://$sock" >>"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
	"${coral[@]}" caps >/dev/null 2>&1 && break
	kill -0 "$agent_pid" 2>/dev/null || die "coral-agent exited: $(cat "$work/agent.log")"
	sleep 0.1
done
"${coral[@]}" caps >/dev/null || die "coral-agent does not answer on $sock"

# Programs on rss_stat attached right now (ours: coral_mem_*, memory_floor).
memory_links() {
	python3 - <(bpftool -j prog show) <(bpftool -j link show) <<-'EOF'
		import json, sys
		progs = json.load(open(sys.argv[1])) or []
		links = json.load(open(sys.argv[2])) or []
		ours = {p["id"] for p in progs if p.get("name", "").startswith(("coral_mem_", "memory_floor"))}
		print(sum(1 for l in links if l.get("prog_id") in ours))
	EOF
}

start_tracer() {
	local cfg=$1 log=$work/$1.log
	case $cfg in
	none) ;;
	floor)
		"$work/bin/coral-bench" attach "$work/floor.bpf.o" --prog memory_floor=rss_stat >"$log" 2>&1 &
		floor_pid=$!
		for _ in $(seq 150); do
			grep -q '^attached' "$log" && return 0
			kill -0 "$floor_pid" 2>/dev/null || die "floor did not attach: $(cat "$log")"
			sleep 0.1
		done
		die "floor not attached after 15s: $(cat "$log")"
		;;
	coral)
		collector=$("${coral[@]}" tap start --kind memory --duration 10m 2>>"$log") ||
			die "coral tap start failed: $(cat "$log")"
		;;
	coral-other)
		collector=$("${coral[@]}" tap start --kind memory --duration 10m --pid $$ 2>>"$log") ||
			die "coral tap start failed: $(cat "$log")"
		;;
	esac
}

stop_tracer() {
	local cfg=$1 log=$work/$1.log
	[[ $cfg == none ]] && return 0
	if [[ $cfg == floor ]]; then
		kill -INT "$floor_pid"
		wait "$floor_pid" 2>/dev/null || true
		floor_pid=
		return 0
	fi
	"${coral[@]}" tap stop "$collector" >/dev/null 2>>"$log" || die "coral tap stop failed: $(cat "$log")"
	"${coral[@]}" -o json tap events "$collector" >"$work/coral.json" 2>>"$log"
	collector=
	python3 - "$work/coral.json" <<-'EOF'
		import json, sys
		dropped = 0
		for line in open(sys.argv[1]):
		    rec = json.loads(line).get("record", {})
		    if rec.get("final") and "memoryStats" in rec:
		        dropped = int(rec["memoryStats"].get("droppedEvents", 0))
		if dropped:
		    sys.exit(f"the collector lost {dropped} updates")
	EOF
}

cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

declare -A ns ns_r cpu
n=${#CONFIGS[@]}
for ((round = 0; round < ROUNDS; round++)); do
	for ((k = 0; k < n; k++)); do
		cfg=${CONFIGS[(round + k) % n]}
		start_tracer "$cfg"
		links=$(memory_links)
		if [[ $cfg == none && $links -ne 0 ]] || [[ $cfg != none && $links -lt 1 ]]; then
			die "$cfg: $links memory program links attached"
		fi
		before=$(cpu_ticks "$agent_pid")
		read -r v _ < <("$work/bin/coral-grow" churn --iters "$ITERS" --reps "$REPS" --cpu "$CPU")
		ticks=$(($(cpu_ticks "$agent_pid") - before))
		stop_tracer "$cfg"
		ns[$cfg]+="$v "
		ns_r[$cfg,$round]=$v
		cpu[$cfg]+="$(awk -v t="$ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }') "
		printf 'round %d/%d  %-12s %8s ns/page  agent cpu %ss\n' $((round + 1)) "$ROUNDS" "$cfg" "$v" "$ticks/$hz" >&2
	done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minmax() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }

echo
echo "memory overhead: mmap/touch/munmap of 64 MiB x $ITERS (best of $REPS, thread CPU time, CPU $CPU)," \
	"median of $ROUNDS rounds; kernel $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
# The median over rounds of (configuration / $2) within a round: it cancels
# drift between rounds better than a ratio of medians.
ratio_to() {
	local cfg=$1 base=$2 r out=
	[[ -n ${ns[$base]:-} ]] || {
		echo -
		return
	}
	for ((r = 0; r < ROUNDS; r++)); do
		out+="$(awk -v a="${ns_r[$cfg,$r]}" -v b="${ns_r[$base,$r]}" 'BEGIN { printf "%.4f", a / b }') "
	done
	printf '%.3f' "$(median <<<"$out")"
}
printf '%-12s %9s %15s %8s %9s %12s\n' CONFIG NS/PAGE RANGE RATIO "/FLOOR" "AGENT CPU s"
for cfg in "${CONFIGS[@]}"; do
	printf '%-12s %9s %15s %8s %9s %12s\n' "$cfg" "$(median <<<"${ns[$cfg]}")" "$(minmax <<<"${ns[$cfg]}")" \
		"$(ratio_to "$cfg" none)" "$(ratio_to "$cfg" floor)" "$(median <<<"${cpu[$cfg]}")"
done
