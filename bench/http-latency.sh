#!/usr/bin/env bash
# http-latency overhead: nginx (Debian) serving a small file under wrk, over
# plaintext HTTP and over HTTPS, side by side in one run:
#   none       no tracing (plaintext)
#   floor      empty raw_tp sys_enter + sys_exit programs (coral-bench floor):
#              what any tracer on the generic syscall hooks pays before work
#   tp-hooks   bpftrace with empty actions on the 14 per-syscall tracepoints
#              (syscalls:sys_{enter,exit}_*) a per-syscall design would use
#   coral      Coral http-latency filtered on the nginx worker's pid
#   tls-none   no tracing, HTTPS (nginx ssl, keep-alive)
#   tls-floor  bpftrace with empty uprobes (and the uretprobes) on the same
#              libssl functions Coral probes, in the worker only: what any
#              tracer at the TLS library pays before work
#   tls-coral  Coral http-latency on the worker's pid, HTTPS (OpenSSL uprobes)
# Rounds rotate the configurations so drift on a shared machine hits all alike.
#
#   bash bench/http-latency.sh            (as root; ROUNDS=5 DURATION=10 by default)
#
# Prints requests/s (wrk's), the throughput ratios, and the nginx CPU time per
# request: the worker's on-CPU ns (/proc/PID/task/*/schedstat) over wrk's
# request count, so the added cost per request is measured, not inferred.
# Each Coral run must have counted at least the requests wrk completed (it
# fails otherwise: a tracer that saw nothing would look cheap).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
PORT=${PORT:-18980}
TLS_PORT=${TLS_PORT:-18981}
BUILD=${BUILD:-1}
read -r -a configs <<<"${CONFIGS:-none floor tp-hooks coral tls-none tls-floor tls-coral}"

.ci/install-deps
[[ $BUILD == 0 ]] || cargo build --release -q -p coral-agent -p coral-cli -p coral-bench
work=$(mktemp -d /tmp/coral-http-bench.XXXXXX)
# Copies: a concurrent build cannot swap them mid-run.
cp target/release/coral-agent target/release/coral target/release/coral-bench "$work/"
agent=$work/coral-agent
coral=$work/coral
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
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-subj /CN=127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
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
  server {
    listen 127.0.0.1:$TLS_PORT ssl;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    root $work/www;
  }
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

cpu_ns() { # on-CPU ns of the given processes' threads (mawk: %.0f, not %d, past 2^31)
	local pid
	for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat; done | awk '{ s += $1 } END { printf "%.0f", s }'
}

proc_cpu_ns() { # user + system CPU of a process, its exited threads included (/proc/PID/stat ticks)
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.0f", ($12 + $13) * 1e9 / hz }' /proc/"$1"/stat
}

busy_ns() { # CPU time of the whole machine not spent idle, steal excluded (/proc/stat)
	awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.0f", ($2 + $3 + $4 + $7 + $8) * 1e9 / hz }' /proc/stat
}

per_request() { # $1 ns over $2 requests, in µs
	awk -v d="$1" -v n="$2" 'BEGIN { printf "%.3f", d / n / 1000 }'
}

counted() { # requests in the last HttpStats of `coral -o json tap events` (the final one)
	python3 -c 'import json, sys
n = 0
for line in sys.stdin:
    rec = json.loads(line).get("record", {})
    if "httpStats" in rec:
        n = sum(int(r.get("count", 0)) for r in rec["httpStats"].get("routes", []))
print(n)'
}

plain="http://127.0.0.1:$PORT/index.html"
secure="https://127.0.0.1:$TLS_PORT/index.html"
wrk -t1 -c4 -d1s "$plain" >/dev/null # warm up
wrk -t1 -c4 -d1s "$secure" >/dev/null

declare -A rps lat cpu_us agent_us busy_us
run() { # $1: config name
	local id="" before after abefore aafter bbefore bafter out bt="" url=$plain
	[[ $1 == tls-* ]] && url=$secure
	if [[ $1 == floor ]]; then
		"$work/coral-bench" floor >"$work/floor.log" 2>&1 &
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
	if [[ $1 == tls-floor ]]; then
		local ssl pid probes=""
		pid=${workers%% *}
		ssl=$(awk '$6 ~ /libssl\.so/ { print $6; exit }' /proc/"$pid"/maps)
		[[ -n $ssl ]] || { echo "tls-floor: nginx maps no libssl" >&2; exit 1; }
		for f in SSL_read SSL_read_ex SSL_write SSL_write_ex SSL_free; do
			probes+="${probes:+,}uprobe:$ssl:$f"
		done
		probes+=",uretprobe:$ssl:SSL_read,uretprobe:$ssl:SSL_read_ex"
		bpftrace -p "$pid" -e "$probes { }" >"$work/bpftrace.log" 2>&1 &
		bt=$!
		for _ in $(seq 100); do grep -q Attaching "$work/bpftrace.log" && break; sleep 0.1; done
		sleep 0.5
	fi
	if [[ $1 == coral || $1 == tls-coral ]]; then
		local args=()
		for pid in $workers; do args+=(--pid "$pid"); done
		id=$("$coral" --agent "$sock" tap start --kind http-latency "${args[@]}" --duration 10m 2>/dev/null)
	fi
	# shellcheck disable=SC2086 # one pid per word
	before=$(cpu_ns $workers)
	abefore=$(proc_cpu_ns "$agent_pid")
	bbefore=$(busy_ns)
	out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$url")
	# shellcheck disable=SC2086
	after=$(cpu_ns $workers)
	aafter=$(proc_cpu_ns "$agent_pid")
	bafter=$(busy_ns)
	local r l n seen
	n=$(awk '/requests in/ { print $1 }' <<<"$out")
	if [[ -n $id ]]; then
		"$coral" --agent "$sock" tap stop "$id" >/dev/null
		seen=$("$coral" --agent "$sock" -o json tap events "$id" | counted)
		if ((seen < n)); then
			echo "$1: Coral counted $seen requests, wrk completed $n" >&2
			exit 1
		fi
	fi
	if [[ -n $bt ]]; then kill -INT "$bt" 2>/dev/null; wait "$bt" 2>/dev/null || true; fi
	r=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
	l=$(awk '$1 == "Latency" && NF >= 4 { print $2; exit }' <<<"$out")
	rps[$1]+="$r "
	lat[$1]+="$l "
	cpu_us[$1]+="$(per_request $((after - before)) "$n") "
	# The agent's own CPU over the run: draining, parsing, aggregating.
	agent_us[$1]+="$(per_request $((aafter - abefore)) "$n") "
	# Everything the machine spent per request: nginx, wrk, the agent, the rest.
	busy_us[$1]+="$(per_request $((bafter - bbefore)) "$n") "
	local c=${cpu_us[$1]% } a=${agent_us[$1]% } b=${busy_us[$1]% }
	printf 'round %d  %-9s %10s req/s  %8s avg  %s µs CPU/req  agent %s  machine %s µs/req%s\n' "$round" "$1" "$r" "$l" "${c##* }" "${a##* }" "${b##* }" \
		"${seen:+  (coral counted $seen, wrk $n)}" >&2
}

n=${#configs[@]}
for ((round = 1; round <= ROUNDS; round++)); do
	for ((k = 0; k < n; k++)); do run "${configs[(round + k) % n]}"; done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A R C A B
for cfg in "${configs[@]}"; do
	R[$cfg]=$(median <<<"${rps[$cfg]}")
	C[$cfg]=$(median <<<"${cpu_us[$cfg]}")
	A[$cfg]=$(median <<<"${agent_us[$cfg]}")
	B[$cfg]=$(median <<<"${busy_us[$cfg]}")
done
row() { # label config base
	printf '%-30s %11.0f %10.3f µs %10.3f µs %8.3f %10.3f µs %10.3f µs\n' "$1" "${R[$2]}" "${C[$2]}" \
		"$(awk -v a="${C[$2]}" -v b="${C[$3]}" 'BEGIN { print a - b }')" \
		"$(awk -v a="${R[$2]}" -v b="${R[$3]}" 'BEGIN { print a / b }')" "${A[$2]}" "${B[$2]}"
}
echo
echo "nginx 1 worker, wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS rounds (medians); kernel $(uname -r), $(nproc) CPUs"
printf '%-30s %11s %13s %13s %8s %13s %13s\n' config "req/s" "CPU/req" "added" "ratio" "agent/req" "machine/req"
has() { [[ -n ${R[$1]:-} ]]; }
has none && row "http: no tracing" none none
has floor && has none && row "http: floor (empty raw_tp pair)" floor none
has tp-hooks && has none && row "http: syscalls:* tps (bpftrace)" tp-hooks none
has coral && has none && row "http: coral http-latency --pid" coral none
has tls-none && row "https: no tracing" tls-none tls-none
has tls-floor && has tls-none && row "https: floor (empty uprobes)" tls-floor tls-none
has tls-coral && has tls-none && row "https: coral http-latency --pid" tls-coral tls-none
if has coral && has floor && has none; then
	awk -v cc="${C[coral]}" -v cf="${C[floor]}" -v cn="${C[none]}" -v rc="${R[coral]}" -v rf="${R[floor]}" 'BEGIN {
		printf "http: coral adds %.3f µs of nginx CPU per request, the floor %.3f µs: %.2fx the floor (target: at most 1.5x);\n", cc - cn, cf - cn, (cc - cn) / (cf - cn)
		printf "      coral keeps %.3f of the floor'"'"'s throughput (target: at least 0.95)\n", rc / rf }'
fi
if has tls-coral && has tls-none; then
	awk -v cc="${C[tls-coral]}" -v cn="${C[tls-none]}" -v rc="${R[tls-coral]}" -v rn="${R[tls-none]}" 'BEGIN {
		printf "https: coral adds %.3f µs of nginx CPU per request (%.1f%%) and keeps %.3f of untraced throughput\n", cc - cn, (cc - cn) / cn * 100, rc / rn }'
fi
if has tls-coral && has tls-floor && has tls-none; then
	awk -v cc="${C[tls-coral]}" -v cf="${C[tls-floor]}" -v cn="${C[tls-none]}" 'BEGIN {
		printf "https: the empty uprobes alone add %.3f µs per request: coral is %.2fx that floor\n", cf - cn, (cc - cn) / (cf - cn) }'
fi
# Rounds pair the configurations in time: per round, coral against the floor
# of the same round, so drift between rounds (this VM's steal moves the floor
# itself by a microsecond) cancels out of the comparison. The CPU target
# (coral's added CPU at most 1.5x the floor's) is then: coral's excess over
# the floor at most half of what the floor adds.
if has coral && has floor && has none; then
	awk -v cc="${cpu_us[coral]}" -v cf="${cpu_us[floor]}" -v cn="${cpu_us[none]}" \
		-v rc="${rps[coral]}" -v rf="${rps[floor]}" '
	function med(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	BEGIN {
		n = split(cc, c, " "); split(cf, f, " "); split(cn, z, " "); split(rc, x, " "); split(rf, y, " ")
		for (i = 1; i <= n; i++) {
			e[i] = c[i] - f[i]; a[i] = f[i] - z[i]; r[i] = x[i] / y[i]
			es = es sprintf(" %+.2f", e[i]); as = as sprintf(" %+.2f", a[i]); rs = rs sprintf(" %.3f", r[i])
		}
		printf "paired by round: coral keeps %.3f of the same round'"'"'s floor throughput (median; rounds%s)\n", med(r, n), rs
		printf "                 the floor adds %+.3f µs of nginx CPU per request over none (median; rounds%s)\n", med(a, n), as
		printf "                 coral adds %+.3f µs beyond the floor (median; rounds%s)\n", med(e, n), es
	}'
fi
