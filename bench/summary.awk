# summary.awk -- turn bench/proxy.sh's per-run results into the comparison table.
# SPDX-License-Identifier: ISC
#
# Input (tab-separated, one line per measured run):
#   run workload proxy req/s p50_ms p99_ms non2xx socket_errors requests bg%
# Variables (-v): proxies, workloads (space-separated, in display order), idle ("proxy KiB ..."),
# resume (1: handshakes were resumed), noise (bg% threshold), plotdat (file for gnuplot, or "").
# A proxy that died during the bench has req/s "dead" on the runs it missed.

BEGIN { FS = "\t" }

# median of a space-separated list of numbers; -1 when empty
function median(list,    a, n, i, j, t)
{
    n = split(list, a, " ")
    if (n == 0)
        return -1
    for (i = 2; i <= n; i++) { # insertion sort: n is the number of runs
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--)
            a[j + 1] = a[j]
        a[j + 1] = t
    }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

function ratio(c, best)
{
    return (best > 0 && c >= 0) ? sprintf("%.2fx", c / best) : "-"
}

{
    k = $2 SUBSEP $3
    if ($4 == "dead") {
        dead[k]++
        next
    }
    rps[k] = rps[k] " " $4
    p50[k] = p50[k] " " $5
    p99[k] = p99[k] " " $6
    err[k] += $7 + $8
    if ($7 + $8 > 0)
        bad[k] = bad[k] sprintf(" run %d (non-2xx %d, socket %d)", $1, $7, $8)
    if ($10 + 0 > bgmax[k] + 0)
        bgmax[k] = $10
    if ($10 + 0 > noise + 0)
        noisy = noisy sprintf("  run %d %s %s: %d%%\n", $1, $2, $3, $10)
}

END {
    np = split(proxies, P, " ")
    nw = split(workloads, W, " ")
    n = split(idle, I, " ")
    for (i = 1; i + 1 <= n; i += 2)
        kib[I[i]] = I[i + 1]
    name["send"] = "PUT /send (1 KiB)"
    name["version"] = "GET /version"
    name["handshake"] = (resume == 1) ? "conn/req, resumed" : "conn/req, full TLS"
    fmt = "%-18s %-8s %10s %9s %9s %7s %4s   %s\n"
    printf fmt, "workload", "proxy", "req/s", "p50 ms", "p99 ms", "errors", "bg%", "chappe vs best"

    if (plotdat != "") {
        printf "workload" > plotdat
        for (j = 1; j <= np; j++)
            printf "\t%s", P[j] > plotdat
        printf "\n" > plotdat
    }
    for (i = 1; i <= nw; i++) {
        w = W[i]
        best_r = best_50 = best_99 = -1
        for (j = 1; j <= np; j++) {
            p = P[j]
            k = w SUBSEP p
            R[p] = median(rps[k])
            L50[p] = median(p50[k])
            L99[p] = median(p99[k])
            if (p == "chappe" || R[p] < 0)
                continue
            if (R[p] > best_r)
                best_r = R[p]
            if (best_50 < 0 || L50[p] < best_50)
                best_50 = L50[p]
            if (best_99 < 0 || L99[p] < best_99)
                best_99 = L99[p]
        }
        if (plotdat != "")
            printf "%s", w > plotdat
        for (j = 1; j <= np; j++) {
            p = P[j]
            k = w SUBSEP p
            if (plotdat != "")
                printf "\t%s", (R[p] > 0 ? R[p] : 0) > plotdat
            cmp = ""
            if (p == "chappe" && best_r > 0 && R[p] >= 0)
                cmp = sprintf("req/s %s, p50 %s, p99 %s", ratio(R[p], best_r),
                              ratio(L50[p], best_50), ratio(L99[p], best_99))
            if (dead[k])
                cmp = cmp (cmp == "" ? "" : "; ") sprintf("DIED: %d run(s) missing", dead[k])
            e = (err[k] + dead[k] > 0) ? sprintf("%d!", err[k]) : sprintf("%d ", err[k])
            printf fmt, (j == 1 ? name[w] : ""), p,
                   (R[p] >= 0 ? sprintf("%.0f", R[p]) : "-"),
                   (L50[p] >= 0 ? sprintf("%.2f", L50[p]) : "-"),
                   (L99[p] >= 0 ? sprintf("%.2f", L99[p]) : "-"), e, bgmax[k] + 0, cmp
        }
        if (plotdat != "")
            printf "\n" > plotdat
    }

    best_k = -1
    for (j = 1; j <= np; j++) {
        p = P[j]
        if (p != "chappe" && kib[p] != "NA" && kib[p] != "" && (best_k < 0 || kib[p] + 0 < best_k))
            best_k = kib[p] + 0
    }
    for (j = 1; j <= np; j++) {
        p = P[j]
        cmp = ""
        if (p == "chappe" && best_k > 0 && kib[p] != "NA")
            cmp = sprintf("KiB %s", ratio(kib[p] + 0, best_k))
        printf fmt, (j == 1 ? "idle KiB/TLS conn" : ""), p, kib[p], "", "", "", "", cmp
    }

    flagged = 0
    for (i = 1; i <= nw; i++) {
        for (j = 1; j <= np; j++) {
            k = W[i] SUBSEP P[j]
            if (bad[k] == "")
                continue
            if (!flagged)
                print "\nFLAGGED runs (errors):"
            flagged = 1
            printf "  %s %s:%s\n", W[i], P[j], bad[k]
        }
    }
    if (noisy != "")
        printf "\nNOISY runs (other processes used more than %d%% of the CPUs):\n%s", noise, noisy

    print ""
    print "req/s, p50, p99: median of the runs. bg%: most CPU used by other processes in a run."
    print "chappe vs best: chappe / best of nginx and HAProxy (req/s: >1 is better; latency and"
    print "KiB: <1 is better). conn/req: one request per TLS connection (Connection: close), so"
    if (resume == 1)
        print "req/s = new connections/s; wrk resumed TLS sessions where the proxy allowed it."
    else
        print "req/s = full TLS handshakes/s (no session resumption, as from a new federation peer)."
}
