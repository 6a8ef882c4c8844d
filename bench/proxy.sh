#!/usr/bin/env bash
# proxy.sh -- benchmark chappe against nginx and HAProxy as TLS-terminating federation proxies.
# SPDX-License-Identifier: ISC
#
# Usage: bash bench/proxy.sh        (or: make bench)       -- see bench/README.md
# Loopback only. Every process this script starts is stopped by PID on exit, error or Ctrl-C,
# and each one also runs under `timeout`, so nothing survives the script by more than a bound.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

# --- knobs ---------------------------------------------------------------------------------
DURATION=${BENCH_DURATION:-10s}           # wrk -d of each measured run
RUNS=${BENCH_RUNS:-3}                     # measured runs per proxy and workload (median kept)
WARMUP=${BENCH_WARMUP:-2s}                # wrk -d of the warm-up before each measured run
CONNS=${BENCH_CONNECTIONS:-64}            # wrk -c
THREADS=${BENCH_THREADS:-2}               # wrk -t
WORKERS=${BENCH_WORKERS:-2}               # proxy worker processes/threads
IDLE_CONNS=${BENCH_IDLE_CONNS:-1000}      # idle TLS connections for the memory test
IDLE_REQUEST=${BENCH_IDLE_REQUEST:-0}     # 1: each idle connection first does one GET /version
PROXIES=${BENCH_PROXIES:-chappe nginx haproxy}
WORKLOADS=${BENCH_WORKLOADS-send version handshake} # empty: idle test only
CHAPPE_BIN=${CHAPPE_BIN:-$repo/build/chappe}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$here/results}
CERT_DIR=${BENCH_CERT_DIR:-}              # use ca.crt/server.crt/server.key from here instead
KEEP=${BENCH_KEEP:-0}                     # 1: keep the temp dir (configs, logs, wrk output)
NO_RESUME=${BENCH_NO_RESUME:-0}           # 1: nginx/HAProxy refuse TLS session resumption
RESUME=${BENCH_RESUME:-0}                 # 1: handshake workload lets wrk resume TLS sessions
HOSTNAME_TLS=localhost                    # SNI, Host and X-Matrix destination
CIPHERS=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305
CIPHERS=$CIPHERS:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384
CIPHERS=$CIPHERS:ECDHE-RSA-CHACHA20-POLY1305
# send workload: requests pre-signed by a.example.org (bench/presign.py), whose key chappe pins
NREQ=${BENCH_VERIFY_REQUESTS:-50000}      # distinct pre-signed requests (wrk cycles through them)
ORIGIN=a.example.org
NOISE_PCT=${BENCH_NOISE_PCT:-10}          # flag runs where other processes used more CPU (%)
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
NCPU=$(nproc)

# --- helpers -------------------------------------------------------------------------------
say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

seconds_of() { # "10s" | "10" | "1m" -> integer seconds
    case "$1" in
    *ms) echo 1 ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *) echo "$1" ;;
    esac
}

# Background processes we own, each under a `timeout` wrapper: name -> pid of the wrapper.
declare -A PIDS=()
CUR_PID=""           # foreground job (wrk, curl, ...) started in the background and waited on
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
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "bench: $name (pid $pid) still running, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$CUR_PID" ]; then wait "$CUR_PID" 2>/dev/null || true; fi
    if [ -n "$workdir" ] && [ -d "$workdir" ]; then
        if [ "$KEEP" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; }; then
            say "bench: kept $workdir (configs, logs, raw wrk output)"
        else
            rm -rf "$workdir"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "bench: interrupted"; exit 130' INT
trap 'say "bench: terminated"; exit 143' TERM

# run_fg SECONDS OUTFILE CMD...: run CMD under timeout with output to OUTFILE; return its status.
# Runs in the background and is waited on so that Ctrl-C is handled at once.
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

# tree_pids PID: PID and its direct children (nginx master + workers).
tree_pids() {
    echo "$1"
    pgrep -P "$1" || true
}

# rss_kib PID...: sum of VmRSS in KiB.
rss_kib() {
    local sum=0 p v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# --- CPU accounting: how much of the machine did processes other than the bench use? --------------
# Pure bash (builtins only, no fork): forks cost tens of ms each on a busy machine.
OUR_PIDS=() # every server process we run (upstream, proxies, nginx workers): set after start-up

# cpu_mark: set MARK to "microseconds machine_busy our_ticks children_ticks" (ticks of USER_HZ).
# Call it directly, never in $(...): `times` in a forked subshell reports no children.
MARK=""
cpu_mark() {
    local line f p ours=0 busy kids=0 v m sec frac t
    read -r line </proc/stat
    read -r -a f <<<"$line"
    busy=$((f[1] + f[2] + f[3] + f[6] + f[7] + f[8])) # user nice system irq softirq steal
    for p in "${OUR_PIDS[@]}"; do
        read -r line 2>/dev/null <"/proc/$p/stat" || continue
        read -r -a f <<<"${line##*) }"
        ours=$((ours + f[11] + f[12])) # utime + stime, all threads
    done
    # children reaped by this shell (wrk, via timeout): second line of `times`, "XmY.ZZZs XmY.ZZZs"
    times >"$workdir/times.txt"
    { read -r line; read -r line; } <"$workdir/times.txt"
    for v in $line; do
        m=${v%%m*} t=${v#*m} t=${t%s} sec=${t%.*} frac=${t#*.}
        kids=$((kids + (m * 60 + sec) * HZ + 10#$frac * HZ / 1000))
    done
    t=${EPOCHREALTIME/./}
    MARK="$t $busy $ours $kids"
}

# cpu_foreign MARK_BEFORE MARK_AFTER: set BG to the % of all CPUs used outside the bench
BG=0
cpu_foreign() {
    local a b secs_x_hz other
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    secs_x_hz=$(((b[0] - a[0]) * HZ * NCPU / 1000000))
    other=$(((b[1] - a[1]) - (b[2] - a[2]) - (b[3] - a[3])))
    [ "$other" -lt 0 ] && other=0
    BG=0
    [ "$secs_x_hz" -gt 0 ] && BG=$((100 * other / secs_x_hz))
    return 0
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_ready NAME PORT LOG [WORD]: until the port accepts (or WORD appears in LOG), max 15 s.
wait_ready() {
    local name=$1 port=$2 log=$3 word=${4:-}
    for _ in $(seq 1 75); do
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            say "bench: $name exited during start-up; last lines of $log:"
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        if [ -n "$word" ] && grep -q "$word" "$log" 2>/dev/null && port_open "$port"; then
            return 0
        fi
        if port_open "$port"; then return 0; fi
        sleep 0.2
    done
    say "bench: $name not ready on port $port after 15 s; last lines of $log:"
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

# is_up PROXY: is it still running? Says so once, with its last log lines, when it is not.
declare -A DEAD=()
is_up() {
    local p=$1 log
    [ -z "${DEAD[$p]:-}" ] || return 1
    kill -0 "${MAINPID[$p]}" 2>/dev/null && return 0
    DEAD[$p]=1
    log=$workdir/$p/stderr.log
    say "bench: ** $p (pid ${MAINPID[$p]}) DIED; its remaining runs are skipped. Its log ends:"
    tail -n 20 "$log" >&2 || true
    echo "** $p DIED during the bench (see the end of this file)" >>"$out"
    return 1
}

# --- preflight ------------------------------------------------------------------------------
for c in wrk nginx haproxy openssl curl pgrep timeout awk; do
    command -v "$c" >/dev/null 2>&1 || die "missing command: $c (run: sh tools/deps.sh bench)"
done
[ -x "$PY" ] || die "missing $PY"
"$PY" -c 'import signedjson.sign, canonicaljson' 2>/dev/null ||
    die "$PY lacks signedjson/canonicaljson (apt-get install python3-signedjson python3-canonicaljson)"
case "$RUNS" in '' | *[!0-9]* | 0) die "BENCH_RUNS must be a positive integer" ;; esac
case "$IDLE_CONNS" in '' | *[!0-9]*) die "BENCH_IDLE_CONNS must be a number" ;; esac
case "$NREQ" in '' | *[!0-9]* | 0) die "BENCH_VERIFY_REQUESTS must be a positive integer" ;; esac
case "$THREADS" in '' | *[!0-9]* | 0) die "BENCH_THREADS must be a positive integer" ;; esac

want=""
for p in $PROXIES; do
    case "$p" in
    chappe)
        if [ -x "$CHAPPE_BIN" ]; then
            want="$want chappe"
        else
            say "bench: $CHAPPE_BIN not found or not executable: chappe skipped (make build/chappe)"
        fi
        ;;
    nginx | haproxy) want="$want $p" ;;
    *) die "unknown proxy in BENCH_PROXIES: $p" ;;
    esac
done
PROXIES=${want# }
[ -n "$PROXIES" ] || die "no proxy to benchmark"
for w in $WORKLOADS; do
    case "$w" in send | version | handshake) ;; *) die "unknown workload: $w" ;; esac
done

dur_s=$(seconds_of "$DURATION")
warm_s=$(seconds_of "$WARMUP")
nproxies=$(echo "$PROXIES" | wc -w)
nwork=$(echo "$WORKLOADS" | wc -w)
estimate=$((RUNS * nproxies * nwork * (dur_s + warm_s + 1) + nproxies * 10 + 15))
SERVER_TTL=$((estimate * 2 + 120))

# Raise the fd limit: IDLE_CONNS client sockets here, as many in the proxy plus upstream ones.
# HAProxy wants about 2 x maxconn; nginx gets worker_rlimit_nofile; chappe inherits ours.
need_fds=$((IDLE_CONNS * 4 + CONNS * 4 + 2048))
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then
    ulimit -n 65536 2>/dev/null || true
else
    ulimit -n "$hard" 2>/dev/null || true
fi
[ "$(ulimit -n)" -ge "$need_fds" ] ||
    die "ulimit -n is $(ulimit -n); need $need_fds (raise the hard limit or lower BENCH_IDLE_CONNS)"

workdir=$(mktemp -d /tmp/chappe-bench.XXXXXX)
chmod 755 "$workdir" # nginx workers may run as nobody when we are root
mkdir -p "$workdir/raw" "$workdir/upstream/tmp" "$workdir/nginx/tmp" "$workdir/haproxy" \
    "$workdir/chappe"
chmod 1777 "$workdir/upstream/tmp" "$workdir/nginx/tmp"

# wrk resumes the previous TLS session when it reconnects; the shim makes every handshake full.
FRESH_SO=""
if [ "$RESUME" != 1 ] && [[ " $WORKLOADS " == *" handshake "* ]]; then
    if ${CC:-cc} -shared -fPIC -O2 -o "$workdir/wrk-fresh.so" "$here/wrk-fresh.c" -ldl \
        >"$workdir/wrk-fresh.log" 2>&1; then
        FRESH_SO=$workdir/wrk-fresh.so
    else
        say "bench: cannot build bench/wrk-fresh.c: $(head -n 3 "$workdir/wrk-fresh.log")"
        say "bench: the handshake workload will let wrk resume TLS sessions"
        RESUME=1
    fi
fi

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
crt_text=$(openssl x509 -in "$CRT" -noout -text 2>/dev/null || true)
[[ "$crt_text" == *prime256v1* || "$crt_text" == *P-256* ]] ||
    say "bench: warning: server.crt is not an ECDSA P-256 certificate"
(umask 077 && cat "$CRT" "$KEY" >"$workdir/haproxy/server.pem")

# --- the signed requests: every proxy gets the same bytes; chappe verifies them -----------------
# presign.py makes a.example.org's key (Synapse format) and signs the requests as Synapse does;
# the send workload (bench/verify.lua) cycles through them, the PUT check sends the first one.
nsigned=1
[[ " $WORKLOADS " == *" send "* ]] && nsigned=$((NREQ > THREADS ? NREQ : THREADS))
mkdir -p "$workdir/req"
say "bench: signing $nsigned request(s) as $ORIGIN (bench/presign.py)"
timeout $((nsigned / 1000 + 60)) "$PY" "$here/presign.py" --generate \
    --key "$workdir/req/signing.key" --out "$workdir/req" --count "$nsigned" \
    --tag "s$(date -u +%Y%m%d%H%M%S)" --origin "$ORIGIN" --destination "$HOSTNAME_TLS" \
    >"$workdir/presign.log" 2>&1 || die "presign failed: $(tail -n 5 "$workdir/presign.log")"
read -r KEY_ID KEY_PUB <"$workdir/req/public.txt"
REQS=$workdir/req/requests.tsv
BODY=$workdir/req/body.json
IFS=$'\t' read -r PATH1 AUTH1 <"$REQS"

read -r UP_PORT CHAPPE_PORT NGINX_PORT HAPROXY_PORT <<<"$(free_ports 4)"
declare -A PORT=([chappe]=$CHAPPE_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT)

# --- upstream: one fast nginx worker playing the homeserver -------------------------------------
cat >"$workdir/upstream/nginx.conf" <<EOF
# bench upstream: a fake homeserver answering the two federation endpoints the bench uses
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
        location = /_matrix/federation/v1/version {
            # ?echo=1 shows what the proxy forwarded (checked once per proxy, not benchmarked)
            if (\$arg_echo) {
                return 200 '{"xff":"\$http_x_forwarded_for","xfp":"\$http_x_forwarded_proto"}\n';
            }
            return 200 '{"server":{"name":"bench-upstream","version":"1"}}';
        }
        location ^~ /_matrix/federation/v1/send/ {
            # \`return\` reads and discards the request body; the connection stays alive
            limit_except PUT { deny all; }
            return 200 '{"pdus":{}}';
        }
        location / {
            return 404 '{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}';
        }
    }
}
EOF

# --- the three proxies -------------------------------------------------------------------------
if [ "$NO_RESUME" = 1 ]; then
    NGX_TICKETS=off
    HAP_RESUME="no-tls-tickets"
    HAP_CACHE="tune.ssl.cachesize 0"
else
    NGX_TICKETS=on
    HAP_RESUME=""
    HAP_CACHE=""
fi

cat >"$workdir/nginx/nginx.conf" <<EOF
# bench: nginx as a TLS-terminating reverse proxy, configured like chappe
worker_processes $WORKERS;
pid $workdir/nginx/nginx.pid;
error_log $workdir/nginx/error.log warn;
worker_rlimit_nofile $need_fds;
events { worker_connections $((IDLE_CONNS * 2 + 1024)); }
http {
    access_log off;
    client_body_temp_path $workdir/nginx/tmp/body;
    proxy_temp_path $workdir/nginx/tmp/proxy;
    fastcgi_temp_path $workdir/nginx/tmp/fastcgi;
    uwsgi_temp_path $workdir/nginx/tmp/uwsgi;
    scgi_temp_path $workdir/nginx/tmp/scgi;
    keepalive_timeout 60s;
    keepalive_requests 10000000;
    client_header_timeout 60s;
    client_max_body_size 13107200;
    upstream homeserver {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl reuseport backlog=4096;
        server_name $HOSTNAME_TLS;
        ssl_certificate $CRT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2;
        ssl_ciphers $CIPHERS;
        ssl_prefer_server_ciphers on;
        ssl_session_tickets $NGX_TICKETS;
        location / {
            proxy_pass http://homeserver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF

cat >"$workdir/haproxy/haproxy.cfg" <<EOF
# bench: HAProxy as a TLS-terminating reverse proxy, configured like chappe (no logging)
global
    nbthread $WORKERS
    maxconn $((IDLE_CONNS * 2 + 1024))
    pidfile $workdir/haproxy/haproxy.pid
    ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2
    ssl-default-bind-ciphers $CIPHERS
    $HAP_CACHE

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 60s
    timeout http-keep-alive 60s

frontend federation
    bind 127.0.0.1:$HAPROXY_PORT ssl crt $workdir/haproxy/server.pem alpn http/1.1 $HAP_RESUME
    http-request set-header X-Forwarded-Proto https
    http-request deny deny_status 413 if { req.hdr_val(content-length) gt 13107200 }
    default_backend homeserver

backend homeserver
    server hs 127.0.0.1:$UP_PORT
EOF

cat >"$workdir/chappe/chappe.yaml" <<EOF
# bench: chappe in front of the bench upstream
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
# like nginx client_header_timeout and HAProxy timeout http-request: 60 s for the first request,
# so that the idle-connection test (handshake, no request) has the same window on all three
limits: { header_timeout: 60s }
# the policy is required: the bench's requests come from a.example.org (bench/presign.py)
federation_domain_whitelist: [$ORIGIN]
sovereign_ranges: ["127.0.0.0/8"]
ip_range_whitelist: ["127.0.0.0/8"]
queue: { path: $workdir/chappe/store }
# the send workload's requests are signed by this key: chappe verifies every one (never fetched)
pinned_keys:
  $ORIGIN: { "$KEY_ID": "$KEY_PUB" }
EOF

# --- start everything ----------------------------------------------------------------------------
start_bg upstream "$workdir/upstream/stderr.log" \
    nginx -p "$workdir/upstream" -c "$workdir/upstream/nginx.conf" \
    -e "$workdir/upstream/error.log" -g 'daemon off;'
wait_ready upstream "$UP_PORT" "$workdir/upstream/stderr.log" || die "upstream did not start"
declare -A MAINPID=()
MAINPID[upstream]=$(main_pid upstream)
for p in $PROXIES; do
    case "$p" in
    chappe)
        start_bg chappe "$workdir/chappe/stderr.log" \
            "$CHAPPE_BIN" run -c "$workdir/chappe/chappe.yaml"
        wait_ready chappe "$CHAPPE_PORT" "$workdir/chappe/stderr.log" ready ||
            die "chappe did not start"
        ;;
    nginx)
        start_bg nginx "$workdir/nginx/stderr.log" \
            nginx -p "$workdir/nginx" -c "$workdir/nginx/nginx.conf" \
            -e "$workdir/nginx/error.log" -g 'daemon off;'
        wait_ready nginx "$NGINX_PORT" "$workdir/nginx/stderr.log" || die "nginx did not start"
        ;;
    haproxy)
        start_bg haproxy "$workdir/haproxy/stderr.log" haproxy -db -f "$workdir/haproxy/haproxy.cfg"
        wait_ready haproxy "$HAPROXY_PORT" "$workdir/haproxy/stderr.log" ||
            die "haproxy did not start"
        ;;
    esac
    MAINPID[$p]=$(main_pid "$p")
    [ -n "${MAINPID[$p]}" ] || die "cannot find the PID of $p"
done
for name in "${!MAINPID[@]}"; do
    read -r -a more <<<"$(tree_pids "${MAINPID[$name]}" | tr '\n' ' ')"
    OUR_PIDS+=("${more[@]}")
done

# --- header: machine and versions ---------------------------------------------------------------
stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/$stamp.txt"
cpu=$(lscpu 2>/dev/null | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
{
    echo "chappe proxy bench -- $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) CPU(s), ${cpu:-unknown CPU}, $(uname -sr)"
    versions="$(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}')"
    versions="$versions, wrk $(wrk -v 2>&1 | awk 'NR == 1 {print $2}' || true)"
    if [ -n "${MAINPID[chappe]:-}" ]; then
        versions="$versions, $("$CHAPPE_BIN" --version 2>/dev/null | head -n1 || true)"
    fi
    echo "versions: $versions, $(openssl version | awk '{print $1, $2}')"
    if [ -n "$WORKLOADS" ]; then
        echo "wrk: $THREADS threads, $CONNS connections, ${DURATION} x $RUNS runs (median)," \
            "${WARMUP} warm-up before each; workloads: $WORKLOADS"
    fi
    if [[ " $WORKLOADS " == *" send "* ]]; then
        echo "send: $nsigned requests pre-signed by $ORIGIN $KEY_ID, cycled; chappe pins the key" \
            "and verifies each request, nginx and HAProxy forward them unchecked"
    fi
    echo "proxies: $WORKERS workers, TLS 1.2; idle test: $IDLE_CONNS connections" \
        "$([ "$IDLE_REQUEST" = 1 ] && echo "(after one request each)" || echo "(handshake only)")"
    [ "$NO_RESUME" = 1 ] && echo "BENCH_NO_RESUME=1: nginx/HAProxy TLS session resumption disabled"
    if [ "$RESUME" = 1 ]; then
        echo "handshake workload: wrk resumes TLS sessions if the proxy allows (BENCH_RESUME=1)"
    fi
    echo
} | tee "$out"

# --- sanity checks: each proxy answers, forwards X-Forwarded-*, and what TLS it negotiates --------
declare -A TLSINFO=()
for p in $PROXIES; do
    port=${PORT[$p]}
    base="https://$HOSTNAME_TLS:$port"
    copt=(-sk --max-time 5 --resolve "$HOSTNAME_TLS:$port:127.0.0.1" -o "$workdir/raw/check.body"
        -w '%{http_code}')
    st_get=$(timeout 10 curl "${copt[@]}" "$base/_matrix/federation/v1/version" || echo 000)
    body_get=$(cat "$workdir/raw/check.body" 2>/dev/null || true)
    st_put=$(timeout 10 curl "${copt[@]}" -X PUT -H 'Content-Type: application/json' \
        -H "Authorization: $AUTH1" --data-binary "@$BODY" "$base$PATH1" || echo 000)
    body_put=$(cat "$workdir/raw/check.body" 2>/dev/null || true)
    timeout 10 curl "${copt[@]}" "$base/_matrix/federation/v1/version?echo=1" >/dev/null || true
    echo_body=$(cat "$workdir/raw/check.body" 2>/dev/null || true)
    rm -f "$workdir/raw/check.body"
    # TLS parameters, and whether a session can be resumed (wrk resumes on reconnect).
    sess=$workdir/raw/$p.sess
    s1=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername "$HOSTNAME_TLS" \
        -sess_out "$sess" </dev/null 2>&1 || true)
    s2=$(timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername "$HOSTNAME_TLS" \
        -sess_in "$sess" </dev/null 2>&1 || true)
    proto=$(awk '/^ *Protocol *:/ {print $3; exit}' <<<"$s1")
    cipher=$(awk '/^ *Cipher *:/ {print $3; exit}' <<<"$s1")
    group=$(awk -F': ' '/Server Temp Key/ {print $2; exit}' <<<"$s1")
    ticket=no
    grep -q 'TLS session ticket:' <<<"$s1" && ticket=yes
    resumed=no
    grep -q '^Reused' <<<"$s2" && resumed=yes
    TLSINFO[$p]="$proto $cipher, ${group:-?}, resumption: $resumed (tickets: $ticket)"
    flag=""
    [ "$st_get" = 200 ] && grep -q bench-upstream <<<"$body_get" || flag="$flag GET-version=$st_get"
    [ "$st_put" = 200 ] || flag="$flag PUT-send=$st_put"
    xff=$(sed -n 's/.*"xff":"\([^"]*\)".*/\1/p' <<<"$echo_body")
    xfp=$(sed -n 's/.*"xfp":"\([^"]*\)".*/\1/p' <<<"$echo_body")
    [ "$xff" = 127.0.0.1 ] && [ "$xfp" = https ] || flag="$flag X-Forwarded-For/Proto"
    {
        printf '%-8s %s\n' "$p" "${TLSINFO[$p]}"
        printf '%-8s upstream saw X-Forwarded-For=%s X-Forwarded-Proto=%s; GET %s, PUT %s%s\n' "" \
            "${xff:-none}" "${xfp:-none}" "$st_get" "$st_put" "${flag:+  ** CHECK FAILED:$flag}"
        if [ "$st_put" != 200 ] && [ -n "$body_put" ]; then
            printf '%-8s PUT answer: %.200s\n' "" "$body_put"
        fi
    } | tee -a "$out"
done
echo | tee -a "$out"

# --- idle TLS connections: RSS per connection -----------------------------------------------------
declare -A IDLE_KIB=() IDLE_NOTE=()
idle_proxies=$PROXIES
if [ "$IDLE_CONNS" -eq 0 ]; then
    idle_proxies="" # BENCH_IDLE_CONNS=0: no idle test
    for p in $PROXIES; do IDLE_KIB[$p]=-; done
fi
for p in $idle_proxies; do
    case "$p" in
    nginx) read -r -a pids <<<"$(tree_pids "${MAINPID[$p]}" | tr '\n' ' ')" ;;
    *) pids=("${MAINPID[$p]}") ;;
    esac
    sleep 0.5
    before=$(rss_kib "${pids[@]}")
    ilog=$workdir/raw/idle-$p.log
    hold=$((IDLE_CONNS / 50 + 40))
    iargs=(--port "${PORT[$p]}" --count "$IDLE_CONNS" --sni "$HOSTNAME_TLS" --hold "$hold"
        --connect-budget $((IDLE_CONNS / 50 + 25)))
    settle=1
    if [ "$IDLE_REQUEST" = 1 ]; then
        iargs+=(--request /_matrix/federation/v1/version)
        settle=3 # past chappe's 2-s buffer trim of idle keep-alive connections
    fi
    timeout -k 3 $((hold + 10)) "$PY" "$here/idle.py" "${iargs[@]}" >"$ilog" 2>&1 &
    PIDS[idle]=$!
    ready=""
    for _ in $(seq 1 $(((IDLE_CONNS / 50 + 30) * 10))); do
        ready=$(awk '$1 == "ready" {print $2, $3, $4}' "$ilog")
        [ -n "$ready" ] && break
        kill -0 "${PIDS[idle]}" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$ready" ]; then
        IDLE_KIB[$p]=NA
        IDLE_NOTE[$p]="idle helper failed: $(tail -n 3 "$ilog" | tr '\n' ' ')"
    else
        read -r opened failed secs <<<"$ready"
        sleep "$settle"
        after=$(rss_kib "${pids[@]}")
        # which of them did the proxy keep open while we measured?
        helper=$(pgrep -P "${PIDS[idle]}" | head -n1 || true) # python, under timeout
        kill -USR1 "${helper:-${PIDS[idle]}}" 2>/dev/null || true
        alive=""
        for _ in $(seq 1 30); do
            alive=$(awk '$1 == "alive" {print $2}' "$ilog" | tail -n1)
            [ -n "$alive" ] && break
            sleep 0.1
        done
        if [ "$opened" -gt 0 ]; then
            IDLE_KIB[$p]=$(awk -v a="$after" -v b="$before" -v n="$opened" \
                'BEGIN {printf "%.1f", (a - b) / n}')
        else
            IDLE_KIB[$p]=NA
        fi
        IDLE_NOTE[$p]="RSS ${before} -> ${after} KiB over ${#pids[@]} process(es);"
        IDLE_NOTE[$p]="${IDLE_NOTE[$p]} $opened opened in ${secs}s"
        [ "$failed" -gt 0 ] && IDLE_NOTE[$p]="${IDLE_NOTE[$p]}, $failed FAILED"
        if [ -n "$alive" ] && [ "$alive" -lt "$opened" ]; then
            IDLE_NOTE[$p]="${IDLE_NOTE[$p]}, only $alive still open at measurement  ** FLAGGED"
        fi
    fi
    kill -TERM "${PIDS[idle]}" 2>/dev/null || true
    wait "${PIDS[idle]}" 2>/dev/null || true
    unset 'PIDS[idle]'
    is_up "$p" || IDLE_NOTE[$p]="${IDLE_NOTE[$p]:-}  ** DIED"
    printf 'idle %-8s %s KiB/connection (%s)\n' "$p" "${IDLE_KIB[$p]}" "${IDLE_NOTE[$p]}" |
        tee -a "$out"
done
echo | tee -a "$out"
sleep 0.5

# --- throughput workloads -------------------------------------------------------------------------
# wrk_args WORKLOAD PROXY: set WRK_ARGS to the workload's wrk arguments (after the common ones)
WRK_ARGS=()
wrk_args() {
    local url="https://$HOSTNAME_TLS:${PORT[$2]}"
    case "$1" in
    send) WRK_ARGS=(-s "$here/verify.lua" "$url" -- verified "$REQS" "$BODY" "$THREADS") ;;
    version) WRK_ARGS=("$url/_matrix/federation/v1/version") ;;
    handshake) WRK_ARGS=(-H "Connection: close" "$url/_matrix/federation/v1/version") ;;
    esac
}

tsv=$workdir/results.tsv
: >"$tsv"
total=$((RUNS * nproxies * nwork))
n=0
read -r -a plist <<<"$PROXIES"
for run in $(seq 1 "$RUNS"); do
    # interleaved, and rotated so that no proxy always goes first: c n h, n h c, h c n, ...
    order=()
    for i in "${!plist[@]}"; do order+=("${plist[$(((i + run - 1) % ${#plist[@]}))]}"); done
    for w in $WORKLOADS; do
        for p in "${order[@]}"; do
            n=$((n + 1))
            if ! is_up "$p"; then
                printf '%s\t%s\t%s\tdead\t-1\t-1\t0\t0\t0\t0\n' "$run" "$w" "$p" >>"$tsv"
                continue
            fi
            common=(-t "$THREADS" -c "$CONNS" --timeout 5s -H "Host: $HOSTNAME_TLS")
            raw=$workdir/raw/$w-$p-run$run.txt
            pre=()
            if [ "$w" = handshake ] && [ -n "$FRESH_SO" ]; then pre=(env "LD_PRELOAD=$FRESH_SO"); fi
            wrk_args "$w" "$p"
            run_fg $((warm_s + 15)) "$workdir/raw/$w-$p-run$run.warmup.txt" \
                "${pre[@]}" wrk "${common[@]}" -d "$WARMUP" "${WRK_ARGS[@]}" || true
            wrk_args "$w" "$p"
            rc=0
            cpu_mark
            m0=$MARK
            run_fg $((dur_s + 20)) "$raw" "${pre[@]}" wrk "${common[@]}" -d "$DURATION" --latency \
                "${WRK_ARGS[@]}" || rc=$?
            cpu_mark
            cpu_foreign "$m0" "$MARK"
            bg=$BG
            read -r rps p50 p99 non2xx sockerr reqs <<<"$(wrk_parse "$raw")"
            [ "$rc" -ne 0 ] && sockerr=$((sockerr + 1)) && say "bench: wrk exited with $rc ($raw)"
            is_up "$p" || sockerr=$((sockerr + 1)) # it died during this run
            printf '%s\t' "$run" "$w" "$p" "$rps" "$p50" "$p99" "$non2xx" "$sockerr" \
                "$reqs" >>"$tsv"
            printf '%s\n' "$bg" >>"$tsv"
            flag=""
            [ $((non2xx + sockerr)) -gt 0 ] && flag="  ** errors: non-2xx $non2xx, socket $sockerr"
            [ "$bg" -gt "$NOISE_PCT" ] && flag="$flag  ** noisy: other processes used $bg% CPU"
            fmt='%4ds [%2d/%d] run %d %-9s %-8s %10s req/s  p50 %7s ms  p99 %7s ms  bg %3s%%%s'
            # shellcheck disable=SC2059
            say "$(printf "$fmt" \
                "$SECONDS" "$n" "$total" "$run" "$w" "$p" "$rps" "$p50" "$p99" "$bg" "$flag")"
        done
    done
done

# --- summary --------------------------------------------------------------------------------------
idle_list=""
for p in $PROXIES; do idle_list="$idle_list $p ${IDLE_KIB[$p]}"; done
awk -v proxies="$PROXIES" -v workloads="$WORKLOADS" -v idle="$idle_list" -v resume="$RESUME" \
    -v noise="$NOISE_PCT" -v plotdat="$workdir/plot.dat" -f "$here/summary.awk" "$tsv" |
    tee -a "$out"

{
    echo
    echo "raw per-run results:"
    echo "  (run workload proxy req/s p50_ms p99_ms non2xx socket_errors requests bg%)"
    sed 's/^/  /' "$tsv"
    # what the servers logged (warn and above): empty is the expected case
    for name in upstream $PROXIES; do
        case "$name" in
        chappe) logs=("$workdir/chappe/stderr.log") ;;
        haproxy) logs=("$workdir/haproxy/stderr.log") ;;
        *) logs=("$workdir/$name/error.log" "$workdir/$name/stderr.log") ;;
        esac
        for f in "${logs[@]}"; do
            [ -s "$f" ] || continue
            echo
            echo "$name: $(wc -l <"$f") line(s) in ${f#"$workdir"/}, last 10:"
            tail -n 10 "$f" | cut -c1-200 | sed 's/^/  /'
        done
    done
} >>"$out"

# --- optional plot --------------------------------------------------------------------------------
if command -v gnuplot >/dev/null 2>&1 && [ -n "$WORKLOADS" ]; then
    dat=$workdir/plot.dat
    ncol=$((nproxies + 1))
    plot=$RESULTS_DIR/$stamp.png
    term="pngcairo size 800,450"
    terms=$(echo 'set terminal' | timeout 10 gnuplot 2>&1 || true)
    if [[ "$terms" != *pngcairo* ]]; then
        plot=$RESULTS_DIR/$stamp.svg
        term="svg size 800,450"
    fi
    if timeout 20 gnuplot <<EOF >"$workdir/gnuplot.log" 2>&1; then
set terminal $term
set output "$plot"
set title "TLS proxy req/s, median of $RUNS x $DURATION, $CONNS connections ($stamp)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "requests/s (log scale)"
set logscale y
set yrange [10:*]
set key outside right top
set grid ytics
plot for [i=2:$ncol] "$dat" using i:xtic(1) title columnheader(i)
EOF
        say "bench: plot written to $plot"
    else
        say "bench: gnuplot failed, no plot: $(tail -n 3 "$workdir/gnuplot.log")"
    fi
fi

say "bench: results saved to $out"
