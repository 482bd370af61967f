#!/usr/bin/env bash
# http-latency overhead: nginx (Debian) serving a small file under wrk, side
# by side in one run:
#   none      no tracing
#   floor     empty raw_tp sys_enter + sys_exit programs (coral-bench floor):
#             the hooks Coral uses, with no work in them
#   tp-hooks  bpftrace with empty actions on the 14 per-syscall tracepoints
#             (syscalls:sys_{enter,exit}_*) a per-syscall design would use:
#             why Coral does not
#   coral     Coral http-latency filtered on the nginx worker's pid
# Rounds rotate the configurations so drift on a shared machine hits all alike.
#
#   bash bench/http-latency.sh            (as root; ROUNDS=5 DURATION=10 by default)
#
# Prints requests/s and mean latency (wrk's), the throughput ratio, and the
# nginx CPU time per request (utime+stime of the workers from /proc, so the
# added cost per request is measured, not inferred).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
PORT=${PORT:-18980}

.ci/install-deps
cargo build --release -q -p coral-agent -p coral-cli -p coral-bench
agent=target/release/coral-agent
coral=target/release/coral
work=$(mktemp -d /tmp/coral-http-bench.XXXXXX)
sock="unix://$work/agent.sock"

cleanup() {
	[[ -f $work/nginx.pid ]] && kill -TERM "$(cat "$work/nginx.pid")" 2>/dev/null || true
	[[ -n ${agent_pid:-} ]] && kill -TERM "$agent_pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www"
head -c 612 /dev/zero | tr '\0' 'x' >"$work/www/index.html"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/body; proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fcgi; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  server { listen 127.0.0.1:$PORT; root $work/www; }
}
CONF
nginx -p "$work" -c "$work/nginx.conf"
for _ in $(seq 50); do [[ -s $work/nginx.pid ]] && break; sleep 0.1; done
master=$(cat "$work/nginx.pid")
workers=$(pgrep -P "$master" | tr '\n' ' ')
[[ -n $workers ]] || { echo "no nginx workers" >&2; exit 1; }

"$agent" --listen "$sock" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do "$coral" --agent "$sock" caps >/dev/null 2>&1 && break; sleep 0.1; done

cpu_ticks() { # utime+stime of the workers, in clock ticks
	local total=0 pid
	for pid in $workers; do
		total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
	done
	echo "$total"
}

url="http://127.0.0.1:$PORT/index.html"
wrk -t1 -c4 -d1s "$url" >/dev/null # warm up

declare -A rps lat cpu_us
run() { # $1: config name
	local id="" before after out bt=""
	if [[ $1 == floor ]]; then
		target/release/coral-bench floor >"$work/floor.log" 2>&1 &
		bt=$!
		for _ in $(seq 100); do grep -q attached "$work/floor.log" && break; sleep 0.1; done
	fi
	if [[ $1 == tp-hooks ]]; then
		local probes="tracepoint:syscalls:sys_enter_read"
		for t in sys_enter_recvfrom sys_enter_readv sys_enter_recvmsg sys_exit_read sys_exit_recvfrom \
			sys_exit_readv sys_exit_recvmsg sys_enter_write sys_enter_sendto sys_enter_writev \
			sys_enter_sendmsg sys_exit_accept4 sys_enter_close; do
			probes+=",tracepoint:syscalls:$t"
		done
		bpftrace -e "$probes { }" >"$work/bpftrace.log" 2>&1 &
		bt=$!
		for _ in $(seq 100); do grep -q Attaching "$work/bpftrace.log" && break; sleep 0.1; done
		sleep 0.5
	fi
	if [[ $1 == coral ]]; then
		local args=()
		for pid in $workers; do args+=(--pid "$pid"); done
		id=$("$coral" --agent "$sock" tap start --kind http-latency "${args[@]}" --duration 10m 2>/dev/null)
	fi
	before=$(cpu_ticks)
	out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$url")
	after=$(cpu_ticks)
	[[ -n $id ]] && "$coral" --agent "$sock" tap stop "$id" >/dev/null
	if [[ -n $bt ]]; then kill -INT "$bt" 2>/dev/null; wait "$bt" 2>/dev/null || true; fi
	local r l n
	r=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
	l=$(awk '$1 == "Latency" && NF >= 4 { print $2; exit }' <<<"$out")
	n=$(awk '/requests in/ { print $1 }' <<<"$out")
	rps[$1]+="$r "
	lat[$1]+="$l "
	# CPU µs per request: ticks are 1/CLK_TCK s.
	cpu_us[$1]+="$(awk -v t=$((after - before)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }') "
	local c=${cpu_us[$1]% }
	printf 'round %d  %-6s %10s req/s  %8s avg  %s µs CPU/req\n' "$round" "$1" "$r" "$l" "${c##* }" >&2
}

configs=(none floor tp-hooks coral)
for ((round = 1; round <= ROUNDS; round++)); do
	for k in 0 1 2 3; do run "${configs[(round + k) % 4]}"; done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
r_none=$(median <<<"${rps[none]}")
r_coral=$(median <<<"${rps[coral]}")
r_floor=$(median <<<"${rps[floor]}")
c_floor=$(median <<<"${cpu_us[floor]}")
r_tp=$(median <<<"${rps[tp-hooks]}")
c_tp=$(median <<<"${cpu_us[tp-hooks]}")
c_none=$(median <<<"${cpu_us[none]}")
c_coral=$(median <<<"${cpu_us[coral]}")
echo
echo "nginx 1 worker, wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS rounds (medians); kernel $(uname -r), $(nproc) CPUs"
printf '%-28s %12s %12s %10s\n' config "req/s" "nginx CPU/req" "req/s ratio"
printf '%-28s %12s %10s µs %10s\n' "no tracing" "$r_none" "$c_none" "1.000"
printf '%-28s %12s %10s µs %10s\n' "floor (empty raw_tp pair)" "$r_floor" "$c_floor" \
	"$(awk -v a="$r_floor" -v b="$r_none" 'BEGIN { printf "%.3f", a / b }')"
printf '%-28s %12s %10s µs %10s\n' "syscalls:* tps (bpftrace)" "$r_tp" "$c_tp" \
	"$(awk -v a="$r_tp" -v b="$r_none" 'BEGIN { printf "%.3f", a / b }')"
printf '%-28s %12s %10s µs %10s\n' "coral http-latency --pid" "$r_coral" "$c_coral" \
	"$(awk -v a="$r_coral" -v b="$r_none" 'BEGIN { printf "%.3f", a / b }')"
awk -v a="$r_coral" -v b="$r_none" -v ca="$c_coral" -v cb="$c_none" 'BEGIN {
	printf "throughput loss: %.1f%% (target: under 5%%); added nginx CPU per request: %.2f µs\n", (1 - a / b) * 100, ca - cb }'
