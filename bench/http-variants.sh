#!/usr/bin/env bash
# Where http-latency's per-request cost goes (docs/benchmarks.md), with
# variants of the syscall program (bench/variants/http_latency_variants.bpf.c)
# that each stop at one stage of the work, the program before issue 16 (built
# from git) and the tree's program, all attached by `coral-bench attach` with
# the server's pid (the filter globals filled as the agent fills them).
# Rounds rotate the configurations; the table gives medians.
#
#   bash bench/http-variants.sh                 (as root; LOAD=loop)
#   LOAD=nginx bash bench/http-variants.sh
#
# LOAD=loop (default): `coral-bench http-loop`, one process making exactly
#   the syscalls nginx makes per keep-alive request for a small file
#   (recvfrom, openat, fstat, pread64, writev, close) on a Unix socket fed in
#   batches by a client on the other CPU; its thread CPU time per request,
#   the best of REPS runs of ITERS requests. No network stack, no wrk, no
#   scheduling between them: the precise view.
# LOAD=nginx: nginx serving a small file under wrk, as bench/http-latency.sh
#   does; the worker's on-CPU time (/proc/PID/task/*/schedstat) over wrk's
#   request count, DURATION s per run, and wrk's requests/s. The real view,
#   noisier on a shared machine.
#
# Knobs: LOAD, ROUNDS (default 5), ITERS (loop, default 100000), REPS (loop,
# default 5), DURATION (nginx, s, default 6), CONNS (nginx, default 32),
# CONFIGS (a space-separated subset), BUILD=0 (use target/release as is),
# BEFORE_REV (the commit whose program is "before"; default main before the
# issue-16 merge), WAIT_EACH (s to wait for the syscall hooks to be free of other
# people's tracers before a measurement, default 30), TRIES (a measurement
# during which other tracers came or went is taken again, default 5 times).
#
# Every sample records the other tracers' programs on sys_enter/sys_exit
# during it (the "background"); the table is made of the samples of one
# background, the one under which the most configurations were measured
# (normally none at all), so every row paid the same. "added" is a
# configuration's cost per request minus none's.
set -euo pipefail

LOAD=${LOAD:-loop}
ROUNDS=${ROUNDS:-5}
ITERS=${ITERS:-100000}
REPS=${REPS:-5}
DURATION=${DURATION:-6}
CONNS=${CONNS:-32}
PORT=${PORT:-18982}
BUILD=${BUILD:-1}

# name | what (floor, before, coral, or clang -D knobs for the variants file)
VARIANTS=(
	"floor|floor"
	"exit-hook|-DEMPTY_EXIT"
	"v1-filter|-DSTAGE=1"
	"v1-pending|-DSTAGE=2"
	"v1-usermem|-DSTAGE=3"
	"v1-state|-DSTAGE=4"
	"before|before"
	"v2-filter|-DV2 -DSTAGE=1"
	"v2-usermem|-DV2 -DSTAGE=2"
	"v2-state|-DV2 -DSTAGE=3"
	"v2-clock|-DV2 -DSTAGE=4"
	"v2-record|-DV2 -DSTAGE=5"
	"v2-meta|-DV2 -DSTAGE=6"
	"v2-tasktgid|-DV2 -DSTAGE=6 -DTASK_TGID"
	"coral|coral"
)
ALL_CONFIGS=(none)
for v in "${VARIANTS[@]}"; do ALL_CONFIGS+=("${v%%|*}"); done
read -r -a CONFIGS <<<"${CONFIGS:-${ALL_CONFIGS[*]}}"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d /tmp/coral-http-variants.XXXXXX)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (loads BPF programs)"
clang=${CORAL_CLANG:-clang-19}
command -v "$clang" >/dev/null || die "$clang not found (set CORAL_CLANG)"
for c in "${CONFIGS[@]}"; do
	[[ " ${ALL_CONFIGS[*]} " == *" $c "* ]] || die "unknown configuration $c (known: ${ALL_CONFIGS[*]})"
done

tracer_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n $tracer_pid ]] && { kill -INT "$tracer_pid" 2>/dev/null || true; wait "$tracer_pid" 2>/dev/null || true; }
	[[ -n ${LOOP_PID:-} ]] && kill -TERM "$LOOP_PID" 2>/dev/null || true
	[[ -f $work/nginx.pid ]] && kill -TERM "$(cat "$work/nginx.pid")" 2>/dev/null || true
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

.ci/install-deps
if [[ $BUILD != 0 ]]; then
	echo "building coral-bench (release)..." >&2
	cargo build --release --quiet -p coral-bench
fi
cp target/release/coral-bench "$work/" || die "target/release/coral-bench missing (build first)"
bench=$work/coral-bench

arch=$(uname -m)
case $arch in x86_64) tarch=x86 ;; aarch64) tarch=arm64 ;; *) tarch=$arch ;; esac
bpf_cc() {
	"$clang" -g -O2 -Wall -Werror -Wno-unused-function -Wno-unused-variable \
		-Wno-unused-but-set-variable -target bpf "-D__TARGET_ARCH_$tarch" \
		"-I/usr/include/$arch-linux-gnu" "$@"
}
# The program before issue 16: main before the http-latency rework merged.
BEFORE_REV=${BEFORE_REV:-23114c5^1}
mkdir -p "$work/before"
for f in http_latency.bpf.c http_latency.h; do
	git show "$BEFORE_REV:ebpf-programs/src/bpf/$f" >"$work/before/$f"
done
declare -A object progs
for v in "${VARIANTS[@]}"; do
	IFS='|' read -r name what <<<"$v"
	case $what in
	floor) ;;
	before)
		# Its own header first (the layouts changed since).
		bpf_cc -I"$work/before" -Iebpf-programs/src/bpf -c "$work/before/http_latency.bpf.c" -o "$work/before.o"
		object[$name]=$work/before.o
		progs[$name]="--prog coral_http_enter=sys_enter --prog coral_http_exit=sys_exit"
		;;
	coral)
		bpf_cc -Iebpf-programs/src/bpf -c ebpf-programs/src/bpf/http_latency.bpf.c -o "$work/coral.o"
		object[$name]=$work/coral.o
		progs[$name]="--prog coral_http_exit=sys_exit"
		;;
	*)
		# shellcheck disable=SC2086 # several -D flags
		bpf_cc -Iebpf-programs/src/bpf $what -c bench/variants/http_latency_variants.bpf.c -o "$work/$name.o"
		object[$name]=$work/$name.o
		progs[$name]=""
		;;
	esac
done

worker=
if [[ $LOAD == nginx ]]; then
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
worker=$(pgrep -P "$master" | head -1)
[[ -n $worker ]] || die "no nginx worker"
fi

cpu_ns() { # on-CPU ns of the worker's threads
	cat /proc/"$worker"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'
}

expected_hooks() {
	case $1 in
	none) echo 0 ;;
	floor | before | v1-*) echo 2 ;;
	*) echo 1 ;;
	esac
}

start_tracer() { # config, pid to filter on
	local cfg=$1 log=$work/$1.log target=$2
	: >"$log"
	case $cfg in
	none) return ;;
	floor) "$bench" floor >"$log" 2>&1 & ;;
	*)
		# shellcheck disable=SC2086 # --prog pairs
		"$bench" attach "${object[$cfg]}" ${progs[$cfg]} --pid "$target" >"$log" 2>&1 &
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

url="http://127.0.0.1:$PORT/index.html"
[[ $LOAD == nginx ]] && wrk -t1 -c4 -d1s "$url" >/dev/null # warm up

# Other people's programs on the syscall hooks right now ("" when none), as
# pid:prog_id pairs: on a shared machine collectors come and go, and one on
# sys_enter/sys_exit adds microseconds per request to every configuration.
background() {
	bpftool perf list 2>/dev/null |
		awk -v me="${tracer_pid:-none}" '($NF == "sys_enter" || $NF == "sys_exit") && $2 != me { print $2 ":" $6 }' |
		sort | tr '\n' ' '
}

# Up to WAIT_EACH s (default 30) for the hooks to be free of other tracers;
# after that, measure with what is there (each sample records it).
wait_free() {
	local tries=0
	while [[ -n $(background) ]] || bpf_stats_on; do
		((tries++ >= ${WAIT_EACH:-30} * 2)) && return
		sleep 0.5
	done
}

# One measurement of configuration $1: sets r (requests/s, nginx only), c
# (µs of server CPU per request) and bg (the background it ran on); stable
# is empty when the background changed during the measurement.
measure_once() {
	local cfg=$1 before after out reqs ready pid res bg_after
	if [[ $LOAD == nginx ]]; then
		start_tracer "$cfg" "$worker"
		wait_free
		bg=$(background)
		before=$(cpu_ns)
		out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" "$url")
		after=$(cpu_ns)
		kill -0 "$worker" 2>/dev/null || die "the nginx worker $worker is gone: $(tail -3 "$work/error.log")"
		bg_after=$(background)
		stop_tracer "$cfg"
		r=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
		reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
		c=$(awk -v d=$((after - before)) -v n="$reqs" 'BEGIN { printf "%.3f", d / n / 1000 }')
	else
		coproc LOOP { exec "$bench" http-loop --iters "$ITERS" --reps "$REPS" --wait; }
		read -r ready pid <&"${LOOP[0]}"
		[[ $ready == ready ]] || die "http-loop said $ready $pid"
		start_tracer "$cfg" "$pid"
		wait_free
		bg=$(background)
		echo go >&"${LOOP[1]}"
		read -r res _ <&"${LOOP[0]}"
		wait "$LOOP_PID" 2>/dev/null || true
		bg_after=$(background)
		stop_tracer "$cfg"
		r=0
		c=$(awk -v ns="$res" 'BEGIN { printf "%.3f", ns / 1000 }')
	fi
	stable=1
	[[ $bg == "$bg_after" ]] && ! bpf_stats_on || stable=
}

# A measurement during which the background changed is taken again, up to
# TRIES times (default 5), then dropped.
measure() {
	local try
	for ((try = 1; try <= ${TRIES:-5}; try++)); do
		measure_once "$1"
		[[ -n $stable ]] && return
		echo "($1: other tracers came or went during the measurement; again)" >&2
	done
}

# lines: cfg<TAB>background ("-" for none: read's IFS would merge the tabs
# around an empty field)<TAB>req/s<TAB>µs per request
samples=$work/samples
: >"$samples"
total_start=$SECONDS
n=${#CONFIGS[@]}
for ((round = 0; round < ROUNDS; round++)); do
	for ((k = 0; k < n; k++)); do
		cfg=${CONFIGS[(round + k) % n]}
		measure "$cfg"
		[[ -n $stable ]] && printf '%s\t%s\t%s\t%s\n' "$cfg" "${bg:--}" "$r" "$c" >>"$samples"
		note=
		[[ -n ${bg:-} ]] && note="(other tracers: $(wc -w <<<"$bg") programs)"
		[[ -n $stable ]] || note="(dropped: other tracers came or went)"
		printf 'round %d/%d  %-12s %10s req/s  %7s µs CPU/req  %s\n' $((round + 1)) "$ROUNDS" "$cfg" "$r" "$c" "$note" >&2
	done
done

# The background to report: the one under which the most configurations
# have at least 3 samples (then the most samples). Every configuration of
# the table ran under exactly that background.
chosen=$(awk -F'\t' '{ n[$2 SUBSEP $1]++; t[$2]++ } END {
	for (k in n) { split(k, p, SUBSEP); if (n[k] >= 3) full[p[1]]++ }
	best = ""; bf = -1; bt = -1
	for (b in t) { f = full[b] + 0; if (f > bf || (f == bf && t[b] > bt)) { best = b; bf = f; bt = t[b] } }
	print best }' "$samples")
declare -A rps cpu_req
while IFS=$'\t' read -r cfg bg r c; do
	[[ $bg == "$chosen" ]] || continue
	rps[$cfg]+="$r "
	cpu_req[$cfg]+="$c "
done <"$samples"

c_none=$(median <<<"${cpu_req[none]:-}")
r_none=$(median <<<"${rps[none]:-}")
c_floor=
[[ -n ${cpu_req[floor]:-} ]] && c_floor=$(median <<<"${cpu_req[floor]}")
echo
if [[ $LOAD == nginx ]]; then
	echo "nginx 1 worker, wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS rounds (medians); kernel $(uname -r), $(nproc) CPUs; $((SECONDS - total_start)) s"
else
	echo "http-loop: $ITERS requests x $REPS runs (fastest kept, server thread CPU time) x $ROUNDS rounds (medians); kernel $(uname -r), $(nproc) CPUs; $((SECONDS - total_start)) s"
fi
if [[ $chosen == - ]]; then
	echo "background: no other tracer on the syscall hooks"
else
	echo "background: $(wc -w <<<"$chosen") programs of other tracers on sys_enter/sys_exit throughout these samples (the machine had no quiet window): every configuration pays them alike"
fi
printf '%-12s %11s %6s %13s %14s %10s %11s %3s\n' config "req/s" ratio "CPU/req µs" "range" "added µs" "x floor add" n
for cfg in "${CONFIGS[@]}"; do
	[[ -n ${cpu_req[$cfg]:-} ]] || { printf '%-12s (no sample under this background)\n' "$cfg"; continue; }
	c=$(median <<<"${cpu_req[$cfg]}")
	r=$(median <<<"${rps[$cfg]}")
	range=$(minmax <<<"${cpu_req[$cfg]}")
	awk -v cfg="$cfg" -v r="$r" -v rn="${r_none:-0}" -v c="$c" -v cn="$c_none" -v cf="${c_floor:-}" -v range="$range" -v n="$(wc -w <<<"${cpu_req[$cfg]}")" 'BEGIN {
		x = (cf != "" && cf - cn > 0) ? sprintf("%.2f", (c - cn) / (cf - cn)) : "-"
		ratio = rn > 0 ? sprintf("%.3f", r / rn) : "-"
		printf "%-12s %11.0f %6s %13.3f %14s %10.3f %11s %3d\n", cfg, r, ratio, c, range, c - cn, x, n }'
done
others=$(awk -F'\t' -v b="$chosen" '$2 != b' "$samples" | wc -l)
((others > 0)) && echo "($others samples taken under another background are not in the table)"
true
