#!/usr/bin/env bash
# queue.sh -- the durable queue's bench: acknowledged PUT /send transactions per second through
# the egress (group commit on and off), delivery to a loopback sink, catch-up after a sink
# outage, and chappe's memory with a deep queue.
# SPDX-License-Identifier: ISC
#
# Usage: bash bench/queue.sh        (or: make bench-queue)       -- see bench/README.md, "Queue"
# Loopback only. Every process this script starts runs under `timeout` and is stopped by PID on
# exit, error or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

# --- knobs ---------------------------------------------------------------------------------
DURATION=${BENCH_DURATION:-10s}              # wrk -d of each measured run (ack, deliver)
RUNS=${BENCH_RUNS:-3}                        # measured runs per commit mode (median kept)
WARMUP=${BENCH_WARMUP:-2s}                   # wrk -d of the warm-up before each measured run
CONNS=${BENCH_CONNECTIONS:-64}               # wrk -c
THREADS=${BENCH_THREADS:-2}                  # wrk -t
WORKERS=${BENCH_WORKERS:-2}                  # chappe workers
NDEST=${BENCH_QUEUE_DESTINATIONS:-32}        # destinations localhost:P1 .. localhost:PN
CATCHUP=${BENCH_CATCHUP:-100000}             # transactions queued before the sink comes up
DEPTH=${BENCH_QUEUE_DEPTH:-1000000}          # transactions queued for the memory measurement
CATCHUP_TIMEOUT=${BENCH_CATCHUP_TIMEOUT:-900} # seconds a drain may take before it is a stall
STALL=${BENCH_QUEUE_STALL:-60}               # seconds without a delivery: a stall
PHASES=${BENCH_QUEUE_PHASES:-lmdb ack deliver catchup depth} # which measurements
GOAL=${BENCH_QUEUE_GOAL:-20000}              # acked transactions/s with group commit
NOISE_PCT=${BENCH_NOISE_PCT:-10}             # flag runs where other processes used more CPU (%)
CHAPPE_BIN=${CHAPPE_BIN:-$repo/build/chappe}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$here/results}
CERT_DIR=${BENCH_CERT_DIR:-}                 # use ca.crt/server.crt/server.key from here instead
KEEP=${BENCH_KEEP:-0}                        # 1: keep the temp dir (configs, logs, stores)
TMPFS=${BENCH_QUEUE_TMPFS:-1}                # 1: also measure with the store on /dev/shm
ORIGIN=hs.localhost                          # the fronted homeserver (X-Matrix origin)
SECRET=bench-queue-egress-secret-0123456789
SMALL_FILL=100000                            # the depth phase's first RSS point
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
NCPU=$(nproc)

# --- helpers (as in verify.sh) ---------------------------------------------------------------
say() { printf '%s\n' "$*" >&2; }
die() { say "queue: $*"; exit 1; }

seconds_of() { # "10s" | "10" | "1m" -> integer seconds
    case "$1" in
    *ms) echo 1 ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *) echo "$1" ;;
    esac
}

declare -A PIDS=() # name -> pid of the `timeout` wrapper of a server we started
CUR_PID=""         # the foreground job (wrk, curl, ...) being waited on
workdir=""
shmdir="" # the tmpfs mode's store, under /dev/shm

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CUR_PID" ]; then kill -TERM "$CUR_PID" 2>/dev/null || true; fi
    local name pid
    for name in "${!PIDS[@]}"; do
        kill -TERM "${PIDS[$name]}" 2>/dev/null || true
    done
    for name in "${!PIDS[@]}"; do
        pid=${PIDS[$name]}
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "queue: $name (pid $pid) still running, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$CUR_PID" ]; then wait "$CUR_PID" 2>/dev/null || true; fi
    if [ -n "$shmdir" ] && [ -d "$shmdir" ]; then rm -rf "$shmdir"; fi
    if [ -n "$workdir" ] && [ -d "$workdir" ]; then
        if [ "$KEEP" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; }; then
            say "queue: kept $workdir (configs, logs, stores)"
        else
            rm -rf "$workdir"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "queue: interrupted"; exit 130' INT
trap 'say "queue: terminated"; exit 143' TERM

# run_fg SECONDS OUTFILE CMD...: run CMD under timeout, output to OUTFILE; return its status.
run_fg() {
    local secs=$1 out=$2 rc=0
    shift 2
    timeout -k 3 "$secs" "$@" >"$out" 2>&1 &
    CUR_PID=$!
    wait "$CUR_PID" || rc=$?
    CUR_PID=""
    return "$rc"
}

# start_bg NAME LOGFILE CMD...: start a server under `timeout $SERVER_TTL`; record the wrapper.
start_bg() {
    local name=$1 log=$2
    shift 2
    timeout -k 3 "$SERVER_TTL" "$@" >"$log" 2>&1 </dev/null &
    PIDS[$name]=$!
}

# stop_bg NAME: SIGTERM to its wrapper (timeout passes it on), KILL after 20 s; STOP_RC is the
# server's exit status (124: SERVER_TTL ran out; 137: killed).
STOP_RC=0
stop_bg() {
    local name=$1 pid=${PIDS[$1]:-}
    STOP_RC=0
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 80); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "queue: $name (pid $pid) did not stop in 20 s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
    unset "PIDS[$name]"
}

# main_pid NAME: PID of the program the `timeout` wrapper runs (waits for the fork, bounded).
main_pid() {
    local w=${PIDS[$1]} p=""
    for _ in $(seq 1 50); do
        p=$(pgrep -P "$w" | head -n1 || true)
        [ -n "$p" ] && break
        kill -0 "$w" 2>/dev/null || break
        sleep 0.1
    done
    echo "$p"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_ready NAME PORT LOG: until the port accepts, max 30 s (a deep queue opens slower).
wait_ready() {
    local name=$1 port=$2 log=$3
    for _ in $(seq 1 150); do
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            say "queue: $name exited during start-up; last lines of $log:"
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        if port_open "$port"; then return 0; fi
        sleep 0.2
    done
    say "queue: $name not ready on port $port after 30 s; last lines of $log:"
    tail -n 20 "$log" >&2 || true
    return 1
}

free_ports() { # N -> N free loopback TCP ports
    timeout 20 "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# wrk_parse FILE -> "rps p50_ms p99_ms non2xx sockerr requests"
wrk_parse() {
    awk '
    function ms(v) {
        if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
        if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
        if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
        if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
        return v + 0
    }
    BEGIN { rps = 0; p50 = -1; p99 = -1; non2xx = 0; sockerr = 0; reqs = 0 }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /requests in/ { reqs = $1 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ {
        line = $0; sub(/.*Socket errors: */, "", line); n = split(line, f, /[ ,]+/)
        for (i = 2; i <= n; i += 2) sockerr += f[i]
    }
    END { printf "%.2f %.3f %.3f %d %d %d\n", rps, p50, p99, non2xx, sockerr, reqs }
    ' "$1"
}

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

commas() { # integer -> 1,234,567
    local s=$1 r=""
    while [ "${#s}" -gt 3 ]; do
        r=",${s: -3}$r"
        s=${s:0:${#s}-3}
    done
    echo "$s$r"
}

median() { # numbers on stdin, one a line -> their median (the mean of the middle two if even)
    sort -g | awk '{a[NR] = $1} END {
        if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2];
        else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# --- CPU accounting (as in verify.sh; builtins only: forks are slow on a busy machine) ----------
OUR_PIDS=() # chappe and the sink (master + worker) while they run

# proc_ticks PID...: set TICKS to their utime + stime (all threads), in USER_HZ ticks
TICKS=0
proc_ticks() {
    local p line f
    TICKS=0
    for p in "$@"; do
        read -r line 2>/dev/null <"/proc/$p/stat" || continue
        read -r -a f <<<"${line##*) }"
        TICKS=$((TICKS + f[11] + f[12]))
    done
}

# cpu_mark: set MARK to "microseconds machine_busy our_ticks children_ticks chappe_ticks".
# Call it directly, never in $(...): `times` in a forked subshell reports no children.
MARK=""
cpu_mark() {
    local line f busy ours kids=0 v m sec frac t chappe
    read -r line </proc/stat
    read -r -a f <<<"$line"
    busy=$((f[1] + f[2] + f[3] + f[6] + f[7] + f[8])) # user nice system irq softirq steal
    proc_ticks "${OUR_PIDS[@]}"
    ours=$TICKS
    proc_ticks "$CHAPPE_PID"
    chappe=$TICKS
    # children reaped by this shell (wrk, via timeout): second line of `times`
    times >"$workdir/times.txt"
    { read -r line; read -r line; } <"$workdir/times.txt"
    for v in $line; do
        m=${v%%m*} t=${v#*m} t=${t%s} sec=${t%.*} frac=${t#*.}
        kids=$((kids + (m * 60 + sec) * HZ + 10#$frac * HZ / 1000))
    done
    t=${EPOCHREALTIME/./}
    MARK="$t $busy $ours $kids $chappe"
}

# cpu_use MARK_BEFORE MARK_AFTER: set BG (% of all CPUs used outside the bench), CHAPPE_PCT
# and WRK_PCT (% of all CPUs used by chappe and by wrk).
BG=0 CHAPPE_PCT=0 WRK_PCT=0
cpu_use() {
    local a b secs_x_hz other
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    secs_x_hz=$(((b[0] - a[0]) * HZ * NCPU / 1000000))
    other=$(((b[1] - a[1]) - (b[2] - a[2]) - (b[3] - a[3])))
    [ "$other" -lt 0 ] && other=0
    BG=0 CHAPPE_PCT=0 WRK_PCT=0
    if [ "$secs_x_hz" -gt 0 ]; then
        BG=$((100 * other / secs_x_hz))
        CHAPPE_PCT=$((100 * (b[4] - a[4]) / secs_x_hz))
        WRK_PCT=$((100 * (b[3] - a[3]) / secs_x_hz))
    fi
    return 0
}

# --- preflight ------------------------------------------------------------------------------
for c in wrk nginx openssl curl pgrep timeout awk sort; do
    command -v "$c" >/dev/null 2>&1 || die "missing command: $c (run: sh tools/deps.sh core bench)"
done
[ -x "$PY" ] || die "missing $PY"
[ -x "$CHAPPE_BIN" ] || die "$CHAPPE_BIN not found or not executable (make build/chappe)"
for v in RUNS THREADS WORKERS NDEST CATCHUP DEPTH CATCHUP_TIMEOUT STALL CONNS; do
    case "${!v}" in '' | *[!0-9]* | 0) die "$v must be a positive integer (see bench/README.md)" ;; esac
done
[ "$CONNS" -ge "$THREADS" ] || die "BENCH_CONNECTIONS must be at least BENCH_THREADS"
for p in $PHASES; do
    case "$p" in lmdb | ack | deliver | catchup | depth) ;;
    *) die "BENCH_QUEUE_PHASES: unknown phase $p (lmdb ack deliver catchup depth)" ;;
    esac
done
want() { [[ " $PHASES " == *" $1 "* ]]; }

dur_s=$(seconds_of "$DURATION")
warm_s=$(seconds_of "$WARMUP")
# generous: every phase at 2,000 transactions/s, plus the drains' own bounds
SERVER_TTL=$((RUNS * 3 * (dur_s + warm_s + 30) + (CATCHUP + DEPTH) / 2000 + 2 * CATCHUP_TIMEOUT + 600))

workdir=$(mktemp -d /tmp/chappe-queue.XXXXXX)
chmod 755 "$workdir" # nginx's worker may run as nobody when we are root
mkdir -p "$workdir/raw" "$workdir/sink/tmp" "$workdir/chappe"
if [ "$TMPFS" = 1 ] && want ack; then
    shmdir=$(mktemp -d /dev/shm/chappe-queue.XXXXXX 2>/dev/null) ||
        { shmdir="" && say "queue: no /dev/shm: no tmpfs runs"; }
fi
chmod 1777 "$workdir/sink/tmp"
# our own copy: a rebuild of build/chappe during the bench does not change what is measured
cp "$CHAPPE_BIN" "$workdir/chappe/chappe"
CHAPPE=$workdir/chappe/chappe
stamp=$(date -u +%Y%m%d-%H%M%S)
say "queue: work directory $workdir; $(uptime)"

# --- certificates ---------------------------------------------------------------------------
if [ -n "$CERT_DIR" ]; then
    mkdir -p "$workdir/certs"
    cp "$CERT_DIR/ca.crt" "$CERT_DIR/server.crt" "$CERT_DIR/server.key" "$workdir/certs/"
else
    [ -f "$repo/certs/gen.sh" ] || die "certs/gen.sh missing (or set BENCH_CERT_DIR)"
    (cd "$repo" && sh certs/gen.sh "$workdir/certs") >"$workdir/certs.log" 2>&1 ||
        { cat "$workdir/certs.log" >&2; die "certs/gen.sh failed"; }
fi
CA=$workdir/certs/ca.crt
CRT=$workdir/certs/server.crt
KEY=$workdir/certs/server.key
for f in "$CA" "$CRT" "$KEY"; do [ -s "$f" ] || die "no $(basename "$f") in $workdir/certs"; done

(umask 077 && printf '%s\n' "$SECRET" >"$workdir/chappe/egress.secret")

read -r -a ports <<<"$(free_ports $((NDEST + 3)))"
EG_PORT=${ports[0]}
ADMIN_PORT=${ports[1]}
UP_PORT=${ports[2]} # the homeserver's upstream: never contacted (nothing listens)
SINK_PORTS=("${ports[@]:3}")
DESTS=""
for p in "${SINK_PORTS[@]}"; do DESTS="$DESTS${DESTS:+,}localhost:$p"; done
EGRESS_URL=http://127.0.0.1:$EG_PORT

# --- chappe ---------------------------------------------------------------------------------
USE_ADMIN=1 # an admin listener, while this chappe accepts one (GET /_chappe/admin/queue)

# chappe_cfg FILE STORE GROUP_COMMIT RETRY_MIN RETRY_MAX
chappe_cfg() {
    local admin=""
    [ "$USE_ADMIN" = 1 ] && admin="  - { type: admin, bind: [\"127.0.0.1:$ADMIN_PORT\"], tls: false }"
    cat >"$1" <<EOF
# queue bench: the egress of $ORIGIN; destinations localhost:PORT, the sink (nginx, TLS) or nothing
server_name: relay.localhost
workers: $WORKERS
access_log: "off"
log_level: warn
listeners:
  - { type: egress, bind: ["127.0.0.1:$EG_PORT"], tls: false }
$admin
tls:
  certificates: [{ cert: $CRT, key: $KEY }]
homeservers:
  - server_name: $ORIGIN
    upstream: "http://127.0.0.1:$UP_PORT"
    egress_secret_path: $workdir/chappe/egress.secret
federation_domain_whitelist: ["localhost"]
sovereign_ranges: ["127.0.0.0/8"]
ip_range_whitelist: ["127.0.0.0/8"]
# names resolve from /etc/hosts only (localhost): nothing goes to the machine's resolver
dns_servers: ["127.0.0.1:1"]
federation_custom_ca_list: [$CA]
queue:
  path: $2
  max_bytes: 4GiB
  max_bytes_per_destination: 4GiB
  group_commit: $3
  retry: { min: $4, max: $5 }
EOF
}

CHAPPE_PID=""
CHAPPE_CFG=""
CHAPPE_N=0
PROBLEMS=() # one line each: crashes, lost transactions, stalls, failed checks

# chappe_start LABEL STORE GROUP_COMMIT RETRY_MIN RETRY_MAX: a fresh process on STORE
chappe_start() {
    local label=$1
    CHAPPE_N=$((CHAPPE_N + 1))
    CHAPPE_CFG=$workdir/chappe/$CHAPPE_N-$label.yaml
    CHAPPE_LOG=$workdir/chappe/$CHAPPE_N-$label.log
    chappe_cfg "$CHAPPE_CFG" "$2" "$3" "$4" "$5"
    start_bg chappe "$CHAPPE_LOG" "$CHAPPE" run -c "$CHAPPE_CFG"
    wait_ready chappe "$EG_PORT" "$CHAPPE_LOG" || die "chappe ($label) did not start"
    CHAPPE_PID=$(main_pid chappe)
    [ -n "$CHAPPE_PID" ] || die "cannot find chappe's PID"
    OUR_PIDS=("$CHAPPE_PID" "${SINK_PIDS[@]}")
}

# chappe_stop LABEL: SIGTERM; a non-zero exit or a crash is a problem
chappe_stop() {
    stop_bg chappe
    if [ "$STOP_RC" -ne 0 ]; then
        PROBLEMS+=("chappe ($1) exited with status $STOP_RC; log $(basename "$CHAPPE_LOG"), last lines:")
        while IFS= read -r l; do PROBLEMS+=("    $l"); done < <(tail -n 8 "$CHAPPE_LOG" | cut -c1-200)
    fi
    CHAPPE_PID=""
    OUR_PIDS=("${SINK_PIDS[@]}")
}

chappe_up() { [ -n "$CHAPPE_PID" ] && kill -0 "$CHAPPE_PID" 2>/dev/null; }

# rss: "VmRSS VmHWM RssAnon RssFile" of chappe, in KiB
rss() {
    awk '/^(VmRSS|VmHWM|RssAnon|RssFile):/ {v[$1] = $2}
         END {print v["VmRSS:"] + 0, v["VmHWM:"] + 0, v["RssAnon:"] + 0, v["RssFile:"] + 0}' \
        "/proc/$CHAPPE_PID/status"
}

# One PUT /send through the egress with curl: prints the HTTP status.
put_one() { # DEST TXNID
    timeout 10 curl -s -o "$workdir/raw/put.body" -w '%{http_code}' -X PUT \
        --request-target "matrix-federation://$1/_matrix/federation/v1/send/$2" \
        -H "Host: $1" -H "Proxy-Authorization: Bearer $SECRET" \
        -H "Authorization: X-Matrix origin=\"$ORIGIN\",destination=\"$1\",key=\"ed25519:bench\",sig=\"qaEaNSxch9TrIwCBz/mKYhvYGQ8X/yy2CNFOibtJ5OrvPZFk8m6/rNMe2W9aEHxliwholZ16b/68F9NDMhRz5g\"" \
        -H 'Content-Type: application/json' --data-binary '{"pdus":[],"edus":[]}' \
        "$EGRESS_URL" || true # curl prints 000 when it gets no answer
}

# The queue's depth as chappe reports it: admin API if it answers, else `chappe queue list
# --json`, else nothing (DEPTH_SRC says which; set by detect_depth_source).
DEPTH_SRC=none
json_count() { # JSON of the queue listing on stdin -> the number of queued transactions
    timeout 20 "$PY" -c '
import json, sys
d = json.load(sys.stdin)
t = d.get("totals") or {}
c = t.get("count", t.get("depth"))
if c is None:
    c = sum(x.get("depth", 0) for x in d.get("destinations", []))
print(int(c))' 2>/dev/null
}
queue_depth() {
    case "$DEPTH_SRC" in
    admin) timeout 10 curl -sf "http://127.0.0.1:$ADMIN_PORT/_chappe/admin/queue" | json_count ;;
    cli) timeout 30 "$CHAPPE" queue list --json -c "$CHAPPE_CFG" 2>/dev/null | json_count ;;
    *) return 1 ;;
    esac
}
detect_depth_source() {
    DEPTH_SRC="admin"
    queue_depth >/dev/null && return 0
    DEPTH_SRC=cli
    queue_depth >/dev/null && return 0
    DEPTH_SRC=none
}
# depth_check WHAT GOT WANT: a queue depth that chappe reports and that differs is a problem
depth_check() {
    case "$2" in '' | *[!0-9]*) return 0 ;; esac # no depth source
    [ "$2" = "$3" ] || PROBLEMS+=("$1: chappe reports a queue depth of $2, expected $3")
}
# retry_all: ask chappe to end every destination's backoff now (admin API only)
retry_all() {
    [ "$DEPTH_SRC" = admin ] || return 0
    local d
    for d in ${DESTS//,/ }; do
        timeout 5 curl -sf -o /dev/null -X POST "http://127.0.0.1:$ADMIN_PORT/_chappe/admin/queue/$d/retry" || true
    done
}
store_metrics() { # the chappe_store_* lines of /metrics, when the admin listener serves them
    [ "$DEPTH_SRC" = admin ] || return 0
    timeout 5 curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null | grep '^chappe_store_' || true
}

# --- the sink: one nginx, TLS on the N destination ports, 200 {"pdus":{}} to every PUT /send -----
SINK_PIDS=()
SINK_LOG=""
sink_start() { # LABEL: its access log is sink/LABEL.log ("msec port uri status" a line)
    local conf=$workdir/sink/$1.conf listen="" p
    SINK_LOG=$workdir/sink/$1.log
    for p in "${SINK_PORTS[@]}"; do listen="$listen        listen 127.0.0.1:$p ssl backlog=4096;
"; done
    cat >"$conf" <<EOF
# queue bench sink ($1): every destination's port; PUT /send/* answers 200 {"pdus":{}}
worker_processes 1;
pid $workdir/sink/nginx.pid;
error_log $workdir/sink/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
    log_format q '\$msec \$server_port \$request_uri \$status';
    access_log $SINK_LOG q buffer=64k flush=200ms;
    client_body_temp_path $workdir/sink/tmp/body;
    proxy_temp_path $workdir/sink/tmp/proxy;
    fastcgi_temp_path $workdir/sink/tmp/fastcgi;
    uwsgi_temp_path $workdir/sink/tmp/uwsgi;
    scgi_temp_path $workdir/sink/tmp/scgi;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_max_body_size 16m;
    client_body_buffer_size 64k;
    default_type application/json;
    ssl_certificate $CRT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
$listen
        location ^~ /_matrix/federation/v1/send/ {
            limit_except PUT { deny all; }
            return 200 '{"pdus":{}}';
        }
        location / {
            return 404 '{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}';
        }
    }
}
EOF
    : >"$SINK_LOG"
    start_bg sink "$workdir/sink/stderr.log" \
        nginx -p "$workdir/sink" -c "$conf" -e "$workdir/sink/error.log" -g 'daemon off;'
    wait_ready sink "${SINK_PORTS[0]}" "$workdir/sink/stderr.log" || die "the sink did not start"
    wait_ready sink "${SINK_PORTS[$((NDEST - 1))]}" "$workdir/sink/stderr.log" ||
        die "the sink did not start"
    local m
    m=$(main_pid sink)
    read -r -a SINK_PIDS <<<"$m $(pgrep -P "$m" | tr '\n' ' ')"
    OUR_PIDS=(${CHAPPE_PID:+"$CHAPPE_PID"} "${SINK_PIDS[@]}")
}
sink_stop() {
    stop_bg sink
    SINK_PIDS=()
    OUR_PIDS=(${CHAPPE_PID:+"$CHAPPE_PID"})
}
# sink_count TAG: lines of the sink's log for txnIds TAG-*, and how many distinct
# ("LINES DISTINCT NON200 FIRST_MSEC LAST_MSEC"); the log is flushed every 200 ms
sink_count() {
    awk -v pre="/_matrix/federation/v1/send/$1-" '
        index($3, pre) == 1 { n++; if (!seen[$3]++) u++; if ($4 != 200) bad++
                              if (first == "" || $1 < first) first = $1; if ($1 > last) last = $1 }
        END { printf "%d %d %d %s %s\n", n, u, bad, first == "" ? 0 : first, last == "" ? 0 : last }
    ' "$SINK_LOG"
}
sink_lines() { # TAG: the number of lines for TAG-* (fast: no distinct count)
    grep -c -F "/send/$1-" "$SINK_LOG" || true
}

# --- wrk ------------------------------------------------------------------------------------------
# wrk_run SECONDS OUT TAG SIZE [--latency]: wrk for SECONDS against the egress, no limit
wrk_run() {
    local secs=$1 out=$2 tag=$3 size=$4
    shift 4
    run_fg $((secs + 30)) "$out" env -u QUEUE_LUA_LIMIT wrk -t "$THREADS" -c "$CONNS" \
        -d "${secs}s" --timeout 10s "$@" -s "$here/queue.lua" "$EGRESS_URL" -- \
        "$SECRET" "$ORIGIN" "$DESTS" "$tag" "$size"
}

# fill TAG SIZE TOTAL: queue TOTAL (rounded up to a multiple of the threads) distinct
# transactions; sets FILL_N (distinct transactions sent), FILL_MS, FILL_OK, FILL_OTHER
fill() {
    local tag=$1 size=$2 total=$3 per done=$workdir/raw/$1.done out=$workdir/raw/$1.txt
    local lim t0 w rc=0 lines=0
    per=$(((total + THREADS - 1) / THREADS))
    FILL_N=$((per * THREADS))
    lim=$((FILL_N / 1000 + 120)) # at 1,000/s at least
    : >"$done"
    t0=$(now_ms)
    QUEUE_LUA_LIMIT=$per QUEUE_LUA_DONE=$done timeout -k 3 $((lim + 30)) wrk -t "$THREADS" \
        -c "$CONNS" -d "${lim}s" --timeout 10s -s "$here/queue.lua" "$EGRESS_URL" -- \
        "$SECRET" "$ORIGIN" "$DESTS" "$tag" "$size" >"$out" 2>&1 &
    CUR_PID=$!
    # every thread writes its line once it has its answers; wrk itself waits for -d
    while kill -0 "$CUR_PID" 2>/dev/null; do
        lines=$(wc -l <"$done")
        [ "$lines" -ge "$THREADS" ] && break
        chappe_up || break
        sleep 0.1
    done
    FILL_MS=$(($(now_ms) - t0))
    w=$(pgrep -P "$CUR_PID" -x wrk | head -n1 || true)
    [ -n "$w" ] && { kill -INT "$w" 2>/dev/null || true; } # wrk prints its summary and exits
    wait "$CUR_PID" || rc=$?
    CUR_PID=""
    read -r FILL_OK FILL_OTHER <<<"$(awk '{ok += $2; other += $3} END {print ok + 0, other + 0}' "$done")"
    if [ "$lines" -lt "$THREADS" ]; then
        PROBLEMS+=("fill $tag: only $lines of $THREADS wrk threads finished (wrk status $rc; chappe $(chappe_up && echo up || echo DOWN)); $out")
        return 1
    fi
    if [ "$FILL_OTHER" -gt 0 ]; then
        PROBLEMS+=("fill $tag: $FILL_OTHER answers were not 200 (of $((FILL_OK + FILL_OTHER)))")
    fi
    return 0
}

# --- header ------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
out=$RESULTS_DIR/$stamp-queue.txt
cpu=$(lscpu 2>/dev/null | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
{
    echo "chappe durable queue bench -- $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $NCPU CPU(s), ${cpu:-unknown CPU}, $(uname -sr); before: $(uptime)"
    echo "disk of the stores: $(df -h "$workdir" | awk 'NR == 2 {print $1, $2 " total,", $4 " free"}')"
    echo "versions: $(timeout 10 "$CHAPPE" --version 2>/dev/null | head -n1 || true)" \
        "(binary of $(date -u -r "$CHAPPE_BIN" '+%Y-%m-%d %H:%M UTC'), tree at commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
            git -C "$repo" diff --quiet HEAD -- src include 2>/dev/null ||
                echo ', src/include modified')), $(nginx -v 2>&1 | sed 's/.*: //'), wrk" \
        "$(wrk -v 2>&1 | awk 'NR == 1 {print $2}' || true)"
    echo "wrk: $THREADS threads, $CONNS connections, plain HTTP to the egress; chappe $WORKERS workers;" \
        "$NDEST destinations localhost:PORT; phases: $PHASES"
    echo
} | tee "$out"

# Does this chappe take an admin listener? (it may predate it: then the queue CLI, or nothing)
chappe_cfg "$workdir/chappe/probe.yaml" "$workdir/store-probe" true 1s 2s
if ! run_fg 20 "$workdir/chappe/probe.txt" "$CHAPPE" check-config -c "$workdir/chappe/probe.yaml"; then
    USE_ADMIN=0
    chappe_cfg "$workdir/chappe/probe.yaml" "$workdir/store-probe" true 1s 2s
    run_fg 20 "$workdir/chappe/probe.txt" "$CHAPPE" check-config -c "$workdir/chappe/probe.yaml" ||
        die "chappe refuses the bench's configuration: $(head -n 5 "$workdir/chappe/probe.txt")"
    say "queue: this chappe takes no admin listener: the queue depth comes from the CLI, if any"
fi

# --- 0. LMDB's raw durable write rate on this disk (bench/queue-lmdb.c) ---------------------------
# (also used to count chappe's commits: `queue-lmdb txnid STORE` before and after a run)
QLMDB=""
if command -v "${CC:-cc}" >/dev/null 2>&1 && [ -f /usr/include/lmdb.h ] &&
    "${CC:-cc}" -std=gnu11 -O2 -Wall -Wextra -o "$workdir/queue-lmdb" "$here/queue-lmdb.c" \
        -llmdb >"$workdir/queue-lmdb.log" 2>&1; then
    QLMDB=$workdir/queue-lmdb
else
    say "queue: cannot build bench/queue-lmdb.c (cc, liblmdb-dev): no raw LMDB figure, no commit count"
fi
txnid() { # STORE -> the id of its last durable commit, or nothing
    if [ -n "$QLMDB" ]; then timeout 10 "$QLMDB" txnid "$1" 2>/dev/null || true; fi
}
# "SIZE BATCH LAYOUT" (bench/queue-lmdb.c): appends, one commit each and 1,000 per commit; then
# 1,300-byte records (a 1 KiB transaction as src/queue.c stores it) 32 per commit, about what 64
# connections give (see the commits column), as the queue lays them out, without and with the
# dedupe index
LMDB_CASES=("1024 1 plain" "1024 1000 plain" "1300 32 queue" "1300 32 index")
declare -A LMDB=() # "SIZE BATCH LAYOUT" -> "records/s bytes_written_per_record"
if want lmdb && [ -n "$QLMDB" ]; then
    for c in "${LMDB_CASES[@]}"; do
        read -r size batch layout <<<"$c"
        rm -rf "$workdir/lmdb" && mkdir "$workdir/lmdb"
        raw=$workdir/raw/lmdb-$size-$batch-$layout.txt
        if run_fg 60 "$raw" "$QLMDB" "$workdir/lmdb" "$size" "$batch" 3000 "$layout"; then
            LMDB[$c]=$(awk '$1 == "lmdb" {printf "%.0f %.0f", $12, $16}' "$raw")
            read -r r w <<<"${LMDB[$c]}"
            say "$(printf '%4ds lmdb: %s-byte records, %4d per commit, layout %-5s: %s records/s, %s bytes written per record' \
                "$SECONDS" "$size" "$batch" "$layout" "$(commas "$r")" "$(commas "$w")")"
        else
            say "queue: the raw LMDB loop failed: $(head -c 200 "$raw")"
        fi
    done
    rm -rf "$workdir/lmdb"
fi

# --- 1. acknowledged transactions/s, group commit on and off, the sink down ----------------------
ACK_TSV=$workdir/ack.tsv
: >"$ACK_TSV"
if want ack; then
    n=0
    for run in $(seq 1 "$RUNS"); do
        # interleaved, the order rotating so that no mode always goes first
        modes=(on off)
        [ "$TMPFS" = 1 ] && [ -n "$shmdir" ] && modes+=(tmpfs)
        k=$(((run - 1) % ${#modes[@]}))
        for mode in "${modes[@]:k}" "${modes[@]:0:k}"; do
            n=$((n + 1))
            gc=true
            [ "$mode" = off ] && gc=false
            store=$workdir/store-ack-$mode-$run
            [ "$mode" = tmpfs ] && store=$shmdir/store-ack-$run
            # retry.min 30s: the sender tries each destination once, then stays out of the way
            chappe_start "ack-$mode-$run" "$store" "$gc" 30s 60s
            [ "$n" = 1 ] && detect_depth_source && say "queue: queue depth from: $DEPTH_SRC"
            st=$(put_one "localhost:${SINK_PORTS[0]}" "check-$mode-$run")
            if [ "$st" != 200 ]; then
                PROBLEMS+=("ack $mode run $run: check PUT answered $st: $(head -c 200 "$workdir/raw/put.body")")
                say "queue: ** CHECK FAILED: PUT /send through the egress answered $st"
                chappe_stop "ack-$mode-$run"
                continue
            fi
            wrk_run "$warm_s" "$workdir/raw/ack-$mode-$run.warmup.txt" "w$mode$run" kib || true
            x0=$(txnid "$store")
            io0=$(awk '$1 == "wchar:" {print $2}' "/proc/$CHAPPE_PID/io" 2>/dev/null || true)
            cpu_mark
            m0=$MARK
            rc=0
            wrk_run "$dur_s" "$workdir/raw/ack-$mode-$run.txt" "a$mode$run" kib --latency || rc=$?
            cpu_mark
            cpu_use "$m0" "$MARK"
            x1=$(txnid "$store")
            io1=$(awk '$1 == "wchar:" {print $2}' "/proc/$CHAPPE_PID/io" 2>/dev/null || true)
            written=-
            [ -n "$io0" ] && [ -n "$io1" ] && written=$((io1 - io0))
            commits=-
            [ -n "$x0" ] && [ -n "$x1" ] && commits=$((x1 - x0))
            read -r rps p50 p99 non2xx sockerr reqs <<<"$(wrk_parse "$workdir/raw/ack-$mode-$run.txt")"
            [ "$rc" -ne 0 ] && sockerr=$((sockerr + 1)) && say "queue: wrk exited with $rc"
            chappe_up || { sockerr=$((sockerr + 1)) && PROBLEMS+=("ack $mode run $run: chappe DIED"); }
            depth=$(queue_depth || echo -)
            mdb=$(stat -c %s "$store/data.mdb" 2>/dev/null || echo 0)
            store_metrics >"$workdir/raw/ack-$mode-$run.metrics"
            chappe_stop "ack-$mode-$run"
            rm -rf "$store"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$mode" "$rps" \
                "$p50" "$p99" "$non2xx" "$sockerr" "$reqs" "$BG" "$CHAPPE_PCT" "$WRK_PCT" \
                "$depth" "$mdb" "$commits" "$written" >>"$ACK_TSV"
            flag=""
            [ $((non2xx + sockerr)) -gt 0 ] && flag="  ** errors: non-2xx $non2xx, socket $sockerr"
            [ "$BG" -gt "$NOISE_PCT" ] && flag="$flag  ** noisy: other processes used $BG% CPU"
            say "$(printf '%4ds [%d/%d] ack run %d %-5s %10s txn/s  p50 %6s ms  p99 %7s ms  chappe %3s%% wrk %3s%% bg %2s%%  depth %s, %s commits%s' \
                "$SECONDS" "$n" $((RUNS * ${#modes[@]})) "$run" "$mode" "$rps" "$p50" "$p99" "$CHAPPE_PCT" \
                "$WRK_PCT" "$BG" "$depth" "$commits" "$flag")"
        done
    done
fi

# --- 2. end to end: the sink up, wrk at full speed, deliveries counted at the sink ----------------
DLV=""
if want deliver; then
    sink_start deliver
    store=$workdir/store-deliver
    chappe_start deliver "$store" true 1s 2s
    [ "$DEPTH_SRC" = none ] && detect_depth_source
    # the check: one transaction reaches the sink (TLS, the test CA, discovery of localhost:PORT)
    st=$(put_one "localhost:${SINK_PORTS[0]}" "dcheck-1")
    got=0
    for _ in $(seq 1 50); do
        got=$(sink_lines dcheck)
        [ "$got" -ge 1 ] && break
        sleep 0.2
    done
    if [ "$st" != 200 ] || [ "$got" -lt 1 ]; then
        PROBLEMS+=("deliver: check transaction: egress answered $st, sink saw $got line(s) in 10 s")
        say "queue: ** CHECK FAILED: a transaction did not reach the sink (answer $st, seen $got)"
        tail -n 10 "$CHAPPE_LOG" >&2 || true
    else
        cpu_mark
        m0=$MARK
        t0=$(now_ms)
        rc=0
        wrk_run "$dur_s" "$workdir/raw/deliver.txt" d kib --latency || rc=$?
        t1=$(now_ms)
        cpu_mark
        cpu_use "$m0" "$MARK"
        sleep 0.3 # the sink's log buffer: flushed every 200 ms
        read -r d_lines _ _ _ _ <<<"$(sink_count d)"
        read -r rps p50 p99 non2xx sockerr reqs <<<"$(wrk_parse "$workdir/raw/deliver.txt")"
        [ "$rc" -ne 0 ] && sockerr=$((sockerr + 1))
        acked=$((reqs - non2xx))
        # the drain: until every acknowledged transaction reached the sink, or a stall
        last=$d_lines last_t=$(now_ms) deadline=$(($(now_ms) + CATCHUP_TIMEOUT * 1000))
        while :; do
            cur=$(sink_lines d)
            [ "$cur" != "$last" ] && last=$cur last_t=$(now_ms)
            if [ "$cur" -ge "$acked" ]; then
                read -r _ u _ _ _ <<<"$(sink_count d)"
                [ "$u" -ge "$acked" ] && break
            fi
            chappe_up || break
            [ $(($(now_ms) - last_t)) -gt $((STALL * 1000)) ] && break
            [ "$(now_ms)" -gt "$deadline" ] && break
            sleep 0.25
        done
        sleep 0.3
        read -r dl du dbad _ dlast <<<"$(sink_count d)"
        depth=$(queue_depth || echo -)
        drain_ms=$(awk -v a="$dlast" -v t="$t1" 'BEGIN {d = a * 1000 - t; printf "%d", (d < 0 ? 0 : d)}')
        dps=$(awk -v n="$d_lines" -v ms="$((t1 - t0))" 'BEGIN {printf "%.0f", (ms > 0 ? n * 1000 / ms : 0)}')
        depth_check "deliver, after the drain" "$depth" 0
        DLV="$rps $p50 $p99 $non2xx $sockerr $acked $d_lines $dps $du $((dl - du)) $dbad $drain_ms $depth $BG $CHAPPE_PCT $WRK_PCT"
        [ "$du" -lt "$acked" ] &&
            PROBLEMS+=("deliver: $acked transactions acknowledged, $du distinct reached the sink (queue depth now: $depth)")
        chappe_up || PROBLEMS+=("deliver: chappe DIED")
        say "$(printf '%4ds deliver: acked %s txn/s, delivered %s/s during the run; backlog drained %.1f s after; %s acked, %s distinct delivered, %s duplicates' \
            "$SECONDS" "$rps" "$dps" "$(awk -v m="$drain_ms" 'BEGIN {print m / 1000}')" "$acked" "$du" "$((dl - du))")"
    fi
    chappe_stop deliver
    sink_stop
    rm -rf "$store"
fi

# --- 3. catch-up: CATCHUP transactions queued while the sink is down, then the sink comes up ------
CU=""
if want catchup; then
    store=$workdir/store-catchup
    # retry 1s..2s: each destination's backoff ends within 2.8 s of the sink coming up
    chappe_start catchup "$store" true 1s 2s
    [ "$DEPTH_SRC" = none ] && detect_depth_source
    if fill c kib "$CATCHUP"; then
        queued=$FILL_N
        fill_rate=$((FILL_N * 1000 / (FILL_MS > 0 ? FILL_MS : 1)))
        depth0=$(queue_depth || echo -)
        say "$(printf '%4ds catchup: %s transactions queued in %.1f s (%s/s), queue depth %s; sink up' \
            "$SECONDS" "$queued" "$(awk -v m="$FILL_MS" 'BEGIN {print m / 1000}')" "$fill_rate" "$depth0")"
        t0=$(now_ms) # from the moment the sink starts
        sink_start catchup
        retry_all
        last=0 last_t=$t0 deadline=$((t0 + CATCHUP_TIMEOUT * 1000)) why=""
        while :; do
            cur=$(sink_lines c)
            [ "$cur" != "$last" ] && last=$cur last_t=$(now_ms)
            if [ "$cur" -ge "$queued" ]; then
                read -r _ u _ _ _ <<<"$(sink_count c)"
                [ "$u" -ge "$queued" ] && break
            fi
            chappe_up || { why="chappe DIED"; break; }
            [ $(($(now_ms) - last_t)) -gt $((STALL * 1000)) ] && { why="stalled: no delivery for $STALL s"; break; }
            [ "$(now_ms)" -gt "$deadline" ] && { why="not done after $CATCHUP_TIMEOUT s"; break; }
            sleep 0.25
        done
        sleep 0.3
        read -r cl cu cbad cfirst clast <<<"$(sink_count c)"
        depth1=$(queue_depth || echo -)
        total_ms=$(awk -v a="$clast" -v t="$t0" 'BEGIN {printf "%d", a * 1000 - t}')
        first_ms=$(awk -v a="$cfirst" -v t="$t0" 'BEGIN {printf "%d", a * 1000 - t}')
        rate=$(awk -v n="$cu" -v a="$cfirst" -v b="$clast" 'BEGIN {printf "%.0f", (b > a ? n / (b - a) : 0)}')
        depth_check "catchup, before the sink came up" "$depth0" "$queued"
        depth_check "catchup, at the end" "$depth1" 0
        CU="$queued $fill_rate $depth0 $cu $((cl - cu)) $cbad $first_ms $total_ms $rate $depth1"
        if [ -n "$why" ] || [ "$cu" -lt "$queued" ]; then
            PROBLEMS+=("catchup: $queued queued, $cu distinct delivered ${why:+($why)}; queue depth now $depth1")
        fi
        say "$(printf '%4ds catchup: %s of %s delivered in %.1f s after the sink came up (first after %.1f s; %s/s); %s duplicates; depth now %s' \
            "$SECONDS" "$cu" "$queued" "$(awk -v m="$total_ms" 'BEGIN {print m / 1000}')" \
            "$(awk -v m="$first_ms" 'BEGIN {print m / 1000}')" "$rate" "$((cl - cu))" "$depth1")"
        sink_stop
    else
        say "queue: catchup: the fill failed (see the problems at the end)"
    fi
    chappe_stop catchup
    rm -rf "$store"
fi

# --- 4. memory with a deep queue: DEPTH small transactions, the sink down ------------------------
DP=""
if want depth; then
    store=$workdir/store-depth
    chappe_start depth "$store" true 5s 1h
    [ "$DEPTH_SRC" = none ] && detect_depth_source
    sleep 1
    read -r r0 _ a0 f0 <<<"$(rss)"
    first=$SMALL_FILL
    [ "$DEPTH" -lt "$first" ] && first=$DEPTH
    ok=1
    fill s1 small "$first" || ok=0
    n1=$FILL_N ms1=$FILL_MS
    sleep 1
    read -r r1 _ a1 f1 <<<"$(rss)"
    d1=$(queue_depth || echo -)
    say "$(printf '%4ds depth: %s queued (%s/s): RSS %s KiB (anon %s, file %s), depth %s' "$SECONDS" \
        "$n1" $((n1 * 1000 / (ms1 > 0 ? ms1 : 1))) "$r1" "$a1" "$f1" "$d1")"
    n2=$n1 ms2=0
    if [ "$ok" = 1 ] && [ "$DEPTH" -gt "$first" ]; then
        fill s2 small $((DEPTH - first)) || ok=0
        n2=$((n1 + FILL_N)) ms2=$FILL_MS
    fi
    sleep 1
    read -r r2 h2 a2 f2 <<<"$(rss)"
    d2=$(queue_depth || echo -)
    mdb=$(stat -c %s "$store/data.mdb" 2>/dev/null || echo 0)
    mdb_du=$(du -k "$store/data.mdb" 2>/dev/null | awk '{print $1 * 1024}')
    say "$(printf '%4ds depth: %s queued: RSS %s KiB (anon %s, file %s), HWM %s KiB, depth %s, data.mdb %s bytes' \
        "$SECONDS" "$n2" "$r2" "$a2" "$f2" "$h2" "$d2" "$mdb")"
    chappe_stop depth
    # and a restart on the deep queue: how long until the egress answers, and the memory then
    t0=$(now_ms)
    chappe_start depth-restart "$store" true 5s 1h
    ready_ms=$(($(now_ms) - t0))
    sleep 2
    read -r r3 _ a3 f3 <<<"$(rss)"
    d3=$(queue_depth || echo -)
    chappe_stop depth-restart
    depth_check "depth, after the first fill" "$d1" "$n1"
    depth_check "depth, after the second fill" "$d2" "$n2"
    depth_check "depth, after the restart" "$d3" "$n2"
    DP="$r0 $a0 $f0 $n1 $r1 $a1 $f1 $d1 $n2 $r2 $a2 $f2 $h2 $d2 $mdb ${mdb_du:-0} $ready_ms $r3 $a3 $f3 $d3 $ms1 $ms2"
    rm -rf "$store"
fi

# --- summary ---------------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
{
    echo "| measurement | result | notes |"
    echo "|---|---:|---|"
    for c in "${LMDB_CASES[@]}"; do
        [ -n "${LMDB[$c]:-}" ] || continue
        read -r size batch layout <<<"$c"
        read -r r w <<<"${LMDB[$c]}"
        case "$batch $layout" in
        "1 plain") what="1 KiB records, one durable commit each" ;;
        "1000 plain") what="1 KiB records, 1,000 per durable commit" ;;
        *" queue") what="chappe's queue layout, $batch txns per commit, no dedupe index" ;;
        *) what="chappe's queue layout with the dedupe index, $batch txns per commit" ;;
        esac
        printf '| LMDB alone: %s | %s records/s | %.1f KiB written per record; bench/queue-lmdb.c, same disk |\n' \
            "$what" "$(commas "$r")" "$(awk -v w="$w" 'BEGIN {print w / 1024}')"
    done
    pass_line=""
    if [ -s "$ACK_TSV" ]; then
        for mode in on off tmpfs; do
            col() { awk -F'\t' -v m="$mode" -v c="$1" '$2 == m {print $c}' "$ACK_TSV"; }
            [ -n "$(col 3)" ] || continue
            case $mode in
            on) label="group commit **on**" ;;
            off) label="group commit **off** (a durable commit per txn)" ;;
            tmpfs) label="group commit on, store on **tmpfs** (fsync free, not durable: the CPU ceiling)" ;;
            esac
            med=$(col 3 | median)
            p50=$(col 4 | median)
            p99=$(col 5 | median)
            cpu_c=$(col 10 | median)
            cpu_w=$(col 11 | median)
            # commits in the measured runs (requests per commit: the batch size), bytes written
            per_commit=$(awk -F'\t' -v m="$mode" -v secs="$((dur_s * $(col 3 | wc -l)))" '
                $2 == m && $14 != "-" && $14 > 0 {r += $8; c += $14}
                $2 == m && $15 != "-" && $8 > 0 {wr += $8; w += $15}
                END {
                    if (c) printf "; %.1f txn per commit (%.0f commits/s)", r / c, c / secs
                    if (wr) printf "; %.1f KiB written per txn", w / wr / 1024
                }' "$ACK_TSV")
            errs=$(awk -F'\t' -v m="$mode" '$2 == m {e += $6 + $7} END {print e + 0}' "$ACK_TSV")
            runs_txt=$(awk -F'\t' -v m="$mode" '$2 == m {printf "%s%.0f", n++ ? ", " : "", $3}' "$ACK_TSV")
            printf '| acked PUT /send, 1 KiB, %s conns, %s | %s txn/s | median of %s; p50 %.2f ms, p99 %.2f ms; chappe %s%% / wrk %s%% of the CPUs%s; errors %s |\n' \
                "$CONNS" "$label" "$(commas "$(printf '%.0f' "$med")")" "$runs_txt" "$p50" "$p99" \
                "$cpu_c" "$cpu_w" "$per_commit" "$errs$([ "$errs" -gt 0 ] && echo ' !')"
            case $mode in
            on) ON=$med ON_ERR=$errs ;;
            off) OFF=$med ;;
            esac
        done
        if [ -n "${ON:-}" ] && [ -n "${OFF:-}" ]; then
            echo "| group commit on / off | $(awk -v a="$ON" -v b="$OFF" 'BEGIN {printf "%.1fx", (b > 0 ? a / b : 0)}') | |"
        fi
        if [ -n "${ON:-}" ]; then
            verdict=FAIL
            awk -v a="$ON" -v g="$GOAL" 'BEGIN {exit !(a >= g)}' && [ "${ON_ERR:-0}" = 0 ] && verdict=PASS
            pass_line="| **goal: acked txn/s with group commit >= $(commas "$GOAL")** | **$verdict** | $(commas "$(printf '%.0f' "$ON")") txn/s, $(awk -v a="$ON" -v g="$GOAL" 'BEGIN {printf "%.2fx", a / g}') the goal |"
        fi
    fi
    if [ -n "$DLV" ]; then
        read -r rps p50 p99 non2xx sockerr acked _ dps du dup dbad drain depth _ cc cw <<<"$DLV"
        printf '| end to end, %s destinations: acked (wrk, %s s) | %s txn/s | p50 %.2f ms, p99 %.2f ms; errors %s; chappe %s%% / wrk %s%% of the CPUs |\n' \
            "$NDEST" "$dur_s" "$(commas "$(printf '%.0f' "$rps")")" "$p50" "$p99" "$((non2xx + sockerr))" "$cc" "$cw"
        printf '| end to end: delivered to the sink during the run | %s txn/s | backlog drained %.1f s after wrk stopped; %s acked, %s delivered (distinct), %s duplicates, %s non-200 |\n' \
            "$(commas "$dps")" "$(awk -v m="$drain" 'BEGIN {print m / 1000}')" "$(commas "$acked")" "$(commas "$du")" "$dup" "$dbad"
    fi
    if [ -n "$CU" ]; then
        read -r queued frate depth0 cu cdup cbad first_ms total_ms rate depth1 <<<"$CU"
        printf '| catch-up: %s queued (1 KiB, sink down), sink up -> queue empty | %.1f s | first delivery after %.1f s, then %s txn/s; %s delivered (distinct), %s duplicates; queued at %s txn/s |\n' \
            "$(commas "$queued")" "$(awk -v m="$total_ms" 'BEGIN {print m / 1000}')" \
            "$(awk -v m="$first_ms" 'BEGIN {print m / 1000}')" "$(commas "$rate")" "$(commas "$cu")" "$cdup" "$(commas "$frate")"
    fi
    if [ -n "$DP" ]; then
        read -r r0 a0 f0 n1 r1 a1 f1 d1 n2 r2 a2 f2 h2 d2 mdb mdb_du ready r3 a3 f3 d3 ms1 ms2 <<<"$DP"
        printf '| VmRSS, empty queue | %s MiB | RssAnon %s MiB, RssFile %s MiB |\n' "$(mib "$r0")" "$(mib "$a0")" "$(mib "$f0")"
        [ "$n2" -gt "$n1" ] &&
            printf '| VmRSS, %s queued (~210-byte txns, sink down) | %s MiB | RssAnon %s MiB, RssFile %s MiB (pages of data.mdb mapped by LMDB: page cache) |\n' "$(commas "$n1")" "$(mib "$r1")" "$(mib "$a1")" "$(mib "$f1")"
        if [ "$n2" -gt "$n1" ]; then fr=$(((n2 - n1) * 1000 / (ms2 > 0 ? ms2 : 1))); else fr=$((n1 * 1000 / (ms1 > 0 ? ms1 : 1))); fi
        printf '| VmRSS, %s queued | %s MiB | RssAnon %s MiB, RssFile %s MiB; VmHWM %s MiB; queued at %s txn/s |\n' "$(commas "$n2")" "$(mib "$r2")" "$(mib "$a2")" "$(mib "$f2")" "$(mib "$h2")" \
            "$(commas "$fr")"
        printf '| data.mdb with %s queued | %s MiB | %s bytes/txn (file size; %s MiB allocated) |\n' "$(commas "$n2")" \
            "$(awk -v b="$mdb" 'BEGIN {printf "%.0f", b / 1048576}')" "$(awk -v b="$mdb" -v n="$n2" 'BEGIN {printf "%.0f", n ? b / n : 0}')" \
            "$(awk -v b="$mdb_du" 'BEGIN {printf "%.0f", b / 1048576}')"
        printf '| restart with %s queued: egress accepting | %.1f s | 2 s later VmRSS %s MiB (RssAnon %s MiB) |\n' "$(commas "$n2")" \
            "$(awk -v m="$ready" 'BEGIN {print m / 1000}')" "$(mib "$r3")" "$(mib "$a3")"
    fi
    [ -n "$pass_line" ] && echo "$pass_line"
    echo
    echo "queue depth reported by: $DEPTH_SRC${DEPTH_SRC:+ (admin: GET /_chappe/admin/queue; cli: chappe queue list --json)}"
    bgmax=$(awk -F'\t' '$9 > m {m = $9} END {print m + 0}' "$ACK_TSV")
    if [ -n "$DLV" ]; then read -r -a x <<<"$DLV"; [ "${x[13]}" -gt "$bgmax" ] && bgmax=${x[13]}; fi
    if [ "$bgmax" -gt "$NOISE_PCT" ]; then
        echo "NOISY: other processes used up to $bgmax% of the CPUs during a measured run (rerun on a quiet machine)"
    else
        echo "quiet: other processes used at most $bgmax% of the CPUs in any measured run"
    fi
    if [ "${#PROBLEMS[@]}" -gt 0 ]; then
        echo "PROBLEMS:"
        printf '  %s\n' "${PROBLEMS[@]}"
    else
        echo "no problem: no crash, every acknowledged transaction delivered, no stall"
    fi
} | tee -a "$out"

{
    echo
    echo "after: $(uptime)"
    echo "ack runs: (run mode txn/s p50_ms p99_ms non2xx socket_errors requests bg% chappe% wrk% depth data.mdb_bytes commits bytes_written)"
    sed 's/^/  /' "$ACK_TSV"
    [ -n "$DLV" ] && echo "deliver: (txn/s p50 p99 non2xx sockerr acked delivered_in_run delivered/s distinct dup non200 drain_ms depth bg% chappe% wrk%)" &&
        echo "  $DLV"
    [ -n "$CU" ] && echo "catchup: (queued fill_txn/s depth_before distinct dup non200 first_ms total_ms txn/s depth_after)" &&
        echo "  $CU"
    [ -n "$DP" ] && echo "depth: (rss0 anon0 file0 n1 rss1 anon1 file1 depth1 n2 rss2 anon2 file2 hwm2 depth2 mdb_bytes mdb_alloc ready_ms rss3 anon3 file3 depth3 fill1_ms fill2_ms)" &&
        echo "  $DP"
    for f in "$workdir"/raw/*.metrics; do
        [ -s "$f" ] || continue
        echo "$(basename "$f"):"
        sed 's/^/  /' "$f"
    done
    for f in "$workdir"/chappe/*.log "$workdir/sink/error.log" "$workdir/sink/stderr.log"; do
        [ -s "$f" ] || continue
        echo
        echo "$(basename "$f"): $(wc -l <"$f") line(s), last 10:"
        tail -n 10 "$f" | cut -c1-200 | sed 's/^/  /'
    done
} >>"$out"
say "queue: results saved to $out"
# a crash, a lost transaction, a stall or a failed check: status 2 (and the temp dir is kept);
# a goal not met is not an error
[ "${#PROBLEMS[@]}" -eq 0 ] || exit 2
