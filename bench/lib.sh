# Shared pieces of the syscall benchmarks (sourced by syscall-overhead.sh and
# syscall-variants.sh; not run by itself).
#
# A script sets ITERS, REPS, ROUNDS, CPU, CONFIGS (array), `bench` (path of
# coral-bench), optionally LOOP_SYSCALL (getppid or write), and defines
# start_tracer CFG / stop_tracer CFG /
# expected_hooks CFG, then calls run_rounds and print_report.

die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

# Syscall hooks attached right now, ours included: raw_tp, tp_btf and
# perf_event tracepoint programs on sys_enter or sys_exit, as bpftool finds
# them in open fds.
hooks_attached() {
	bpftool perf list 2>/dev/null |
		awk '$NF == "sys_enter" || $NF == "sys_exit" { n++ } END { print n + 0 }'
}

# kernel.bpf_stats_enabled (sysctl, or held by some process through
# BPF_ENABLE_STATS) makes every BPF program run read the clock twice: on the
# syscall hooks that adds well over 100 ns per syscall here.
bpf_stats_on() {
	[[ $(cat /proc/sys/kernel/bpf_stats_enabled 2>/dev/null || echo 0) != 0 ]]
}

# True when configuration $1 can be measured cleanly: only its own hooks are
# attached and, if it attaches any, BPF run-time stats are off.
quiet() {
	local want
	want=$(expected_hooks "$1")
	[[ $(hooks_attached) -le $want ]] && { ((want == 0)) || ! bpf_stats_on; }
}

# Other people's tracers on the same hooks, or BPF stats turned on by
# someone, slow every syscall down: wait until neither is the case (up to
# 20 s each time and QUIET_WAIT seconds in all, default 120), else measure
# anyway and flag the sample.
quiet_budget=$((${QUIET_WAIT:-120} * 2))
wait_for_quiet() {
	local tries=0
	while ! quiet "$1"; do
		if ((tries >= 40 || quiet_budget <= 0)); then
			if bpf_stats_on; then
				echo "warning: BPF run-time stats are on (kernel.bpf_stats_enabled); measuring $1 anyway (flagged *)" >&2
			else
				echo "warning: another syscall tracer is attached; measuring $1 anyway (flagged *)" >&2
			fi
			return 1
		fi
		sleep 0.5
		tries=$((tries + 1))
		quiet_budget=$((quiet_budget - 1))
	done
}

# BPF stats switched on and off again while a loop runs would go unseen by
# checks before and after it: poll every 0.1 s during the loop as well.
stats_watch_pid=
stats_watch_file=
watch_stats_start() {
	stats_watch_file=$(mktemp "${work:-/tmp}/stats-watch.XXXXXX")
	(($(expected_hooks "$1") > 0)) || return 0
	(
		while :; do
			[[ $(</proc/sys/kernel/bpf_stats_enabled) == 0 ]] || echo on >"$stats_watch_file"
			sleep 0.1
		done
	) &
	stats_watch_pid=$!
}
# False if the stats were seen on while the loop ran.
watch_stats_stop() {
	if [[ -n $stats_watch_pid ]]; then
		kill "$stats_watch_pid" 2>/dev/null || true
		wait "$stats_watch_pid" 2>/dev/null || true
		stats_watch_pid=
	fi
	local seen
	seen=$(<"$stats_watch_file")
	rm -f "$stats_watch_file"
	[[ -z $seen ]]
}

# Per configuration: clean samples, and flagged ones (used only when a
# configuration has no clean sample at all).
declare -A samples flagged

# Round-robin over CONFIGS, ROUNDS times, each round starting one further:
# drift on a shared machine hits every configuration alike.
run_rounds() {
	local loop_args=(loop --iters "$ITERS" --reps "$REPS")
	[[ -n ${CPU:-} ]] && loop_args+=(--cpu "$CPU")
	[[ -n ${LOOP_SYSCALL:-} ]] && loop_args+=(--syscall "$LOOP_SYSCALL")
	local n=${#CONFIGS[@]} round k cfg mark out ns
	for ((round = 0; round < ROUNDS; round++)); do
		for ((k = 0; k < n; k++)); do
			cfg=${CONFIGS[(round + k) % n]}
			start_tracer "$cfg"
			mark=
			wait_for_quiet "$cfg" || mark='*'
			watch_stats_start "$cfg"
			out=$("$bench" "${loop_args[@]}")
			watch_stats_stop || mark='*'
			quiet "$cfg" || mark='*'
			stop_tracer "$cfg"
			ns=${out%% *}
			if [[ -n $mark ]]; then
				flagged[$cfg]+="$ns "
			else
				samples[$cfg]+="$ns "
			fi
			printf 'round %d/%d  %-18s %8s ns/call %s\n' $((round + 1)) "$ROUNDS" "$cfg" "$ns" "$mark" >&2
		done
	done
}

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minmax() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }

has_clean() {
	local s=${samples[$1]:-}
	[[ -n ${s// /} ]]
}

# The table: median ns/call over the clean samples, their range and count,
# ns added over "none", and that added cost as a multiple of the floor's.
# $1: seconds measured.
print_report() {
	local -A med used
	local cfg m range added ratio base floor_added width=6 any_flagged=
	for cfg in "${CONFIGS[@]}"; do
		used[$cfg]=${samples[$cfg]:-}
		if ! has_clean "$cfg"; then
			used[$cfg]=${flagged[$cfg]:-}
			any_flagged=1
		fi
		med[$cfg]=$(median <<<"${used[$cfg]}")
		((${#cfg} + 1 > width)) && width=$((${#cfg} + 1))
	done
	base=${med[none]:-}
	floor_added=
	[[ -n $base && -n ${med[floor]:-} ]] &&
		floor_added=$(awk -v a="${med[floor]}" -v b="$base" 'BEGIN { print a - b }')

	echo
	echo "${LOOP_SYSCALL:-getppid} loop: $ITERS calls x $REPS runs (fastest kept, thread CPU time) x $ROUNDS rounds (median of clean rounds);" \
		"kernel $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $1 s"
	printf "%-${width}s %9s %13s %3s %10s %13s\n" config ns/call "range" n "added ns" "x floor add"
	for cfg in "${CONFIGS[@]}"; do
		m=${med[$cfg]}
		range=$(minmax <<<"${used[$cfg]}")
		added=-
		ratio=-
		[[ -n $base ]] && added=$(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.1f", a - b }')
		if [[ -n $floor_added ]] && awk -v f="$floor_added" 'BEGIN { exit !(f > 0) }'; then
			ratio=$(awk -v a="$m" -v b="$base" -v f="$floor_added" 'BEGIN { printf "%.2f", (a - b) / f }')
		fi
		local n mark=
		n=$(wc -w <<<"${used[$cfg]}")
		has_clean "$cfg" || mark='*'
		printf "%-${width}s %9s %13s %3s %10s %13s\n" "$cfg$mark" "$m" "$range" "$n" "$added" "$ratio"
	done
	local dropped=0
	for cfg in "${CONFIGS[@]}"; do
		has_clean "$cfg" && dropped=$((dropped + $(wc -w <<<"${flagged[$cfg]:-}")))
	done
	if ((dropped > 0)); then
		echo "($dropped samples taken while another syscall tracer was attached or BPF stats were on were left out)"
	fi
	if [[ -n $any_flagged ]]; then
		echo "* no clean sample: every round of this configuration ran next to another tracer or with BPF stats on"
	fi
}
