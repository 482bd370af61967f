#!/usr/bin/env bash
# The colony's ingest: one coral-colony (release build) pulling from many
# agents at once, on SQLite and on PostgreSQL. The agents are
# coral-fake-agents: a test double speaking the real agent API (GetEvents,
# StreamEvents with seq cursors) on one Unix socket per agent, registered
# like `coral-agent --colony`, whose collectors make synthetic records
# (http-latency request events) at a fixed rate without the kernel, so the
# colony, not BPF, is what is measured.
#
# One fleet tap of DURATION seconds on every agent; the agents make
# AGENTS * RATE records a second between them. Measured: the time from
# StartFleetTap until every member is complete (every record stored), the
# records stored per second over that time, whether any was lost, the
# colony's peak RSS (sampled every 0.2 s), and the store's size.
#
#   bench/colony.sh [AGENTS=50] [RATE=2000] [DURATION=10] [STORES="sqlite postgres"]
#
# Needs PostgreSQL's server binaries (Debian's postgresql, from
# .ci/install-deps) for the postgres run; as root it runs them as the
# postgres user. Starts and stops everything it uses.
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${AGENTS:-50}
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
STORES=${STORES:-sqlite postgres}

cargo build --release -q -p coral-colony -p coral-cli -p coral-e2e --bin coral-colony --bin coral --bin coral-fake-agents
bin=$PWD/target/release
work=$(mktemp -d /tmp/coral-colony-bench-XXXXXX)
chmod 755 "$work"
pids=()
pg_pid=""
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ -n $pg_pid ]]; then kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_postgres() { if [[ $(id -u) -eq 0 ]]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }

start_postgres() {
	local pgbin
	pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
	mkdir -p "$work/pg"
	[[ $(id -u) -eq 0 ]] && chown postgres:postgres "$work/pg"
	as_postgres "$pgbin/initdb" -D "$work/pg/data" -A trust -U coral -E UTF8 --no-sync >/dev/null
	pg_port=$(free_port)
	# Durable commits, as a production store would have them.
	as_postgres "$pgbin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" \
		-c listen_addresses=127.0.0.1 >"$work/pg/log" 2>&1 &
	pg_pid=$!
	for _ in $(seq 100); do
		"$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
		sleep 0.1
	done
	pg_url="postgres://coral@127.0.0.1:$pg_port/postgres"
}

# peak RSS (KiB) of $1 until the file $2 exists
watch_rss() {
	local peak=0 rss
	while [[ ! -e $2 ]]; do
		rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0)
		((rss > peak)) && peak=$rss
		sleep 0.2
	done
	echo "$peak"
}

run() { # store-name url
	local name=$1 url=$2 dir="$work/$1"
	mkdir -p "$dir"
	RUST_LOG=warn "$bin/coral-colony" --listen "unix://$dir/colony.sock" --store "$url" \
		--heartbeat-interval 5s --agent-timeout 60s 2>"$dir/colony.log" &
	local colony=$!
	pids+=("$colony")
	trap 'cat "$work"/*/colony.log >&2 2>/dev/null; cleanup' ERR
	local coral=("$bin/coral" --colony "unix://$dir/colony.sock")
	for _ in $(seq 100); do "${coral[@]}" agents >/dev/null 2>&1 && break; sleep 0.1; done
	"$bin/coral-fake-agents" --colony "unix://$dir/colony.sock" --agents "$AGENTS" \
		--dir "$dir/agents" --rate "$RATE" --batch 20 >"$dir/fake.out" 2>"$dir/fake.log" &
	local fake=$!
	pids+=("$fake")
	for _ in $(seq 200); do grep -q ready "$dir/fake.out" 2>/dev/null && break; sleep 0.1; done
	local idle_rss
	idle_rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$colony/status")
	watch_rss "$colony" "$dir/done" >"$dir/peak" &
	local watcher=$!
	local t0 t1 id tap
	t0=$(date +%s.%N)
	id=$("${coral[@]}" tap start --kind http-latency --duration "${DURATION}s" --nodes all 2>/dev/null)
	while :; do
		tap=$("${coral[@]}" -o json tap get "$id")
		[[ $tap == *FLEET_TAP_STATE_ENDED* ]] && break
		sleep 0.2
	done
	t1=$(date +%s.%N)
	touch "$dir/done"
	wait "$watcher"
	local size
	if [[ $name == sqlite ]]; then
		# The file and its write-ahead log.
		size=$(du -cb "$dir"/colony.db* | tail -1 | cut -f1)
	else
		# The records table with its indexes and TOAST (not the server's WAL).
		size=$(psql -h 127.0.0.1 -p "$pg_port" -U coral -d postgres -Atc \
			"SELECT pg_total_relation_size('records')")
	fi
	python3 - "$name" "$tap" "$t0" "$t1" "$idle_rss" "$(cat "$dir/peak")" "$size" "$AGENTS" "$RATE" "$DURATION" <<'PY'
import json, sys
name, tap, t0, t1, idle, peak, size, agents, rate, duration = sys.argv[1:]
tap = json.loads(tap)
members = tap["members"]
stored = sum(int(m.get("storedRecords", 0)) for m in members)
lost = sum(int(m.get("lostRecords", 0)) for m in members)
complete = sum(m["status"] == "MEMBER_STATUS_COMPLETE" for m in members)
# Stored once per seq from 1: a member with a hole would store fewer records than its last seq.
holes = sum(int(m.get("storedSeq", 0)) - int(m.get("storedRecords", 0)) for m in members)
secs = float(t1) - float(t0)
print(f"| {name} | {agents} | {int(agents) * int(rate)} | {stored} | {complete}/{len(members)} | {lost} | {holes} "
      f"| {secs:.1f} | {stored / secs:,.0f} | {int(idle) / 1024:.0f} MiB | {int(peak) / 1024:.0f} MiB "
      f"| {int(size) / 2**20:.0f} MiB | {int(size) / max(stored, 1):.0f} |")
PY
	kill -TERM "$fake" "$colony"
	wait "$fake" "$colony" 2>/dev/null || true
}

echo "kernel $(uname -r), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "$AGENTS agents x $RATE records/s for ${DURATION}s (http-latency events)"
echo
echo "| store | agents | offered rec/s | stored | complete | lost | seq holes | seconds | stored rec/s | colony RSS idle | colony RSS peak | store size | bytes/record |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for store in $STORES; do
	case $store in
	sqlite) run sqlite "sqlite://$work/sqlite/colony.db" ;;
	postgres)
		start_postgres
		run postgres "$pg_url"
		;;
	*) echo "unknown store $store" >&2; exit 2 ;;
	esac
done
