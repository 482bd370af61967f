#!/usr/bin/env bash
# The agent's own footprint, release build: idle RSS and CPU, collector start
# latency (StartCollector RPC -> programs attached) p50/p99 per kind, and
# StreamEvents throughput to one client and to ten. Runs a private agent on a
# temporary socket; prints `key value` lines and a Markdown table.
#
#   bench/footprint.sh [--idle-secs 10] [--starts 50] [--flood 20000] [--kinds a,b]
#
# Needs root (the agent loads BPF programs). Targets: idle RSS < 30 MiB,
# start latency p99 < 100 ms.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "footprint.sh: needs root" >&2; exit 1; }
cargo build --release -q -p coral-agent -p coral-e2e --bin coral-agent --bin coral-footprint
bin=target/release
sock=$(mktemp -u /tmp/coral-footprint-XXXXXX.sock)
# A short retention, so that the RSS after the start-latency runs can be read
# again once their ended collectors are reaped.
RUST_LOG=warn "$bin/coral-agent" --listen "unix://$sock" --max-running 8 --retention 3s &
agent=$!
trap 'kill -TERM $agent 2>/dev/null; wait $agent 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { echo "footprint.sh: the agent did not come up" >&2; exit 1; }
# The start-up probe's blocking thread idles out after 10 s; measure after it.
sleep 11
echo "kernel $(uname -r), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
"$bin/coral-footprint" --socket "$sock" --pid "$agent" --settle-secs 10 "$@"
