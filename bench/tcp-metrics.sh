#!/usr/bin/env bash
# Cost of Coral's tcp-metrics collector against libbpf-tools tcplife
# (docs/benchmarks.md, "## tcp-metrics overhead").
#
# Loopback load from coral-tcp-load (tests/src/bin/coral-tcp-load.rs): many
# short connections (connect, 100 bytes each way, close: the whole lifecycle,
# where a connection tracer works hardest) and one bulk stream (where the
# per-ACK tcp_probe hook works hardest), each for SECS seconds, with nothing
# attached, with Coral tcp-metrics on the whole machine (closed-connection
# events + per-remote RTT histograms, retransmits, resets), with tcplife
# (closed-connection lines only, its output going to a file), and with Coral
# using its pre-6.3 fallback for the owners of accepted connections
# (CORAL_TCP_OWNER=accept: syscall tracepoints, which send every syscall
# through the slow path). Rounds go
# round-robin over the configurations, starting one further each round, so
# drift on a shared machine hits every configuration alike; medians over
# rounds are reported, with each configuration's ratio to "none" (the median
# of the per-round ratios), and the CPU time the tracer itself used.
#
# Needs root and libbpf-tools' tcplife. Usage: bash bench/tcp-metrics.sh
# Knobs (environment): SECS (per workload and round, default 5), ROUNDS
# (default 5), CLIENTS (client threads of the short-connection load, default
# 2), CONFIGS (subset of: none coral tcplife coral-accept), BUILD=0 (use the binaries
# already in target/release).
set -euo pipefail

SECS=${SECS:-5}
ROUNDS=${ROUNDS:-5}
CLIENTS=${CLIENTS:-2}
BUILD=${BUILD:-1}
ALL_CONFIGS=(none coral tcplife coral-accept)
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sock=/tmp/coral-bench-tcp.sock
sock_accept=/tmp/coral-bench-tcp-accept.sock
work=$(mktemp -d /tmp/coral-bench-tcp.XXXXXX)

die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
for tool in tcplife stdbuf python3; do
	command -v "$tool" >/dev/null || die "$tool not found in PATH"
done
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done

# --- clean-up of everything started below --------------------------------
agent_pid=
accept_pid=
tracer_pid=
collector=
collector_accept=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $collector ]]; then
		"$work/bin/coral" --agent "unix://$sock" tap stop "$collector" >/dev/null 2>&1 || true
	fi
	if [[ -n $collector_accept ]]; then
		"$work/bin/coral" --agent "unix://$sock_accept" tap stop "$collector_accept" >/dev/null 2>&1 || true
	fi
	for pid in $tracer_pid $agent_pid $accept_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $tracer_pid $agent_pid $accept_pid; do
		wait "$pid" 2>/dev/null || true
	done
	rm -f "$sock" "$sock_accept"
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
	cargo build --release --quiet -p coral-agent -p coral-cli -p coral-e2e --bins
fi
# Private copies: a rebuild of target/ during the run cannot swap them.
mkdir "$work/bin"
for b in coral-agent coral coral-tcp-load; do
	cp "$root/target/release/$b" "$work/bin/" || die "target/release/$b missing (build first)"
done
load=$work/bin/coral-tcp-load
coral=("$work/bin/coral" --agent "unix://$sock")

# tcplife attaches its tracepoint through tracefs.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

# Starts an agent on socket $1 (extra environment in $2...); prints its pid.
start_agent() {
	local at=$1 pid
	shift
	rm -f "$at"
	env "$@" "$work/bin/coral-agent" --listen "unix://$at" >>"$work/agent.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		"$work/bin/coral" --agent "unix://$at" caps >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || die "coral-agent exited: $(cat "$work/agent.log")"
		sleep 0.1
	done
	"$work/bin/coral" --agent "unix://$at" caps >/dev/null || die "coral-agent does not answer on $at"
	echo "$pid"
}
agent_pid=$(start_agent "$sock")
coral_accept=("$work/bin/coral" --agent "unix://$sock_accept")
if [[ " ${CONFIGS[*]} " == *" coral-accept "* ]]; then
	accept_pid=$(start_agent "$sock_accept" CORAL_TCP_OWNER=accept)
fi

# Attaches configuration $1 (returns once it is attached).
start_tracer() {
	local cfg=$1 log=$work/$1.log
	case $cfg in
	none) ;;
	coral)
		collector=$("${coral[@]}" tap start --kind tcp-metrics --duration 10m 2>>"$log") ||
			die "coral tap start failed: $(cat "$log")"
		;;
	coral-accept)
		collector_accept=$("${coral_accept[@]}" tap start --kind tcp-metrics --duration 10m 2>>"$log") ||
			die "coral tap start failed: $(cat "$log")"
		;;
	tcplife)
		stdbuf -oL tcplife >"$log" 2>&1 &
		tracer_pid=$!
		for _ in $(seq 150); do
			grep -q "^PID" "$log" 2>/dev/null && return 0
			kill -0 "$tracer_pid" 2>/dev/null || die "tcplife exited: $(cat "$log")"
			sleep 0.1
		done
		die "tcplife not attached after 15s: $(cat "$log")"
		;;
	esac
}

# Detaches configuration $1 and prints how many connection ends it saw and
# how many it lost (sanity check: at least two ends per connection made).
stop_tracer() {
	local cfg=$1 log=$work/$1.log
	case $cfg in
	none) echo 0 0 ;;
	coral | coral-accept)
		local id cli
		if [[ $cfg == coral ]]; then
			id=$collector cli=("${coral[@]}")
			collector=
		else
			id=$collector_accept cli=("${coral_accept[@]}")
			collector_accept=
		fi
		"${cli[@]}" tap stop "$id" >/dev/null 2>>"$log" || die "coral tap stop $id failed: $(cat "$log")"
		"${cli[@]}" -o json tap events "$id" >"$work/coral.json" 2>>"$log" ||
			die "coral tap events $id failed: $(cat "$log")"
		python3 - "$work/coral.json" <<-'EOF'
			import json, sys
			closed = dropped = 0
			for line in open(sys.argv[1]):
			    rec = json.loads(line).get("record", {})
			    if rec.get("final") and "tcpStats" in rec:
			        s = rec["tcpStats"]
			        closed = sum(int(r.get("closed", 0)) for r in s.get("remotes", []))
			        dropped = int(s.get("droppedEvents", 0))
			print(closed, dropped)
		EOF
		;;
	tcplife)
		kill -0 "$tracer_pid" 2>/dev/null || die "tcplife exited while measured: $(cat "$log")"
		cpu_ticks "$tracer_pid" >"$work/tracer_ticks"
		kill -INT "$tracer_pid"
		wait "$tracer_pid" 2>/dev/null || true
		tracer_pid=
		# Event lines, and what it says it lost ("lost N events on CPU #c").
		awk '/^[0-9]/ { n++ } /^lost [0-9]+ events/ { lost += $2 } END { print n + 0, lost + 0 }' "$log"
		;;
	esac
}

# CPU time (user + system, clock ticks) process $1 has used so far.
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

declare -A conns bulk seen cpu conns_r bulk_r

n=${#CONFIGS[@]}
for ((round = 0; round < ROUNDS; round++)); do
	for ((k = 0; k < n; k++)); do
		cfg=${CONFIGS[(round + k) % n]}
		start_tracer "$cfg"
		tracer_agent=$agent_pid
		[[ $cfg == coral-accept ]] && tracer_agent=$accept_pid
		agent_before=$(cpu_ticks "$tracer_agent")
		read -r _ made rate < <("$load" conns --secs "$SECS" --clients "$CLIENTS")
		read -r _ _ mbps < <("$load" bulk --secs "$SECS")
		# Not in a subshell: stop_tracer clears the tracer variables.
		stop_tracer "$cfg" >"$work/seen"
		read -r ends dropped <"$work/seen"
		# The tracer's own CPU: the agent's for Coral (its polling when idle
		# included), tcplife's for tcplife.
		case $cfg in
		coral | coral-accept) ticks=$(($(cpu_ticks "$tracer_agent") - agent_before)) ;;
		tcplife) ticks=$(cat "$work/tracer_ticks") ;;
		*) ticks=0 ;;
		esac
		cpu[$cfg]+="$(awk -v t="$ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }') "
		# Every connection has two ends; what a tracer says it lost counts.
		if [[ $cfg != none && $((ends + dropped)) -lt $((2 * made)) ]]; then
			die "$cfg saw $ends connection ends and lost $dropped, expected at least $((2 * made))"
		fi
		conns[$cfg]+="$rate "
		bulk[$cfg]+="$mbps "
		conns_r[$cfg,$round]=$rate
		bulk_r[$cfg,$round]=$mbps
		seen[$cfg]+="$ends/$dropped "
		printf 'round %d  %-12s %10s conn/s %9s MB/s  ends/dropped %s  tracer cpu %ss\n' \
			"$round" "$cfg" "$rate" "$mbps" "$ends/$dropped" "$ticks/$hz" >&2
	done
done

median() {
	tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
echo "tcp-metrics overhead: loopback, $SECS s per workload, median of $ROUNDS rounds, $(nproc) CPUs, $(uname -r)"
printf '%-13s %14s %8s %12s %8s %14s\n' CONFIG "CONN/s" RATIO "BULK MB/s" RATIO "TRACER CPU s"
# RATIO: the median over rounds of (configuration / none) within a round,
# which cancels drift between rounds better than a ratio of medians.
ratio() {
	local -n values=$1
	local cfg=$2 r out=
	for ((r = 0; r < ROUNDS; r++)); do
		out+="$(awk -v a="${values[$cfg,$r]}" -v b="${values[none,$r]}" 'BEGIN { printf "%.4f", a / b }') "
	done
	printf '%.3f' "$(median <<<"$out")"
}
for cfg in "${CONFIGS[@]}"; do
	c=$(median <<<"${conns[$cfg]}")
	b=$(median <<<"${bulk[$cfg]}")
	if [[ -n ${conns[none]:-} ]]; then
		rc=$(ratio conns_r "$cfg")
		rb=$(ratio bulk_r "$cfg")
	else
		rc=- rb=-
	fi
	printf '%-13s %14.1f %8s %12.1f %8s %14s\n' "$cfg" "$c" "$rc" "$b" "$rb" "$(median <<<"${cpu[$cfg]}")"
done
