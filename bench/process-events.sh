#!/usr/bin/env bash
# Cost per exec of Coral's process-events collector against libbpf-tools
# execsnoop and exitsnoop (docs/benchmarks.md, "## process-events overhead").
#
# An exec-heavy loop (coral-bench spawn: /bin/true run ITERS times in a row,
# posix_spawn + wait; CPU time per run of the loop and its children, where
# the tracers' exec and exit hooks run, the best of REPS measurements) with
# nothing attached, with Coral process-events on the whole machine (exec and
# exit events: argv, exit status, lifetime, cgroup and container), with Coral
# following an idle process's children (the fork hook runs for every fork,
# nothing matches), with execsnoop, with exitsnoop, and with both snoops at
# once (what it takes them to report exec and exit, as Coral does). Output of
# the snoops goes to files, as when logged. Rounds go round-robin over the
# configurations, starting one further each round, so drift on a shared
# machine hits every configuration alike; per round, each configuration's
# added cost is its time minus that round's "none"; the median over rounds
# is reported with its quartiles, and the tracer's own CPU time per run (user
# + system of its process, exited threads included, from /proc/PID/stat: the
# agent for Coral, the snoops for them; summed over all rounds, since a
# clock tick is several runs' worth), and the sum of both.
#
# Needs root and libbpf-tools' execsnoop and exitsnoop.
# Usage: bash bench/process-events.sh
# Knobs (environment): ITERS (runs per measurement, default 2000), REPS
# (measurements per round, fastest kept, default 3), ROUNDS (default 7),
# CONFIGS (subset of: none coral coral-pid execsnoop exitsnoop snoops),
# BUILD=0 (use the binaries already in target/release).
set -euo pipefail

ITERS=${ITERS:-2000}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-7}
BUILD=${BUILD:-1}
ALL_CONFIGS=(none coral coral-pid execsnoop exitsnoop snoops)
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sock=/tmp/coral-bench-proc.sock
work=$(mktemp -d /tmp/coral-bench-proc.XXXXXX)

die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
for tool in execsnoop exitsnoop stdbuf python3; do
	command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done
[[ " ${CONFIGS[*]} " == *" none "* ]] || die "CONFIGS must include none (the base of the added cost)"

# --- clean-up of everything started below --------------------------------
agent_pid=
idle_pid=
tracer_pids=()
collector=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $collector ]]; then
		"$work/bin/coral" --agent "unix://$sock" tap stop "$collector" >/dev/null 2>&1 || true
	fi
	for pid in "${tracer_pids[@]}" $agent_pid $idle_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${tracer_pids[@]}" $agent_pid $idle_pid; do
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

# execsnoop and exitsnoop attach their tracepoints through tracefs.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

rm -f "$sock"
"$work/bin/coral-agent" --listen "unix://$sock" >>"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
	"${coral[@]}" caps >/dev/null 2>&1 && break
	kill -0 "$agent_pid" 2>/dev/null || die "coral-agent exited: $(cat "$work/agent.log")"
	sleep 0.1
done
"${coral[@]}" caps >/dev/null || die "coral-agent does not answer on $sock"
# coral-pid follows this idle process's children: it has none.
sleep 1d &
idle_pid=$!

# Starts snoop $1 (output to $2), waits until it is attached.
start_snoop() {
	local tool=$1 log=$2
	stdbuf -oL "$tool" >"$log" 2>&1 &
	tracer_pids+=($!)
	for _ in $(seq 150); do
		# Both print their column titles once attached.
		grep -q "PID" "$log" 2>/dev/null && return 0
		kill -0 "${tracer_pids[-1]}" 2>/dev/null || die "$tool exited: $(cat "$log")"
		sleep 0.1
	done
	die "$tool not attached after 15s: $(cat "$log")"
}

# Attaches configuration $1 (returns once it is attached).
start_tracer() {
	local cfg=$1 log=$work/$1.log
	: >"$log"
	case $cfg in
	none) ;;
	coral)
		collector=$("${coral[@]}" tap start --kind process-events --duration 10m 2>>"$log") ||
			die "coral tap start failed: $(cat "$log")"
		;;
	coral-pid)
		collector=$("${coral[@]}" tap start --kind process-events --duration 10m --pid "$idle_pid" 2>>"$log") ||
			die "coral tap start failed: $(cat "$log")"
		;;
	execsnoop | exitsnoop) start_snoop "$cfg" "$log" ;;
	snoops)
		start_snoop execsnoop "$log.exec"
		start_snoop exitsnoop "$log.exit"
		;;
	esac
}

# CPU time (user + system, in ns; clock-tick resolution) process $1 has used
# so far, its exited threads included (a per-thread sum would lose them).
hz=$(getconf CLK_TCK)
run_ns() {
	awk -v hz="$hz" '{ printf "%d\n", ($14 + $15) * 1e9 / hz }' "/proc/$1/stat"
}

# Run time (ns) of the tracers of configuration $1 so far.
tracer_ns() {
	local t=0 pid
	case $1 in
	coral | coral-pid) t=$(run_ns "$agent_pid") ;;
	execsnoop | exitsnoop | snoops)
		for pid in "${tracer_pids[@]}"; do
			t=$((t + $(run_ns "$pid")))
		done
		;;
	esac
	echo "$t"
}

# Lines of $1 that name /bin/true's runs (execsnoop: "true", exitsnoop: "true").
true_lines() {
	grep -c -w "true" "$1" 2>/dev/null || true
}

# Detaches configuration $1 and prints the execs and exits it saw and what it
# said it lost (sanity check against the runs made).
stop_tracer() {
	local cfg=$1 log=$work/$1.log pid
	case $cfg in
	none) echo 0 0 0 ;;
	coral | coral-pid)
		"${coral[@]}" tap stop "$collector" >/dev/null 2>>"$log" || die "coral tap stop failed: $(cat "$log")"
		"${coral[@]}" -o json tap events "$collector" >"$work/coral.json" 2>>"$log" ||
			die "coral tap events failed: $(cat "$log")"
		collector=
		python3 - "$work/coral.json" <<-'EOF'
			import json, sys
			execs = exits = dropped = 0
			for line in open(sys.argv[1]):
			    rec = json.loads(line).get("record", {})
			    if rec.get("final") and "processStats" in rec:
			        s = rec["processStats"]
			        execs = int(s.get("execs", 0))
			        exits = int(s.get("exits", 0))
			        dropped = int(s.get("droppedEvents", 0))
			print(execs, exits, dropped)
		EOF
		;;
	execsnoop | exitsnoop | snoops)
		for pid in "${tracer_pids[@]}"; do
			kill -0 "$pid" 2>/dev/null || die "a snoop exited while measured: $(cat "$log"*)"
			kill -INT "$pid"
			wait "$pid" 2>/dev/null || true
		done
		tracer_pids=()
		case $cfg in
		execsnoop) echo "$(true_lines "$log")" 0 0 ;;
		exitsnoop) echo 0 "$(true_lines "$log")" 0 ;;
		snoops) echo "$(true_lines "$log.exec")" "$(true_lines "$log.exit")" 0 ;;
		esac
		;;
	esac
}

runs=$(((ITERS / 10 + 1) + ITERS * REPS))
declare -A ns added tracer_ns_total

n=${#CONFIGS[@]}
for ((round = 0; round < ROUNDS; round++)); do
	for ((k = 0; k < n; k++)); do
		cfg=${CONFIGS[(round + k) % n]}
		start_tracer "$cfg"
		before=$(tracer_ns "$cfg")
		out=$("$bench" spawn --iters "$ITERS" --reps "$REPS")
		tracer_ns_total[$cfg]=$((${tracer_ns_total[$cfg]:-0} + $(tracer_ns "$cfg") - before))
		tracer=$((($(tracer_ns "$cfg") - before) / runs))
		stop_tracer "$cfg" >"$work/seen"
		read -r execs exits lost <"$work/seen"
		# Every run is one exec and one exit; other processes only add.
		case $cfg in
		coral | execsnoop | snoops)
			((execs + lost >= runs)) || die "$cfg saw $execs execs (lost $lost) of $runs runs"
			;;
		esac
		case $cfg in
		coral | exitsnoop | snoops)
			((exits + lost >= runs)) || die "$cfg saw $exits exits (lost $lost) of $runs runs"
			;;
		esac
		ns[$cfg,$round]=${out%% *}
		printf 'round %d  %-10s %9s ns/run  execs/exits/lost %s  tracer %s ns/run\n' \
			"$round" "$cfg" "${ns[$cfg,$round]}" "$execs/$exits/$lost" "$tracer" >&2
	done
	for cfg in "${CONFIGS[@]}"; do
		added[$cfg]+="$((ns[$cfg,$round] - ns[none,$round])) "
	done
done

median() {
	tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# First and third quartiles, "q1..q3" (nearest rank).
quartiles() {
	tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { q1 = int((NR + 3) / 4); q3 = int((3 * NR + 3) / 4); print v[q1] ".." v[q3] }'
}
ratio() {
	local a=$1 e=$2
	if [[ -n $e ]] && awk -v e="$e" 'BEGIN { exit !(e > 0) }'; then
		awk -v a="$a" -v e="$e" 'BEGIN { printf "%.2f", a / e }'
	else
		echo -
	fi
}

echo
echo "process-events overhead: /bin/true x $ITERS (CPU of loop + children, best of $REPS) x $ROUNDS rounds;" \
	"kernel $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf '%-10s %9s %8s %17s %6s %8s %8s %6s\n' CONFIG "NS/RUN" "ADDED" "ADDED Q1..Q3" "xEXEC" "TRACER" "TOTAL" "xEXEC"
declare -A a_med t_run
for cfg in "${CONFIGS[@]}"; do
	a_med[$cfg]=$(median <<<"${added[$cfg]}")
	t_run[$cfg]=$((${tracer_ns_total[$cfg]:-0} / (runs * ROUNDS)))
done
exec_added=${a_med[execsnoop]:-}
exec_total=
[[ -n $exec_added ]] && exec_total=$(awk -v a="$exec_added" -v t="${t_run[execsnoop]}" 'BEGIN { print a + t }')
for cfg in "${CONFIGS[@]}"; do
	all=
	for ((round = 0; round < ROUNDS; round++)); do all+="${ns[$cfg,$round]} "; done
	a=${a_med[$cfg]}
	t=$(awk -v a="$a" -v t="${t_run[$cfg]}" 'BEGIN { print a + t }')
	printf '%-10s %9s %8s %17s %6s %8s %8s %6s\n' "$cfg" "$(median <<<"$all")" "$a" "$(quartiles <<<"${added[$cfg]}")" \
		"$(ratio "$a" "$exec_added")" "${t_run[$cfg]}" "$t" "$(ratio "$t" "$exec_total")"
done
echo "(ns per /bin/true run. NS/RUN: median over rounds. ADDED: NS/RUN minus that round's none, median and"
echo " quartiles over rounds. TRACER: the tracer's own CPU per run, over all rounds. TOTAL: ADDED + TRACER."
echo " xEXEC: as a multiple of execsnoop's.)"
