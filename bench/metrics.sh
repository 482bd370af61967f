#!/usr/bin/env bash
# What serving /metrics costs the agent (docs/benchmarks.md, "## metrics
# export"): a private release agent with --metrics-listen runs 8 exported
# collectors (every exportable kind; two syscall-stats on the whole machine,
# whose tables are the biggest there are; the event-driven kinds on an idle
# process, so that their own work does not swing with what others run, and
# a whole-machine tcp-metrics does not record the scrapes' own connections
# into its log), and is
# measured side by side with and without a scraper fetching /metrics every
# second. Rounds alternate (quiet, scraped, quiet, scraped, ...) so drift on
# a shared machine hits both alike. Event logs get small budgets
# (--max-collector-bytes 256KiB, --max-retained-bytes 2MiB) so they are full
# before the first round: heap growth after that would be the exporter's.
#
# Per round: the agent's CPU (utime + stime from /proc/PID/stat over the
# round) as a share of one CPU, and its RSS and heap (RssAnon) at the end. Then a burst: BURST
# scrapes back to back, whose CPU divided by BURST is the cost of one scrape
# (the direct measure; the rounds' difference is noisier on a shared
# machine). The report prints the medians side by side, the difference of
# each pair of rounds, the cost per scrape, the RSS after the first and the
# last round, the exposition's size and sample count, and scrape latency.
# Targets: < 1% of a CPU at one scrape a second, RSS flat. With SOAK=N it
# then goes on scraping once a second for N minutes, printing the heap and
# the event logs' retained bytes every minute: the heap must level off.
#
#   bench/metrics.sh            (ROUNDS=5 SECS=30 BURST=200 SOAK=0 by default)
#
# Needs root (collectors load BPF programs) and curl. Knobs: ROUNDS, SECS
# (seconds per round), BURST, SOAK (minutes), BUILD=0 (use target/release
# as it is).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-30}
BURST=${BURST:-200}
SOAK=${SOAK:-0}
BUILD=${BUILD:-1}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/coral-bench-metrics.XXXXXX)
sock=$work/agent.sock

die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
command -v curl >/dev/null || die "curl not found"

agent_pid=
idle_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in $idle_pid $agent_pid; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in $idle_pid $agent_pid; do wait "$pid" 2>/dev/null || true; done
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
	cargo build --release --quiet -p coral-agent -p coral-cli
fi
mkdir "$work/bin"
for b in coral-agent coral; do
	cp "target/release/$b" "$work/bin/" || die "target/release/$b missing (build first)"
done
coral=("$work/bin/coral" --agent "unix://$sock")

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port/metrics
RUST_LOG=warn "$work/bin/coral-agent" --listen "unix://$sock" --metrics-listen "127.0.0.1:$port" \
	--max-running 8 --max-collector-bytes 256KiB --max-retained-bytes 2MiB >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 200); do
	"${coral[@]}" caps >/dev/null 2>&1 && break
	kill -0 "$agent_pid" 2>/dev/null || die "coral-agent exited: $(cat "$work/agent.log")"
	sleep 0.1
done

sleep 100000 &
idle_pid=$!
duration=$((ROUNDS * SECS * 2 + SOAK * 70 + 180))s
start() {
	"${coral[@]}" tap start --export --duration "$duration" "$@" >/dev/null 2>&1 ||
		die "tap start $*: $(tail -3 "$work/agent.log")"
}
# Every exportable kind. syscall-stats on the whole machine: one row per
# syscall anything makes, the biggest tables.
start --kind syscall-stats
start --kind syscall-stats --no-latency
start --kind syscall-stats --pid "$idle_pid"
start --kind tcp-metrics --pid "$idle_pid"
start --kind http-latency --pid "$idle_pid"
start --kind process-events --pid "$idle_pid"
start --kind memory --pid "$idle_pid"
start --kind memory --pid "$agent_pid"
n=$("${coral[@]}" -o json tap list | grep -c COLLECTOR_STATE_RUNNING || true)
((n == 8)) || die "$n collectors running, not 8: $("${coral[@]}" tap list)"
# Fill the event logs to their budgets and let start-up allocations settle.
sleep 40

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$agent_pid/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status"; }
heap_kib() { awk '/^RssAnon:/ { print $2 }' "/proc/$agent_pid/status"; }

declare -a quiet_cpu scraped_cpu diffs rss_after heap_after sizes series p50s maxs
for ((r = 1; r <= ROUNDS; r++)); do
	for mode in quiet scraped; do
		t0=$(cpu_ticks)
		s0=$(date +%s.%N)
		if [[ $mode == quiet ]]; then
			sleep "$SECS"
		else
			: >"$work/scrapes"
			for ((i = 0; i < SECS; i++)); do
				next=$(date +%s.%N)
				curl -s -o "$work/last.txt" -w '%{size_download} %{time_total}\n' "$url" >>"$work/scrapes"
				# One scrape a second, however long one takes.
				sleep "$(awk -v n="$next" -v now="$(date +%s.%N)" 'BEGIN { d = 1 - (now - n); print (d > 0) ? d : 0 }')"
			done
		fi
		t1=$(cpu_ticks)
		s1=$(date +%s.%N)
		pct=$(awk -v a="$t0" -v b="$t1" -v t="$ticks" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.3f", 100 * (b - a) / t / (s1 - s0) }')
		rss_after+=("$(rss_kib)")
		heap_after+=("$(heap_kib)")
		if [[ $mode == quiet ]]; then
			quiet_cpu+=("$pct")
		else
			scraped_cpu+=("$pct")
			diffs+=("$(awk -v a="${quiet_cpu[-1]}" -v b="$pct" 'BEGIN { printf "%.3f", b - a }')")
			sizes+=("$(tail -1 "$work/scrapes" | cut -d' ' -f1)")
			series+=("$(grep -vc '^#' "$work/last.txt")")
			p50s+=("$(cut -d' ' -f2 "$work/scrapes" | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", 1000 * v[int((NR + 1) / 2)] }')")
			maxs+=("$(cut -d' ' -f2 "$work/scrapes" | sort -g | tail -1 | awk '{ printf "%.1f", 1000 * $1 }')")
		fi
		printf 'round %d/%d  %-8s agent CPU %6s%% of one CPU  RSS %s KiB  heap %s KiB\n' "$r" "$ROUNDS" "$mode" "$pct" "$(rss_kib)" "$(heap_kib)" >&2
	done
done

# The burst: BURST scrapes back to back.
t0=$(cpu_ticks)
b0=$(date +%s.%N)
for ((i = 0; i < BURST; i++)); do
	curl -s -o /dev/null "$url"
done
t1=$(cpu_ticks)
b1=$(date +%s.%N)
per_scrape_ms=$(awk -v a="$t0" -v b="$t1" -v t="$ticks" -v n="$BURST" 'BEGIN { printf "%.2f", 1000 * (b - a) / t / n }')
burst_secs=$(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.1f", b - a }')
rss_after+=("$(rss_kib)")
heap_after+=("$(heap_kib)")

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
q=$(median "${quiet_cpu[@]}")
s=$(median "${scraped_cpu[@]}")
echo
d=$(median "${diffs[@]}")
echo "/metrics every 1 s, 8 exported collectors, $ROUNDS x $SECS s per mode, then $BURST scrapes back to back; kernel $(uname -r), $(nproc) CPUs," \
	"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-26s %12s %12s %10s\n' "" "not scraped" "scraped" "ratio"
printf '%-26s %11s%% %11s%% %10s\n' "agent CPU (median)" "$q" "$s" \
	"$(awk -v q="$q" -v s="$s" 'BEGIN { if (q > 0) printf "%.2fx", s / q; else print "-" }')"
printf '%-26s %s\n' "scraped - quiet, per pair" "median $d% of one CPU (${diffs[*]})"
printf '%-26s %s\n' "one scrape (burst)" "$per_scrape_ms ms of agent CPU ($BURST in $burst_secs s): at 1/s $(awk -v m="$per_scrape_ms" 'BEGIN { printf "%.2f", m / 10 }')% of one CPU"
printf '%-26s %s\n' "agent RSS" "${rss_after[0]} KiB after the first round -> ${rss_after[-1]} KiB after the burst ($((ROUNDS * SECS + BURST)) scrapes); per round: ${rss_after[*]}"
printf '%-26s %s\n' "agent heap (RssAnon)" "${heap_after[0]} KiB -> ${heap_after[-1]} KiB; per round: ${heap_after[*]}"
printf '%-26s %12s bytes, %s samples\n' "exposition" "${sizes[-1]}" "${series[-1]}"
printf '%-26s %12s ms p50, %s ms max (last round)\n' "scrape latency" "${p50s[-1]}" "${maxs[-1]}"
printf '%-26s %s\n' "per-round CPU" "quiet: ${quiet_cpu[*]}; scraped: ${scraped_cpu[*]}"

if ((SOAK > 0)); then
	echo
	echo "soak: one scrape a second for $SOAK min"
	retained() { curl -s "$url" | awk '/^coral_retained_bytes / { print $2 }'; }
	printf 'min %3d  RSS %6s KiB  heap %6s KiB  logs retain %s bytes\n' 0 "$(rss_kib)" "$(heap_kib)" "$(retained)"
	for ((m = 1; m <= SOAK; m++)); do
		for ((i = 0; i < 60; i++)); do
			curl -s -o /dev/null "$url"
			sleep 1
		done
		printf 'min %3d  RSS %6s KiB  heap %6s KiB  logs retain %s bytes\n' "$m" "$(rss_kib)" "$(heap_kib)" "$(retained)"
	done
fi
