#!/usr/bin/env bash
# verify.sh -- throughput of chappe's inbound X-Matrix verification (PUT /send) against the same
# bytes proxied without verification, and against the raw libsodium verify rate.
# SPDX-License-Identifier: ISC
#
# Usage: bash bench/verify.sh        (or: make bench-verify)       -- see bench/README.md
# Loopback only. Every process this script starts runs under `timeout` and is stopped by PID on
# exit, error or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

# --- knobs ---------------------------------------------------------------------------------
NREQ=${BENCH_VERIFY_REQUESTS:-50000}      # distinct pre-signed requests (cycled by wrk)
DURATION=${BENCH_DURATION:-10s}           # wrk -d of each measured run
RUNS=${BENCH_RUNS:-3}                     # measured runs per mode (median kept)
WARMUP=${BENCH_WARMUP:-2s}                # wrk -d of the warm-up before each measured run
CONNS=${BENCH_CONNECTIONS:-64}            # wrk -c
THREADS=${BENCH_THREADS:-2}               # wrk -t
WORKERS=${BENCH_WORKERS:-2}               # chappe workers
RAW_ROUNDS=${CRYPTO_ROUNDS:-5}            # raw libsodium loop: rounds before and after the runs
RAW_ROUND_MS=${CRYPTO_ROUND_MS:-300}      # length of one round (ms of CPU time)
GOAL_FACTOR=0.85                          # goal: verified >= 0.85 x min(unverified, raw x workers)
NOISE_PCT=${BENCH_NOISE_PCT:-10}          # flag runs where other processes used more CPU (%)
CHAPPE_BIN=${CHAPPE_BIN:-$repo/build/chappe}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$here/results}
CERT_DIR=${BENCH_CERT_DIR:-}              # use ca.crt/server.crt/server.key from here instead
KEEP=${BENCH_KEEP:-0}                     # 1: keep the temp dir (configs, logs, wrk output)
HOSTNAME_TLS=localhost                    # SNI, Host, X-Matrix destination, homeserver name
ORIGIN=a.example.org                      # the signing server (pinned in chappe's config)
ONBIND=/_matrix/federation/v1/3pid/onbind # a spec route without authentication
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
NCPU=$(nproc)

# --- helpers (as in proxy.sh) ----------------------------------------------------------------
say() { printf '%s\n' "$*" >&2; }
die() { say "verify: $*"; exit 1; }

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
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "verify: $name (pid $pid) still running, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$CUR_PID" ]; then wait "$CUR_PID" 2>/dev/null || true; fi
    if [ -n "$workdir" ] && [ -d "$workdir" ]; then
        if [ "$KEEP" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; }; then
            say "verify: kept $workdir (configs, logs, raw wrk output)"
        else
            rm -rf "$workdir"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "verify: interrupted"; exit 130' INT
trap 'say "verify: terminated"; exit 143' TERM

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

# wait_ready NAME PORT LOG: until the port accepts, max 15 s.
wait_ready() {
    local name=$1 port=$2 log=$3
    for _ in $(seq 1 75); do
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            say "verify: $name exited during start-up; last lines of $log:"
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        if port_open "$port"; then return 0; fi
        sleep 0.2
    done
    say "verify: $name not ready on port $port after 15 s; last lines of $log:"
    tail -n 20 "$log" >&2 || true
    return 1
}

free_ports() { # N -> N free loopback TCP ports
    "$PY" - "$1" <<'EOF'
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

# --- CPU accounting (as in proxy.sh; builtins only: forks are slow on a busy machine) ------------
OUR_PIDS=() # upstream nginx (master + worker) and chappe: set after start-up

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
# and WRK_PCT (% of all CPUs used by chappe and by wrk), CHAPPE_TICKS.
BG=0 CHAPPE_PCT=0 WRK_PCT=0 CHAPPE_TICKS=0
cpu_use() {
    local a b secs_x_hz other
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    secs_x_hz=$(((b[0] - a[0]) * HZ * NCPU / 1000000))
    other=$(((b[1] - a[1]) - (b[2] - a[2]) - (b[3] - a[3])))
    [ "$other" -lt 0 ] && other=0
    CHAPPE_TICKS=$((b[4] - a[4]))
    BG=0 CHAPPE_PCT=0 WRK_PCT=0
    if [ "$secs_x_hz" -gt 0 ]; then
        BG=$((100 * other / secs_x_hz))
        CHAPPE_PCT=$((100 * CHAPPE_TICKS / secs_x_hz))
        WRK_PCT=$((100 * (b[3] - a[3]) / secs_x_hz))
    fi
    return 0
}

# --- preflight ------------------------------------------------------------------------------
for c in wrk nginx openssl curl pgrep timeout awk "${CC:-cc}"; do
    command -v "$c" >/dev/null 2>&1 || die "missing command: $c (run: sh tools/deps.sh core bench)"
done
[ -x "$PY" ] || die "missing $PY"
"$PY" -c 'import signedjson.sign, canonicaljson' 2>/dev/null ||
    die "$PY lacks signedjson/canonicaljson (apt-get install python3-signedjson python3-canonicaljson)"
[ -x "$CHAPPE_BIN" ] || die "$CHAPPE_BIN not found or not executable (make build/chappe)"
case "$RUNS" in '' | *[!0-9]* | 0) die "BENCH_RUNS must be a positive integer" ;; esac
case "$NREQ" in '' | *[!0-9]* | 0) die "BENCH_VERIFY_REQUESTS must be a positive integer" ;; esac
case "$THREADS" in '' | *[!0-9]* | 0) die "BENCH_THREADS must be a positive integer" ;; esac
case "$WORKERS" in '' | *[!0-9]* | 0) die "BENCH_WORKERS must be a positive integer" ;; esac
[ "$NREQ" -ge "$THREADS" ] || die "BENCH_VERIFY_REQUESTS must be at least BENCH_THREADS"

dur_s=$(seconds_of "$DURATION")
warm_s=$(seconds_of "$WARMUP")
estimate=$((RUNS * 2 * (dur_s + warm_s + 2) + NREQ / 5000 + 60))
SERVER_TTL=$((estimate * 2 + 120))

workdir=$(mktemp -d /tmp/chappe-verify.XXXXXX)
chmod 755 "$workdir" # nginx's worker may run as nobody when we are root
mkdir -p "$workdir/raw" "$workdir/upstream/tmp" "$workdir/chappe" "$workdir/req"
chmod 1777 "$workdir/upstream/tmp"
# our own copy: a rebuild of build/chappe during the bench does not change what is measured
cp "$CHAPPE_BIN" "$workdir/chappe/chappe"
CHAPPE=$workdir/chappe/chappe
stamp=$(date -u +%Y%m%d-%H%M%S)
say "verify: work directory $workdir; $(uptime)"

# --- certificates ---------------------------------------------------------------------------
if [ -n "$CERT_DIR" ]; then
    mkdir -p "$workdir/certs"
    cp "$CERT_DIR/ca.crt" "$CERT_DIR/server.crt" "$CERT_DIR/server.key" "$workdir/certs/"
else
    [ -f "$repo/certs/gen.sh" ] || die "certs/gen.sh missing (or set BENCH_CERT_DIR)"
    (cd "$repo" && sh certs/gen.sh "$workdir/certs") >"$workdir/certs.log" 2>&1 ||
        { cat "$workdir/certs.log" >&2; die "certs/gen.sh failed"; }
fi
CRT=$workdir/certs/server.crt
KEY=$workdir/certs/server.key
if [ ! -s "$CRT" ] || [ ! -s "$KEY" ]; then die "no server.crt/server.key in $workdir/certs"; fi

# --- the signing key of a.example.org and the pre-signed requests ------------------------------
run_fg 10 "$workdir/keygen.log" "$CHAPPE" keygen -o "$workdir/signing.key" ||
    die "chappe keygen failed: $(cat "$workdir/keygen.log")"
run_fg 10 "$workdir/public.txt" "$CHAPPE" key public --key "$workdir/signing.key" ||
    die "chappe key public failed: $(cat "$workdir/public.txt")"
read -r KEY_ID KEY_PUB <<<"$(head -n 1 "$workdir/public.txt")"
[[ "$KEY_ID" == ed25519:* && -n "$KEY_PUB" ]] || die "unexpected key public output"
say "verify: signing $NREQ requests as $ORIGIN $KEY_ID (bench/presign.py, signedjson)"
run_fg $((NREQ / 1000 + 60)) "$workdir/presign.log" "$PY" "$here/presign.py" \
    --key "$workdir/signing.key" --out "$workdir/req" --count "$NREQ" --tag "v$stamp" \
    --origin "$ORIGIN" --destination "$HOSTNAME_TLS" ||
    die "presign failed: $(tail -n 5 "$workdir/presign.log")"
# signedjson reads chappe's key file: the same public key on both sides
[ "$(cat "$workdir/req/public.txt")" = "$KEY_ID $KEY_PUB" ] ||
    die "signedjson and chappe disagree on the public key of $workdir/signing.key"
REQS=$workdir/req/requests.tsv
BODY=$workdir/req/body.json

# --- the raw libsodium loop: crypto_sign_verify_detached over the first request's signed bytes ---
cat >"$workdir/rawverify.c" <<'EOF'
/* rawverify.c -- crypto_sign_verify_detached in a loop, per second of this thread's CPU time. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t slurp(const char *path, unsigned char *p, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(p, 1, cap, f) : 0;

    if (f)
        fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    static unsigned char msg[65536];
    unsigned char sig[crypto_sign_BYTES + 1], pk[crypto_sign_PUBLICKEYBYTES + 1];
    size_t n;
    int rounds, ms;

    if (argc != 6 || sodium_init() < 0)
        return 2;
    n = slurp(argv[1], msg, sizeof(msg));
    if (slurp(argv[2], sig, sizeof(sig)) != crypto_sign_BYTES ||
        slurp(argv[3], pk, sizeof(pk)) != crypto_sign_PUBLICKEYBYTES || n == 0)
        return 2;
    rounds = atoi(argv[4]);
    ms = atoi(argv[5]);
    if (crypto_sign_verify_detached(sig, msg, n, pk) != 0)
        return 3; /* the request's signature must verify */
    sig[0] ^= 1;
    if (crypto_sign_verify_detached(sig, msg, n, pk) == 0)
        return 3; /* and an altered one must not */
    sig[0] ^= 1;
    for (int r = 0; r < rounds; r++) {
        double t0 = cpu_s(), t;
        long ops = 0;
        do {
            for (int i = 0; i < 16; i++)
                if (crypto_sign_verify_detached(sig, msg, n, pk) != 0)
                    return 3;
            ops += 16;
        } while ((t = cpu_s() - t0) < ms / 1000.0);
        printf("raw %.0f\n", (double)ops / t);
    }
    printf("bytes %zu libsodium %s\n", n, sodium_version_string());
    return 0;
}
EOF
"${CC:-cc}" -std=gnu11 -O2 -Wall -Wextra -Werror -o "$workdir/rawverify" "$workdir/rawverify.c" \
    -lsodium >"$workdir/rawverify.log" 2>&1 ||
    die "cannot build the raw verify loop: $(head -n 5 "$workdir/rawverify.log")"
RAW_LOG=$workdir/raw/rawverify.txt
: >"$RAW_LOG"
# One loop per CPU, pinned (taskset): the vCPUs of a VM need not be equally fast, and chappe's
# workers run on all of them. Lines "raw CPU RATE" in RAW_LOG.
raw_cpus=any
if command -v taskset >/dev/null 2>&1; then raw_cpus=$(seq 0 $((NCPU - 1)) | tr '\n' ' '); fi
raw_rounds() {
    local c pin
    for c in $raw_cpus; do
        pin=()
        [ "$c" = any ] || pin=(taskset -c "$c")
        run_fg $((RAW_ROUNDS * RAW_ROUND_MS / 1000 + 20)) "$workdir/raw/rawverify.part" \
            "${pin[@]}" "$workdir/rawverify" "$workdir/req/raw.msg" "$workdir/req/raw.sig" \
            "$workdir/req/raw.pk" "$RAW_ROUNDS" "$RAW_ROUND_MS" ||
            die "raw verify loop failed: $(head -c 200 "$workdir/raw/rawverify.part")"
        awk -v c="$c" '$1 == "raw" {print "raw", c, $2} $1 == "bytes"' \
            "$workdir/raw/rawverify.part" >>"$RAW_LOG"
    done
}

read -r UP_PORT CHAPPE_PORT <<<"$(free_ports 2)"

# --- upstream: one nginx worker playing the homeserver -----------------------------------------
cat >"$workdir/upstream/nginx.conf" <<EOF
# verify bench upstream: PUT /send/* and PUT /3pid/onbind answer 200 {} (the body is discarded)
worker_processes 1;
pid $workdir/upstream/nginx.pid;
error_log $workdir/upstream/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $workdir/upstream/tmp/body;
    proxy_temp_path $workdir/upstream/tmp/proxy;
    fastcgi_temp_path $workdir/upstream/tmp/fastcgi;
    uwsgi_temp_path $workdir/upstream/tmp/uwsgi;
    scgi_temp_path $workdir/upstream/tmp/scgi;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_max_body_size 16m;
    client_body_buffer_size 64k;
    default_type application/json;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        location ^~ /_matrix/federation/v1/send/ {
            limit_except PUT { deny all; }
            return 200 '{}';
        }
        location = $ONBIND {
            limit_except PUT { deny all; }
            return 200 '{}';
        }
        location / {
            return 404 '{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}';
        }
    }
}
EOF

cat >"$workdir/chappe/chappe.yaml" <<EOF
# verify bench: chappe in front of the bench upstream, $ORIGIN's key pinned (never fetched)
server_name: relay.localhost
workers: $WORKERS
access_log: "off"
log_level: warn
listeners:
  - { type: federation, bind: ["127.0.0.1:$CHAPPE_PORT"], tls: true }
tls:
  certificates: [{ cert: $CRT, key: $KEY }]
homeservers:
  - { server_name: $HOSTNAME_TLS, upstream: "http://127.0.0.1:$UP_PORT" }
federation_domain_whitelist: [$ORIGIN]
sovereign_ranges: ["127.0.0.0/8"]
ip_range_whitelist: ["127.0.0.0/8"]
queue: { path: $workdir/chappe/store }
pinned_keys:
  $ORIGIN: { "$KEY_ID": "$KEY_PUB" }
EOF

# --- start ------------------------------------------------------------------------------------
start_bg upstream "$workdir/upstream/stderr.log" \
    nginx -p "$workdir/upstream" -c "$workdir/upstream/nginx.conf" \
    -e "$workdir/upstream/error.log" -g 'daemon off;'
wait_ready upstream "$UP_PORT" "$workdir/upstream/stderr.log" || die "upstream did not start"
UP_PID=$(main_pid upstream)
start_bg chappe "$workdir/chappe/stderr.log" "$CHAPPE" run -c "$workdir/chappe/chappe.yaml"
wait_ready chappe "$CHAPPE_PORT" "$workdir/chappe/stderr.log" || die "chappe did not start"
CHAPPE_PID=$(main_pid chappe)
if [ -z "$UP_PID" ] || [ -z "$CHAPPE_PID" ]; then die "cannot find the server PIDs"; fi
read -r -a OUR_PIDS <<<"$UP_PID $(pgrep -P "$UP_PID" | tr '\n' ' ') $CHAPPE_PID"
chappe_up() { kill -0 "$CHAPPE_PID" 2>/dev/null; }

# --- header ------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
out=$RESULTS_DIR/$stamp-verify.txt
cpu=$(lscpu 2>/dev/null | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
{
    echo "chappe verified-inbound bench -- $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $NCPU CPU(s), ${cpu:-unknown CPU}, $(uname -sr); before: $(uptime)"
    echo "versions: $("$CHAPPE" --version 2>/dev/null | head -n1 || true)" \
        "(binary of $(date -u -r "$CHAPPE_BIN" '+%Y-%m-%d %H:%M UTC'), tree at commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
            git -C "$repo" diff --quiet HEAD -- src include 2>/dev/null ||
                echo ', src/include modified')), $(nginx -v 2>&1 | sed 's/.*: //'), wrk" \
        "$(wrk -v 2>&1 | awk 'NR == 1 {print $2}' || true)"
    echo "wrk over TLS: $THREADS threads, $CONNS connections, ${DURATION} x $RUNS runs per mode" \
        "(median), ${WARMUP} warm-up before each, modes interleaved; chappe $WORKERS workers"
    echo "requests: $NREQ pre-signed PUT /send ($ORIGIN $KEY_ID pinned, body $(wc -c <"$BODY")" \
        "bytes canonical JSON), cycled: a run longer than $NREQ requests repeats them"
    echo
} | tee "$out"

# --- checks: a signed request passes, an altered signature is refused, onbind is proxied ---------
IFS=$'\t' read -r path1 auth1 <"$REQS"
sig1=${auth1#*sig=\"}
sig1=${sig1%%\"*}
first=${sig1:0:1}
[ "$first" = A ] && bad=B || bad=A
auth_bad=${auth1/sig=\"$first/sig=\"$bad}
base=https://$HOSTNAME_TLS:$CHAPPE_PORT
copt=(-sk --max-time 5 --resolve "$HOSTNAME_TLS:$CHAPPE_PORT:127.0.0.1" -X PUT
    -H 'Content-Type: application/json' --data-binary "@$BODY" -w '%{http_code}')
check() { # NAME WANT CURL-ARGS...: one request; sets CHECK_FAILED when the status differs
    local name=$1 want=$2 got note=""
    shift 2
    got=$(timeout 10 curl "${copt[@]}" -o "$workdir/raw/check.body" "$@" || echo 000)
    if [ "$got" != "$want" ]; then
        CHECK_FAILED=1
        note="  ** CHECK FAILED: $(head -c 200 "$workdir/raw/check.body" 2>/dev/null || true)"
    fi
    printf '%-46s %s (want %s)%s\n' "check: $name" "$got" "$want" "$note" | tee -a "$out"
}
CHECK_FAILED=0
check "signed PUT /send" 200 -H "Authorization: $auth1" "$base$path1"
check "PUT /send, first signature char changed" 401 -H "Authorization: $auth_bad" "$base$path1"
check "PUT /3pid/onbind, no Authorization" 200 "$base$ONBIND"
check "PUT /send, no Authorization" 401 "$base$path1"
[ "$CHECK_FAILED" = 0 ] || die "a start-up check failed (see above); nothing measured"
echo | tee -a "$out"

# --- measurements --------------------------------------------------------------------------------
raw_rounds # before the runs
tsv=$workdir/results.tsv
: >"$tsv"
total=$((RUNS * 2))
n=0
for run in $(seq 1 "$RUNS"); do
    # interleaved; the order alternates so that neither mode always goes first
    if [ $((run % 2)) = 1 ]; then order="verified unverified"; else order="unverified verified"; fi
    for mode in $order; do
        n=$((n + 1))
        if ! chappe_up; then
            printf '%s\t%s\tdead\t-1\t-1\t0\t1\t0\t0\t0\t0\t0\n' "$run" "$mode" >>"$tsv"
            continue
        fi
        wargs=(-t "$THREADS" -c "$CONNS" --timeout 5s -H "Host: $HOSTNAME_TLS"
            -s "$here/verify.lua" "$base" -- "$mode" "$REQS" "$BODY" "$THREADS")
        raw=$workdir/raw/$mode-run$run.txt
        run_fg $((warm_s + 30)) "$workdir/raw/$mode-run$run.warmup.txt" \
            wrk -d "$WARMUP" "${wargs[@]}" || true
        rc=0
        cpu_mark
        m0=$MARK
        run_fg $((dur_s + 40)) "$raw" wrk -d "$DURATION" --latency "${wargs[@]}" || rc=$?
        cpu_mark
        cpu_use "$m0" "$MARK"
        read -r rps p50 p99 non2xx sockerr reqs <<<"$(wrk_parse "$raw")"
        [ "$rc" -ne 0 ] && sockerr=$((sockerr + 1)) && say "verify: wrk exited with $rc ($raw)"
        chappe_up || sockerr=$((sockerr + 1))
        us_req=0
        [ "$reqs" -gt 0 ] && us_req=$((CHAPPE_TICKS * 1000000 / HZ / reqs))
        printf '%s\t' "$run" "$mode" "$rps" "$p50" "$p99" "$non2xx" "$sockerr" "$reqs" "$BG" \
            "$CHAPPE_PCT" "$WRK_PCT" >>"$tsv"
        printf '%s\n' "$us_req" >>"$tsv"
        flag=""
        [ $((non2xx + sockerr)) -gt 0 ] && flag="  ** errors: non-2xx $non2xx, socket $sockerr"
        [ "$BG" -gt "$NOISE_PCT" ] && flag="$flag  ** noisy: other processes used $BG% CPU"
        [ "$reqs" -gt "$NREQ" ] && flag="$flag  (requests repeated: $reqs > $NREQ)"
        say "$(printf '%4ds [%d/%d] run %d %-10s %10s req/s  p50 %6s ms  p99 %6s ms  chappe %3s%% wrk %3s%% bg %2s%%%s' \
            "$SECONDS" "$n" "$total" "$run" "$mode" "$rps" "$p50" "$p99" "$CHAPPE_PCT" \
            "$WRK_PCT" "$BG" "$flag")"
    done
done
raw_rounds # and after
chappe_up || echo "** chappe DIED during the bench (see the end of this file)" >>"$out"

# --- summary ---------------------------------------------------------------------------------------
awk -v rawlog="$RAW_LOG" -v workers="$WORKERS" -v factor="$GOAL_FACTOR" -v noise="$NOISE_PCT" \
    -v nreq="$NREQ" -v ncpu="$NCPU" -f - "$tsv" <<'EOF' | tee -a "$out"
BEGIN { FS = "\t" }
function median(list,    a, n, i, j, t)
{
    n = split(list, a, " ")
    if (n == 0)
        return -1
    for (i = 2; i <= n; i++) {
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--)
            a[j + 1] = a[j]
        a[j + 1] = t
    }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function commas(x,    s, r)
{
    s = sprintf("%.0f", x)
    r = ""
    while (length(s) > 3) {
        r = "," substr(s, length(s) - 2) r
        s = substr(s, 1, length(s) - 3)
    }
    return s r
}
$3 == "dead" { dead[$2]++; next }
{
    rps[$2] = rps[$2] " " $3; p50[$2] = p50[$2] " " $4; p99[$2] = p99[$2] " " $5
    err[$2] += $6 + $7
    if ($6 + $7 > 0)
        bad = bad sprintf("  run %d %s: non-2xx %d, socket %d\n", $1, $2, $6, $7)
    cpu[$2] = cpu[$2] " " $10; wrk[$2] = wrk[$2] " " $11; us[$2] = us[$2] " " $12
    if ($9 + 0 > bgmax + 0)
        bgmax = $9
    if ($9 + 0 > noise + 0)
        noisy = noisy sprintf("  run %d %s: other processes used %d%% of the CPUs\n", $1, $2, $9)
    if ($8 + 0 > nreq + 0)
        repeated++
    runs[$2] = runs[$2] sprintf(" %.0f", $3)
}
END {
    while ((getline line < rawlog) > 0) {
        split(line, f, " ")
        if (f[1] == "raw") {
            if (!(f[2] in rawc))
                cpus[++ncpus] = f[2]
            rawc[f[2]] = rawc[f[2]] " " f[3]
        }
        if (f[1] == "bytes")
            rawinfo = f[2] " bytes, libsodium " f[4]
    }
    v = median(rps["verified"]); u = median(rps["unverified"])
    r = 0 # one loop on an average CPU of this machine: the mean of the per-CPU medians
    for (i = 1; i <= ncpus; i++) {
        rm[i] = median(rawc[cpus[i]])
        r += rm[i] / ncpus
        rawdesc = rawdesc sprintf("\n  CPU %s: median %s (%s)", cpus[i], commas(rm[i]),
                                  substr(rawc[cpus[i]], 2))
    }
    lim = r * workers
    goal = (u < lim ? u : lim) * factor
    printf "| | req/s | p50 ms | p99 ms | chappe CPU us/req | chappe CPU %% | wrk CPU %% | errors |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    split("verified unverified", modes, " ")
    for (i = 1; i <= 2; i++) {
        m = modes[i]
        printf "| %s | %s | %.2f | %.2f | %d | %d | %d | %s |\n",
            m == "verified" ? "verified: PUT /send, X-Matrix checked" \
                            : "unverified: PUT /3pid/onbind, same body", commas(median(rps[m])),
            median(p50[m]), median(p99[m]), median(us[m]), median(cpu[m]), median(wrk[m]),
            (err[m] ? err[m] " !" : "0") (dead[m] ? " (" dead[m] " runs: chappe dead)" : "")
    }
    printf "| raw verify/s x loops | %s x %d = %s | | | | | | |\n", commas(r), workers, commas(lim)
    printf "| goal: min(unverified, raw x loops) x %.2f | %s | | | | | | |\n", factor, commas(goal)
    # (a bare `>` in a printf argument list would be a redirection: compute first)
    pass = v >= goal && goal > 0 && !err["verified"] && !dead["verified"]
    vg = goal > 0 ? v / goal : 0
    vu = u > 0 ? v / u : 0
    vl = lim > 0 ? v / lim : 0
    printf "| **verified / goal** | **%.2fx: %s** | | | | | | |\n", vg, pass ? "PASS" : "FAIL"
    printf "\nverified / unverified: %.2fx; verified / (raw x loops): %.2fx\n", vu, vl
    # if verifying added exactly the raw verify cost to proxying, on the CPUs chappe got
    if (u > 0 && lim > 0) {
        serial = 1 / (1 / u + 1 / lim)
        printf("proxying + raw verify, costs added: 1 / (1/unverified + 1/(raw x loops)) = %s" \
               " req/s;\n  verified reaches %.2fx of it\n", commas(serial), v / serial)
    }
    printf "runs (req/s): verified%s; unverified%s\n", runs["verified"], runs["unverified"]
    printf("raw: crypto_sign_verify_detached over one request's signed bytes (%s), per\n" \
           "  second of one thread's CPU time, pinned to each CPU, rounds before and after the\n" \
           "  runs; raw = mean of the per-CPU medians:%s\n", rawinfo, rawdesc)
    printf("chappe CPU: its CPU time per request (us/req) and its share of all %d CPUs (%%),\n" \
           "  wrk likewise; medians of the runs\n", ncpu)
    if (repeated)
        printf "%d run(s) sent more than the %d pre-signed requests: they were repeated\n",
            repeated, nreq
    if (bad != "")
        printf "FLAGGED runs (errors):\n%s", bad
    if (noisy != "")
        printf "NOISY runs (rerun on a quiet machine):\n%s", noisy
    else
        printf "quiet: other processes used at most %d%% of the CPUs in any run\n", bgmax
}
EOF

{
    echo
    echo "after: $(uptime)"
    echo "raw per-run results:"
    echo "  (run mode req/s p50_ms p99_ms non2xx socket_errors requests bg% chappe% wrk%" \
        "chappe_us/req)"
    sed 's/^/  /' "$tsv"
    for f in chappe/stderr.log upstream/error.log upstream/stderr.log; do
        [ -s "$workdir/$f" ] || continue
        echo
        echo "$f: $(wc -l <"$workdir/$f") line(s), last 10:"
        tail -n 10 "$workdir/$f" | cut -c1-200 | sed 's/^/  /'
    done
} >>"$out"
say "verify: results saved to $out"
