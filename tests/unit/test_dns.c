/* test_dns.c -- unit tests for dns.c: c-ares on libuv against real dnsmasq servers on loopback
 * ports, the cache, and the message walker and RFC 2782 ordering on their own. */
/* SPDX-License-Identifier: ISC */

/* Short timeouts so that a dead server is reported in 0.25 s + 0.5 s; a small cache to evict. */
#define DNS_TIMEOUT_MS 250
#define DNS_CACHE_MAX  8
#include "../../src/dns.c"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* ------------------------------------------------------------------------------------------ */
/* Fixtures: two dnsmasq processes on free loopback ports, started once, killed at the end.   */

#define DNSMASQ "/usr/sbin/dnsmasq"

struct server {
    pid_t guard; /* the guard process, see guard_main */
    int hold;    /* write end of the guard's pipe: closing it stops dnsmasq */
    int port;
    char log[PATH_MAX];
};

static char dir[64];        /* /tmp/chappe-dns-test-XXXXXX */
static struct server plain; /* local records under test., --local-ttl=300 */
static struct server auth;  /* authoritative for auth.test: negative answers carry an SOA */
static int dead_port;       /* nothing listens there */

/* A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both). */
static int free_port(void)
{
    for (int tries = 0; tries < 50; tries++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        int t = socket(AF_INET, SOCK_STREAM, 0);
        int port = -1;
        if (u >= 0 && t >= 0 && bind(u, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
            getsockname(u, (struct sockaddr *)&sa, &len) == 0 &&
            bind(t, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            port = ntohs(sa.sin_port);
        if (u >= 0)
            close(u);
        if (t >= 0)
            close(t);
        if (port > 0)
            return port;
    }
    return -1;
}

/* A query for probe.<zone> type A, to see whether a server answers at all. */
static bool answers(int port, const char *zone)
{
    unsigned char q[512] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    size_t n = 12;
    char name[128];
    snprintf(name, sizeof(name), "probe.%s", zone);
    for (char *label = strtok(name, "."); label; label = strtok(NULL, ".")) {
        q[n++] = (unsigned char)strlen(label);
        memcpy(q + n, label, strlen(label));
        n += strlen(label);
    }
    q[n++] = 0;
    q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = false;
    if (s >= 0 && sendto(s, q, n, 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)n) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        unsigned char r[512];
        ok =
            poll(&p, 1, 100) == 1 && recv(s, r, sizeof(r), 0) >= 12 && r[0] == 0x12 && r[1] == 0x34;
    }
    if (s >= 0)
        close(s);
    return ok;
}

/*
 * dnsmasq clears PR_SET_PDEATHSIG when it changes credentials, so a small guard
 * process stands between this test and dnsmasq: it keeps dnsmasq's PID and,
 * when its pipe from the test reaches EOF (the teardown closed it, or the test
 * died), kills dnsmasq by that PID and reaps it. It also exits when dnsmasq does.
 */
static void guard_main(int rfd, const char *const *argv)
{
    for (int fd = 3; fd < 1024; fd++)
        if (fd != rfd)
            close(fd); /* the other guard's pipe, the test's files */
    pid_t pid = fork();
    if (pid < 0)
        _exit(127);
    if (pid == 0) {
        close(rfd);
        execv(DNSMASQ, (char *const *)argv);
        _exit(127);
    }
    for (;;) {
        struct pollfd p = {.fd = rfd, .events = POLLIN};
        int rc = poll(&p, 1, 100);
        if (waitpid(pid, NULL, WNOHANG) == pid)
            _exit(1);
        if (rc > 0 || (rc < 0 && errno != EINTR))
            break; /* nothing is ever written: readable means EOF */
    }
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            _exit(0);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    _exit(0);
}

static int start_dnsmasq(struct server *srv, const char *name, const char *zone,
                         const char *const *records)
{
    char port[32], logarg[PATH_MAX + 32];
    srv->port = free_port();
    if (srv->port < 0)
        return -1;
    snprintf(srv->log, sizeof(srv->log), "%s/%s.log", dir, name);
    snprintf(port, sizeof(port), "--port=%d", srv->port);
    snprintf(logarg, sizeof(logarg), "--log-facility=%s", srv->log);
    const char *argv[64] = {DNSMASQ,      "--keep-in-foreground", "--no-resolv",
                            "--no-hosts", "--bind-interfaces",    "--listen-address=127.0.0.1",
                            port,         "--pid-file=",          "--log-queries",
                            logarg,       "--conf-file=/dev/null"};
    size_t n = 11;
    if (geteuid() == 0)
        argv[n++] = "--user=root"; /* else dnsmasq cannot drop to its own user */
    for (; *records && n < ARRAY_LEN(argv) - 1; records++)
        argv[n++] = *records;
    argv[n] = NULL;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    srv->guard = fork();
    if (srv->guard == 0)
        guard_main(fds[0], argv);
    close(fds[0]);
    srv->hold = fds[1];
    if (srv->guard < 0) {
        srv->guard = 0;
        return -1;
    }
    for (int i = 0; i < 100; i++) { /* up to ~10 s */
        if (answers(srv->port, zone))
            return 0;
        if (waitpid(srv->guard, NULL, WNOHANG) == srv->guard) {
            srv->guard = 0; /* dnsmasq exited: its complaint is on stderr */
            return -1;
        }
        usleep(i < 10 ? 10000 : 100000);
    }
    return -1;
}

static void stop_dnsmasq(struct server *srv)
{
    if (srv->hold > 0)
        close(srv->hold); /* the guard kills dnsmasq and exits */
    srv->hold = 0;
    if (srv->guard > 0) {
        int i = 0;
        while (i++ < 250 && waitpid(srv->guard, NULL, WNOHANG) == 0)
            usleep(20000);
        if (i > 250) {
            kill(srv->guard, SIGKILL);
            waitpid(srv->guard, NULL, 0);
        }
    }
    srv->guard = 0;
    unlink(srv->log);
}

static const char *const plain_records[] = {
    "--local=/test/", /* unknown names under test. are NXDOMAIN, without an SOA */
    "--local-ttl=300",
    "--host-record=a.test,10.0.0.1",
    "--host-record=v6.test,fd00::6",
    "--host-record=b.test,10.0.0.2,fd00::2",
    "--host-record=b.test,10.0.0.3,fd00::3",
    "--host-record=c.test,10.0.0.4",
    "--host-record=d.test,10.0.0.5",
    "--host-record=z.test,10.0.0.6,0", /* TTL 0 */
    "--host-record=cancel.test,10.0.0.7",
    "--host-record=foo,10.0.0.9", /* a single label */
    "--srv-host=_x._tcp,foo,8448",
    "--txt-record=txt.test,hello",
    "--address=/w.test/10.0.0.8", /* any name under w.test */
    "--srv-host=_matrix-fed._tcp.s.test,Tgt1.S.Test,8448,10,60",
    "--srv-host=_matrix-fed._tcp.s.test,tgt2.s.test,8449,10,40",
    "--srv-host=_matrix-fed._tcp.s.test,tgt3.s.test,8450,20,0",
    "--srv-host=_matrix-fed._tcp.s.test,tgt4.s.test,443,5,0",
    "--srv-host=_matrix-fed._tcp.dot.test", /* target "." */
    NULL,
};

static char auth_server[64];
static const char *const auth_records[] = {
    auth_server, /* --auth-server=ns.auth.test,127.0.0.1 */
    "--auth-zone=auth.test",
    "--auth-ttl=77",
    "--host-record=h.auth.test,10.1.1.1",
    "--srv-host=_matrix-fed._tcp.auth.test,h.auth.test,8448,1,1",
    NULL,
};

static int group_setup(void **state)
{
    (void)state;
    if (access(DNSMASQ, X_OK) != 0) {
        fprintf(stderr, "test_dns: %s missing (apt-get install dnsmasq)\n", DNSMASQ);
        return -1;
    }
    snprintf(dir, sizeof(dir), "/tmp/chappe-dns-test-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(auth_server, sizeof(auth_server), "--auth-server=ns.auth.test,127.0.0.1");
    if (start_dnsmasq(&plain, "plain", "test", plain_records) < 0 ||
        start_dnsmasq(&auth, "auth", "auth.test", auth_records) < 0) {
        fprintf(stderr, "test_dns: dnsmasq did not start\n");
        return -1;
    }
    dead_port = free_port();
    return dead_port > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    stop_dnsmasq(&plain);
    stop_dnsmasq(&auth);
    rmdir(dir);
    return 0;
}

/*
 * The logs are shared by every test: a test takes a mark (the log's size) first and counts
 * only what was written after it. dnsmasq writes a query's line before it answers.
 */
static long log_mark(const struct server *srv)
{
    struct stat st;
    assert_int_equal(stat(srv->log, &st), 0);
    return (long)st.st_size;
}

/* How many lines after mark contain needle. */
static int log_count(const struct server *srv, long mark, const char *needle)
{
    FILE *f = fopen(srv->log, "r");
    assert_non_null(f);
    assert_int_equal(fseek(f, mark, SEEK_SET), 0);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* A loop with a resolver, and callbacks that record what they got.                           */

struct call;

struct ctx {
    uv_loop_t loop;
    uv_timer_t guard; /* stops uv_run if an answer never comes */
    struct dns *dns;
    int calls;          /* callbacks so far */
    int want;           /* uv_stop once calls reaches this */
    bool in_call;       /* inside dns_lookup_*: a callback now would be a bug */
    bool free_dns;      /* the next callback calls dns_free */
    struct call *again; /* the next callback looks its name up again into this */
};

struct call {
    struct ctx *c;
    int n; /* times this callback ran */
    struct dns_result r;
};

static void on_result(void *ud, const struct dns_result *r)
{
    struct call *k = ud;
    struct ctx *c = k->c;
    assert_false(c->in_call);
    k->n++;
    k->r = *r;
    c->calls++;
    if (c->again) {
        struct call *k2 = c->again;
        c->again = NULL;
        memset(k2, 0, sizeof(*k2));
        k2->c = c;
        c->in_call = true;
        assert_non_null(dns_lookup_addr(c->dns, "a.test", on_result, k2));
        c->in_call = false;
    }
    if (c->free_dns) {
        c->free_dns = false;
        dns_free(c->dns);
        c->dns = NULL;
    }
    if (c->calls >= c->want)
        uv_stop(&c->loop);
}

static void on_guard(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* A resolver using the servers given (NULL: /etc/resolv.conf; then it must not be queried). */
static struct ctx *ctx_new(const char *const *servers, size_t nservers)
{
    struct ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    assert_int_equal(uv_timer_init(&c->loop, &c->guard), 0);
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.dns_servers = (char **)servers;
    cfg.ndns_servers = nservers;
    struct buf err = BUF_INIT;
    int rc = dns_new(&c->loop, &cfg, &c->dns, &err);
    if (rc != 0)
        fprintf(stderr, "dns_new: %.*s\n", (int)err.len, buf_data(&err));
    assert_int_equal(rc, 0);
    assert_int_equal(err.len, 0);
    buf_free(&err);
    return c;
}

static const char *server_of(const struct server *srv)
{
    static char s[2][32];
    static int i;
    char *p = s[i++ % 2];
    snprintf(p, sizeof(s[0]), "127.0.0.1:%d", srv->port);
    return p;
}

static struct ctx *ctx_on(const struct server *srv)
{
    const char *servers[] = {server_of(srv)};
    return ctx_new(servers, 1);
}

/* Run the loop until want more callbacks have run, or max_ms has passed. */
static void run_for(struct ctx *c, int more, uint64_t max_ms)
{
    c->want = c->calls + more;
    uv_timer_start(&c->guard, on_guard, max_ms, 0);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&c->guard);
}

static void run_until(struct ctx *c, int more)
{
    int want = c->calls + more;
    run_for(c, more, 5000);
    assert_int_equal(c->calls, want);
}

/* Free the resolver, let the loop close every handle, and check nothing is left open. */
static void ctx_free(struct ctx *c)
{
    dns_free(c->dns);
    uv_close((uv_handle_t *)&c->guard, NULL);
    for (int i = 0; i < 100 && uv_loop_alive(&c->loop); i++)
        uv_run(&c->loop, UV_RUN_NOWAIT);
    assert_false(uv_loop_alive(&c->loop));
    assert_int_equal(uv_loop_close(&c->loop), 0);
    free(c);
}

static struct dns_query *addr(struct ctx *c, const char *host, struct call *k)
{
    memset(k, 0, sizeof(*k));
    k->c = c;
    c->in_call = true;
    struct dns_query *q = dns_lookup_addr(c->dns, host, on_result, k);
    c->in_call = false;
    assert_non_null(q);
    return q;
}

static struct dns_query *srv(struct ctx *c, const char *name, struct call *k)
{
    memset(k, 0, sizeof(*k));
    k->c = c;
    c->in_call = true;
    struct dns_query *q = dns_lookup_srv(c->dns, name, on_result, k);
    c->in_call = false;
    assert_non_null(q);
    return q;
}

static void assert_v4(const struct sockaddr_storage *ss, const char *want)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    char got[INET_ADDRSTRLEN];
    assert_int_equal(in->sin_family, AF_INET);
    assert_int_equal(in->sin_port, 0);
    assert_non_null(inet_ntop(AF_INET, &in->sin_addr, got, sizeof(got)));
    assert_string_equal(got, want);
}

static void assert_v6(const struct sockaddr_storage *ss, const char *want)
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    char got[INET6_ADDRSTRLEN];
    assert_int_equal(in6->sin6_family, AF_INET6);
    assert_int_equal(in6->sin6_port, 0);
    assert_non_null(inet_ntop(AF_INET6, &in6->sin6_addr, got, sizeof(got)));
    assert_string_equal(got, want);
}

/* ------------------------------------------------------------------------------------------ */
/* A and AAAA                                                                                 */

static void test_addr_a(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k;
    addr(c, "a.test", &k);
    run_until(c, 1);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.r.status, 0);
    assert_null(k.r.why);
    assert_int_equal(k.r.naddrs, 1);
    assert_v4(&k.r.addrs[0], "10.0.0.1");
    assert_int_equal(k.r.nsrvs, 0);
    assert_int_equal(k.r.ttl_s, 300);
    assert_false(k.r.from_cache);
    assert_false(k.r.from_hosts);
    /* AF_UNSPEC: one A and one AAAA query went out, nothing else. */
    assert_int_equal(log_count(&plain, mark, "query[A] a.test from"), 1);
    assert_int_equal(log_count(&plain, mark, "query[AAAA] a.test from"), 1);
    ctx_free(c);
}

static void test_addr_aaaa(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k;
    addr(c, "V6.Test", &k); /* case does not matter */
    run_until(c, 1);
    assert_int_equal(k.r.status, 0);
    assert_int_equal(k.r.naddrs, 1);
    assert_v6(&k.r.addrs[0], "fd00::6");
    assert_int_equal(k.r.ttl_s, 300);
    ctx_free(c);
}

/* Every AAAA answer comes before every A answer. */
static void test_addr_both(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k;
    addr(c, "b.test", &k);
    run_until(c, 1);
    assert_int_equal(k.r.status, 0);
    assert_int_equal(k.r.naddrs, 4);
    char got[4][INET6_ADDRSTRLEN];
    for (size_t i = 0; i < 4; i++) {
        const struct sockaddr_storage *ss = &k.r.addrs[i];
        assert_int_equal(ss->ss_family, i < 2 ? AF_INET6 : AF_INET);
        const void *a = i < 2 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
        assert_non_null(inet_ntop(ss->ss_family, a, got[i], sizeof(got[i])));
    }
    /* dnsmasq's order within a family is its own: compare as sets. */
    assert_true((!strcmp(got[0], "fd00::2") && !strcmp(got[1], "fd00::3")) ||
                (!strcmp(got[0], "fd00::3") && !strcmp(got[1], "fd00::2")));
    assert_true((!strcmp(got[2], "10.0.0.2") && !strcmp(got[3], "10.0.0.3")) ||
                (!strcmp(got[2], "10.0.0.3") && !strcmp(got[3], "10.0.0.2")));
    ctx_free(c);
}

/* NXDOMAIN is CH_ENOENT, cached for 60 s (c-ares does not show the A/AAAA authority section). */
static void test_addr_nxdomain_cached(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k1, k2;
    addr(c, "nx.test", &k1);
    run_until(c, 1);
    assert_int_equal(k1.r.status, CH_ENOENT);
    assert_non_null(k1.r.why);
    assert_int_equal(k1.r.naddrs, 0);
    assert_int_equal(k1.r.ttl_s, 60);
    assert_false(k1.r.from_cache);

    addr(c, "nx.test", &k2);
    run_until(c, 1);
    assert_int_equal(k2.r.status, CH_ENOENT);
    assert_string_equal(k2.r.why, k1.r.why);
    assert_true(k2.r.from_cache);
    assert_true(k2.r.ttl_s > 0 && k2.r.ttl_s <= 60);
    assert_int_equal(log_count(&plain, mark, "query[A] nx.test from"), 1);
    ctx_free(c);
}

/* A name with neither A nor AAAA records (NODATA for both) is CH_ENOENT too. */
static void test_addr_nodata(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k;
    addr(c, "txt.test", &k);
    run_until(c, 1);
    assert_int_equal(k.r.status, CH_ENOENT);
    assert_int_equal(k.r.naddrs, 0);
    assert_int_equal(k.r.ttl_s, 60);
    ctx_free(c);
}

/* localhost comes from /etc/hosts (or RFC 6761), not from DNS, and is not cached. */
static void test_addr_localhost(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k1, k2;
    addr(c, "localhost", &k1);
    run_until(c, 1);
    assert_int_equal(k1.r.status, 0);
    assert_true(k1.r.from_hosts);
    assert_false(k1.r.from_cache);
    assert_int_equal(k1.r.ttl_s, 0);
    assert_true(k1.r.naddrs >= 1);
    for (size_t i = 0; i < k1.r.naddrs; i++) {
        const struct sockaddr_storage *ss = &k1.r.addrs[i];
        if (ss->ss_family == AF_INET)
            assert_int_equal(ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24, 127);
        else
            assert_true(IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr));
    }
    addr(c, "localhost", &k2);
    run_until(c, 1);
    assert_int_equal(k2.r.status, 0);
    assert_true(k2.r.from_hosts);
    assert_false(k2.r.from_cache);
    assert_int_equal(log_count(&plain, mark, "localhost"), 0);
    ctx_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* SRV                                                                                        */

static void test_srv(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k;
    srv(c, "_matrix-fed._tcp.s.test", &k);
    run_until(c, 1);
    assert_int_equal(k.r.status, 0);
    assert_null(k.r.why);
    assert_int_equal(k.r.naddrs, 0);
    assert_int_equal(k.r.nsrvs, 4);
    assert_int_equal(k.r.ttl_s, 300);
    /* Priority 5 first, priority 20 last, the two of priority 10 between in either order. */
    assert_string_equal(k.r.srvs[0].target, "tgt4.s.test");
    assert_int_equal(k.r.srvs[0].port, 443);
    assert_int_equal(k.r.srvs[0].priority, 5);
    assert_int_equal(k.r.srvs[0].weight, 0);
    assert_string_equal(k.r.srvs[3].target, "tgt3.s.test");
    assert_int_equal(k.r.srvs[3].port, 8450);
    assert_int_equal(k.r.srvs[3].priority, 20);
    const struct dns_srv *t1 = &k.r.srvs[1], *t2 = &k.r.srvs[2];
    if (t1->port != 8448) {
        const struct dns_srv *tmp = t1;
        t1 = t2;
        t2 = tmp;
    }
    assert_string_equal(t1->target, "tgt1.s.test"); /* lowercased */
    assert_int_equal(t1->port, 8448);
    assert_int_equal(t1->priority, 10);
    assert_int_equal(t1->weight, 60);
    assert_string_equal(t2->target, "tgt2.s.test");
    assert_int_equal(t2->port, 8449);
    assert_int_equal(t2->priority, 10);
    assert_int_equal(t2->weight, 40);
    assert_int_equal(log_count(&plain, mark, "query[SRV] _matrix-fed._tcp.s.test from"), 1);
    ctx_free(c);
}

/* A lone SRV record with target "." means the service is not available (RFC 2782). */
static void test_srv_dot(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k;
    srv(c, "_matrix-fed._tcp.dot.test", &k);
    run_until(c, 1);
    assert_int_equal(k.r.status, CH_ENOENT);
    assert_non_null(k.r.why);
    assert_int_equal(k.r.nsrvs, 0);
    assert_int_equal(k.r.ttl_s, 300); /* the record's TTL */
    ctx_free(c);
}

/* NXDOMAIN without an SOA: CH_ENOENT for 60 s. */
static void test_srv_nxdomain(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k;
    srv(c, "_matrix-fed._tcp.nx.test", &k);
    run_until(c, 1);
    assert_int_equal(k.r.status, CH_ENOENT);
    assert_int_equal(k.r.ttl_s, 60);
    ctx_free(c);
}

/* From an authoritative server: TTLs of the records, and of the SOA for negative answers. */
static void test_srv_auth_ttls(void **state)
{
    (void)state;
    long mark = log_mark(&auth);
    struct ctx *c = ctx_on(&auth);
    struct call ok, nx, nodata, again;
    srv(c, "_matrix-fed._tcp.auth.test", &ok);
    srv(c, "_matrix-fed._tcp.nx.auth.test", &nx);
    srv(c, "h.auth.test", &nodata);
    run_until(c, 3);
    assert_int_equal(ok.r.status, 0);
    assert_int_equal(ok.r.nsrvs, 1);
    assert_string_equal(ok.r.srvs[0].target, "h.auth.test");
    assert_int_equal(ok.r.srvs[0].port, 8448);
    assert_int_equal(ok.r.ttl_s, 77);
    assert_int_equal(nx.r.status, CH_ENOENT);
    assert_int_equal(nx.r.ttl_s, 77); /* min(SOA TTL, SOA MINIMUM), not the 60 s default */
    assert_int_equal(nodata.r.status, CH_ENOENT);
    assert_int_equal(nodata.r.ttl_s, 77);

    srv(c, "_matrix-fed._tcp.nx.auth.test", &again);
    run_until(c, 1);
    assert_int_equal(again.r.status, CH_ENOENT);
    assert_true(again.r.from_cache);
    assert_int_equal(log_count(&auth, mark, "[SRV] _matrix-fed._tcp.nx.auth.test from"), 1);
    ctx_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* The cache                                                                                  */

static void test_cache_hit(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k1, k2, s1, s2;
    addr(c, "c.test", &k1);
    srv(c, "_matrix-fed._tcp.s.test", &s1);
    run_until(c, 2);
    assert_int_equal(k1.r.status, 0);
    assert_false(k1.r.from_cache);

    addr(c, "c.test", &k2);
    srv(c, "_matrix-fed._tcp.s.test", &s2);
    assert_int_equal(k2.n, 0); /* delivered from the loop, not from the call */
    run_until(c, 2);
    assert_int_equal(k2.n, 1);
    assert_int_equal(k2.r.status, 0);
    assert_true(k2.r.from_cache);
    assert_false(k2.r.from_hosts);
    assert_int_equal(k2.r.naddrs, 1);
    assert_v4(&k2.r.addrs[0], "10.0.0.4");
    assert_true(k2.r.ttl_s > 290 && k2.r.ttl_s <= 300); /* what is left of it */
    assert_true(s2.r.from_cache);
    assert_int_equal(s2.r.nsrvs, 4);
    assert_string_equal(s2.r.srvs[0].target, "tgt4.s.test");
    assert_int_equal(log_count(&plain, mark, "query[A] c.test from"), 1);
    assert_int_equal(log_count(&plain, mark, "query[AAAA] c.test from"), 1);

    /* dns_cache_clear forgets it. */
    struct call k3;
    dns_cache_clear(c->dns);
    addr(c, "c.test", &k3);
    run_until(c, 1);
    assert_false(k3.r.from_cache);
    assert_int_equal(log_count(&plain, mark, "query[A] c.test from"), 2);
    ctx_free(c);
}

static void test_ttl_zero_not_cached(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k1, k2;
    addr(c, "z.test", &k1);
    run_until(c, 1);
    assert_int_equal(k1.r.status, 0);
    assert_int_equal(k1.r.ttl_s, 0);
    assert_v4(&k1.r.addrs[0], "10.0.0.6");
    addr(c, "z.test", &k2);
    run_until(c, 1);
    assert_int_equal(k2.r.status, 0);
    assert_false(k2.r.from_cache);
    assert_int_equal(log_count(&plain, mark, "query[A] z.test from"), 2);
    ctx_free(c);
}

/* Lookups of one name while its query is in flight share that query. */
static void test_concurrent_share_query(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k[3];
    for (int i = 0; i < 3; i++)
        addr(c, "d.test", &k[i]);
    run_until(c, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(k[i].n, 1);
        assert_int_equal(k[i].r.status, 0);
        assert_false(k[i].r.from_cache);
        assert_v4(&k[i].r.addrs[0], "10.0.0.5");
    }
    assert_int_equal(log_count(&plain, mark, "query[A] d.test from"), 1);
    ctx_free(c);
}

/* Past DNS_CACHE_MAX entries the expired ones go first, then the oldest. */
static void test_cache_eviction(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call k;
    char name[32];
    for (int i = 1; i <= DNS_CACHE_MAX; i++) {
        snprintf(name, sizeof(name), "n%d.w.test", i);
        addr(c, name, &k);
        run_until(c, 1);
        assert_int_equal(k.r.status, 0);
    }
    assert_int_equal(c->dns->ncached, DNS_CACHE_MAX);
    /* Age n5 out by hand: the next insertion drops it, not the oldest (n1). */
    struct dns_entry *e5 = cache_find(c->dns, KIND_ADDR, "n5.w.test");
    assert_non_null(e5);
    e5->expires_ms = 0;
    addr(c, "n9.w.test", &k);
    run_until(c, 1);
    assert_int_equal(c->dns->ncached, DNS_CACHE_MAX);
    assert_null(cache_find(c->dns, KIND_ADDR, "n5.w.test"));
    assert_non_null(cache_find(c->dns, KIND_ADDR, "n1.w.test"));
    /* Nothing expired now: n10 pushes out the oldest, n1. */
    addr(c, "n10.w.test", &k);
    run_until(c, 1);
    assert_null(cache_find(c->dns, KIND_ADDR, "n1.w.test"));
    addr(c, "n2.w.test", &k);
    run_until(c, 1);
    assert_true(k.r.from_cache);
    addr(c, "n1.w.test", &k);
    run_until(c, 1);
    assert_false(k.r.from_cache);
    assert_int_equal(log_count(&plain, mark, "query[A] n1.w.test from"), 2);
    assert_int_equal(log_count(&plain, mark, "query[A] n2.w.test from"), 1);
    ctx_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Failures                                                                                   */

/* Nothing listens on the port: a quick CH_EIO (ICMP port unreachable), cached for 5 s. */
static void test_dead_server(void **state)
{
    (void)state;
    char server[32];
    snprintf(server, sizeof(server), "127.0.0.1:%d", dead_port);
    const char *servers[] = {server};
    struct ctx *c = ctx_new(servers, 1);
    struct call k1, k2;
    uint64_t t0 = uv_hrtime();
    addr(c, "a.test", &k1);
    run_until(c, 1);
    assert_true(uv_hrtime() - t0 < 3000000000ULL);
    assert_true(k1.r.status == CH_EIO || k1.r.status == CH_ETIMEOUT);
    assert_non_null(k1.r.why);
    assert_int_equal(k1.r.ttl_s, 5);
    srv(c, "_matrix-fed._tcp.s.test", &k2);
    run_until(c, 1);
    assert_true(k2.r.status == CH_EIO || k2.r.status == CH_ETIMEOUT);

    struct call k3;
    addr(c, "a.test", &k3);
    run_until(c, 1);
    assert_int_equal(k3.r.status, k1.r.status);
    assert_true(k3.r.from_cache);
    ctx_free(c);
}

/* A server that never answers (a bound socket nobody reads): CH_ETIMEOUT after the tries. */
static void test_timeout(void **state)
{
    (void)state;
    int hole = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_true(hole >= 0);
    assert_int_equal(bind(hole, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(hole, (struct sockaddr *)&sa, &len), 0);
    char server[32];
    snprintf(server, sizeof(server), "127.0.0.1:%d", ntohs(sa.sin_port));
    const char *servers[] = {server};
    struct ctx *c = ctx_new(servers, 1);
    struct call k;
    uint64_t t0 = uv_hrtime();
    srv(c, "_matrix-fed._tcp.s.test", &k);
    run_until(c, 1);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(k.r.status, CH_ETIMEOUT);
    assert_non_null(k.r.why);
    assert_int_equal(k.r.ttl_s, 5);
    /* Two tries: 250 ms, then 500 ms. */
    assert_true(ms >= 700 && ms < 3000);
    ctx_free(c);
    close(hole);
}

static void test_bad_servers(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    const char *bad[] = {"not-an-address"};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.dns_servers = (char **)bad;
    cfg.ndns_servers = 1;
    struct buf err = BUF_INIT;
    struct dns *d = (struct dns *)&loop; /* must be reset */
    assert_int_equal(dns_new(&loop, &cfg, &d, &err), CH_EINVAL);
    assert_null(d);
    assert_non_null(memmem(buf_data(&err), err.len, "not-an-address", 14));
    buf_free(&err);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* IPv6 with a port, as config.c writes it, and no server at all (resolv.conf) are fine. */
    const char *v6[] = {"[::1]:5353", "127.0.0.1:53"};
    struct ctx *c = ctx_new(v6, 2);
    ctx_free(c);
    c = ctx_new(NULL, 0);
    ctx_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Cancel and free                                                                            */

static void test_cancel(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    struct ctx *c = ctx_on(&plain);
    struct call gone, kept, hit, shared_gone, shared_kept;
    /* A query in flight, cancelled: its answer still fills the cache. */
    dns_cancel(addr(c, "cancel.test", &gone));
    addr(c, "a.test", &kept);
    run_until(c, 1);
    run_for(c, 1, 200);
    assert_int_equal(gone.n, 0);
    assert_int_equal(kept.n, 1);
    /* A cache hit cancelled before the loop delivers it. */
    dns_cancel(addr(c, "a.test", &hit));
    run_for(c, 1, 100);
    assert_int_equal(hit.n, 0);
    /* One of two lookups sharing a query. */
    dns_cancel(addr(c, "v6.test", &shared_gone));
    addr(c, "v6.test", &shared_kept);
    run_until(c, 1);
    run_for(c, 1, 100);
    assert_int_equal(shared_gone.n, 0);
    assert_int_equal(shared_kept.n, 1);
    assert_int_equal(shared_kept.r.status, 0);
    assert_int_equal(log_count(&plain, mark, "query[A] v6.test from"), 1);
    ctx_free(c);
}

/* dns_free with queries in flight and cache hits queued: no callback, nothing leaks. */
static void test_free_pending(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k1, k2, k3;
    addr(c, "a.test", &k1);
    run_until(c, 1);
    addr(c, "a.test", &k1); /* a cache hit, queued */
    addr(c, "b.test", &k2); /* in flight */
    srv(c, "_matrix-fed._tcp.s.test", &k3);
    ctx_free(c); /* dns_free, then the loop runs to close */
    assert_int_equal(k1.n, 0);
    assert_int_equal(k2.n, 0);
    assert_int_equal(k3.n, 0);
}

/* A callback may free the resolver: the other answers of that batch are dropped. */
static void test_free_from_callback(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k[3];
    for (int i = 0; i < 3; i++)
        addr(c, "d.test", &k[i]);
    c->free_dns = true;
    run_for(c, 1, 5000);
    assert_int_equal(k[0].n + k[1].n + k[2].n, 1);
    assert_null(c->dns);
    ctx_free(c); /* dns_free(NULL) is a no-op */
}

/* A callback may look up again; a cache hit then comes on a later turn of the loop. */
static void test_lookup_from_callback(void **state)
{
    (void)state;
    struct ctx *c = ctx_on(&plain);
    struct call k1, k2;
    c->again = &k2;
    addr(c, "a.test", &k1);
    run_until(c, 2);
    assert_int_equal(k1.n, 1);
    assert_false(k1.r.from_cache);
    assert_int_equal(k2.n, 1);
    assert_true(k2.r.from_cache);
    assert_v4(&k2.r.addrs[0], "10.0.0.1");
    ctx_free(c);
}

/* No search domain is ever appended, whatever LOCALDOMAIN or resolv.conf say. */
static void test_no_search_domains(void **state)
{
    (void)state;
    long mark = log_mark(&plain);
    setenv("LOCALDOMAIN", "search.test", 1);
    struct ctx *c = ctx_on(&plain);
    unsetenv("LOCALDOMAIN");
    struct call k, s;
    addr(c, "foo", &k);
    srv(c, "_x._tcp", &s);
    run_until(c, 2);
    assert_int_equal(k.r.status, 0);
    assert_v4(&k.r.addrs[0], "10.0.0.9");
    assert_int_equal(s.r.status, 0);
    assert_string_equal(s.r.srvs[0].target, "foo");
    assert_int_equal(log_count(&plain, mark, "query[A] foo from"), 1);
    assert_int_equal(log_count(&plain, mark, "query[SRV] _x._tcp from"), 1);
    assert_int_equal(log_count(&plain, mark, "search.test"), 0);
    ctx_free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* The message walker, on messages built by hand                                              */

struct msg {
    unsigned char b[512];
    size_t n;
};

static void put(struct msg *m, const void *p, size_t n)
{
    assert_true(m->n + n <= sizeof(m->b));
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

static void put16(struct msg *m, unsigned v)
{
    unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    put(m, b, 2);
}

static void put32(struct msg *m, uint32_t v)
{
    put16(m, v >> 16);
    put16(m, v & 0xffff);
}

/* Header and one question "x.test" of type t; the counts are patched by the caller. */
static void msg_start(struct msg *m, unsigned an, unsigned ns, unsigned type)
{
    m->n = 0;
    put16(m, 0x1234);
    put16(m, 0x8180);
    put16(m, 1);
    put16(m, an);
    put16(m, ns);
    put16(m, 0);
    put(m, "\1x\4test\0", 8);
    put16(m, type);
    put16(m, DNS_CLASS_IN);
}

/* A record whose owner is a pointer to the question name (offset 12). */
static void rr_head(struct msg *m, unsigned type, uint32_t ttl, unsigned rdlen)
{
    put16(m, 0xC00C);
    put16(m, type);
    put16(m, DNS_CLASS_IN);
    put32(m, ttl);
    put16(m, rdlen);
}

static void rr_srv(struct msg *m, uint32_t ttl)
{
    rr_head(m, DNS_TYPE_SRV, ttl, 6 + 2);
    put16(m, 10);
    put16(m, 5);
    put16(m, 8448);
    put16(m, 0xC00C); /* the target, compressed */
}

/* An SOA whose names point into the question; returns the offset of its RDLENGTH. */
static size_t rr_soa(struct msg *m, uint32_t ttl, uint32_t minimum)
{
    rr_head(m, DNS_TYPE_SOA, ttl, 2 + 5 + 20);
    size_t rdlen_at = m->n - 2;
    put16(m, 0xC00C);          /* MNAME: x.test */
    put(m, "\2hm\xC0\x0E", 5); /* RNAME: hm.test, "test" by pointer */
    put32(m, 1);               /* SERIAL */
    put32(m, 7200);            /* REFRESH */
    put32(m, 3600);            /* RETRY */
    put32(m, 86400);           /* EXPIRE */
    put32(m, minimum);         /* MINIMUM */
    return rdlen_at;
}

static void test_walk_answer_ttls(void **state)
{
    (void)state;
    struct msg m;
    struct msg_ttls t;
    msg_start(&m, 3, 0, DNS_TYPE_SRV);
    rr_srv(&m, 120);
    rr_head(&m, DNS_TYPE_CNAME, 30, 2); /* a CNAME in the chain bounds the answer too */
    put16(&m, 0xC00C);
    rr_srv(&m, 90);
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), 0);
    assert_int_equal(t.answer, 30);
    assert_int_equal(t.neg, UINT32_MAX);

    /* Records of other types do not count; a TTL with the top bit set is 0 (RFC 2181 8). */
    msg_start(&m, 2, 0, DNS_TYPE_SRV);
    rr_head(&m, 16 /* TXT */, 5, 2);
    put(&m, "\1a", 2);
    rr_srv(&m, 0x80000001u);
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), 0);
    assert_int_equal(t.answer, 0);
}

static void test_walk_negative_ttls(void **state)
{
    (void)state;
    struct msg m;
    struct msg_ttls t;
    /* min(SOA TTL, MINIMUM), both ways round (RFC 2308 section 5). */
    msg_start(&m, 0, 1, DNS_TYPE_SRV);
    rr_soa(&m, 500, 200);
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), 0);
    assert_int_equal(t.answer, UINT32_MAX);
    assert_int_equal(t.neg, 200);
    msg_start(&m, 0, 1, DNS_TYPE_SRV);
    rr_soa(&m, 100, 200);
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), 0);
    assert_int_equal(t.neg, 100);

    /* An SOA in the answer section is not a negative answer's. */
    msg_start(&m, 1, 0, DNS_TYPE_SRV);
    rr_soa(&m, 100, 200);
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), 0);
    assert_int_equal(t.neg, UINT32_MAX);

    /* Through srv_answer: the cap of one hour. */
    msg_start(&m, 0, 1, DNS_TYPE_SRV);
    size_t rdlen_at = rr_soa(&m, 86400, 86400);
    struct dns_entry e;
    memset(&e, 0, sizeof(e));
    srv_answer(&e, ARES_ENOTFOUND, m.b, (int)m.n);
    assert_int_equal(e.status, CH_ENOENT);
    assert_int_equal(e.ttl_s, 3600);
    /* An SOA RDATA too short for its fields makes the message malformed: 60 s then. */
    m.b[rdlen_at] = 0;
    m.b[rdlen_at + 1] = 5;
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), -1);
    memset(&e, 0, sizeof(e));
    srv_answer(&e, ARES_ENOTFOUND, m.b, (int)m.n);
    assert_int_equal(e.ttl_s, 60);
}

/* Every truncation of a valid message is refused, and nothing is read past the end (ASan). */
static void test_walk_truncated(void **state)
{
    (void)state;
    struct msg m;
    struct msg_ttls t;
    msg_start(&m, 1, 1, DNS_TYPE_SRV);
    rr_srv(&m, 120);
    rr_soa(&m, 100, 50);
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), 0);
    for (size_t len = 0; len < m.n; len++) {
        unsigned char *copy = malloc(len ? len : 1);
        memcpy(copy, m.b, len);
        assert_int_equal(walk_msg(copy, len, DNS_TYPE_SRV, &t), -1);
        free(copy);
    }
    assert_int_equal(walk_msg(NULL, 0, DNS_TYPE_SRV, &t), -1);
}

static void test_walk_bad_names(void **state)
{
    (void)state;
    struct msg m;
    struct msg_ttls t;
    /* Label types 01 and 10 (RFC 6891 section 5 retired them). */
    msg_start(&m, 0, 0, DNS_TYPE_SRV);
    m.b[12] = 0x41;
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), -1);
    m.b[12] = 0x81;
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), -1);
    /* A name of 128 one-byte labels never ends within the limit. */
    unsigned char big[12 + 128 * 2 + 1 + 4] = {0, 0, 0, 0, 0, 1};
    for (size_t i = 0; i < 128; i++) {
        big[12 + 2 * i] = 1;
        big[13 + 2 * i] = 'a';
    }
    assert_int_equal(walk_msg(big, sizeof(big), DNS_TYPE_SRV, &t), -1);
    /* More records announced than present. */
    msg_start(&m, 2, 0, DNS_TYPE_SRV);
    rr_srv(&m, 1);
    assert_int_equal(walk_msg(m.b, m.n, DNS_TYPE_SRV, &t), -1);
}

/* ------------------------------------------------------------------------------------------ */
/* RFC 2782 ordering                                                                          */

static struct dns_srv mk(const char *target, uint16_t prio, uint16_t weight)
{
    struct dns_srv s;
    memset(&s, 0, sizeof(s));
    snprintf(s.target, sizeof(s.target), "%s", target);
    s.priority = prio;
    s.weight = weight;
    return s;
}

static void test_srv_order_weights(void **state)
{
    (void)state;
    static struct dns d; /* only its generator is used */
    d.rng = 42;
    /* As stored: sorted by priority. */
    struct dns_srv in[] = {mk("d", 5, 0), mk("a", 10, 60), mk("b", 10, 40), mk("c", 20, 0)};
    struct dns_srv out[4];
    int a_first = 0;
    for (int i = 0; i < 10000; i++) {
        srv_order(&d, in, 4, out);
        assert_string_equal(out[0].target, "d");
        assert_string_equal(out[3].target, "c");
        assert_true(!strcmp(out[1].target, "a") || !strcmp(out[1].target, "b"));
        assert_true(strcmp(out[1].target, out[2].target) != 0);
        a_first += !strcmp(out[1].target, "a");
    }
    /* Weight 60 against 40: about 6000 of 10000 (the seed is fixed, so this is exact per run). */
    assert_true(a_first > 5700 && a_first < 6300);

    /* A weight-0 record beside a weighted one is picked first only when the draw is 0: ~1/101. */
    struct dns_srv z[] = {mk("zero", 1, 0), mk("heavy", 1, 100)};
    int zero_first = 0;
    for (int i = 0; i < 10000; i++) {
        srv_order(&d, z, 2, out);
        zero_first += !strcmp(out[0].target, "zero");
    }
    assert_true(zero_first > 40 && zero_first < 200);

    /* All weights 0: answer order. */
    struct dns_srv all0[] = {mk("x", 1, 0), mk("y", 1, 0), mk("w", 1, 0)};
    for (int i = 0; i < 100; i++) {
        srv_order(&d, all0, 3, out);
        assert_string_equal(out[0].target, "x");
        assert_string_equal(out[1].target, "y");
        assert_string_equal(out[2].target, "w");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_a),
        cmocka_unit_test(test_addr_aaaa),
        cmocka_unit_test(test_addr_both),
        cmocka_unit_test(test_addr_nxdomain_cached),
        cmocka_unit_test(test_addr_nodata),
        cmocka_unit_test(test_addr_localhost),
        cmocka_unit_test(test_srv),
        cmocka_unit_test(test_srv_dot),
        cmocka_unit_test(test_srv_nxdomain),
        cmocka_unit_test(test_srv_auth_ttls),
        cmocka_unit_test(test_cache_hit),
        cmocka_unit_test(test_ttl_zero_not_cached),
        cmocka_unit_test(test_concurrent_share_query),
        cmocka_unit_test(test_cache_eviction),
        cmocka_unit_test(test_dead_server),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_bad_servers),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_free_pending),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_lookup_from_callback),
        cmocka_unit_test(test_no_search_domains),
        cmocka_unit_test(test_walk_answer_ttls),
        cmocka_unit_test(test_walk_negative_ttls),
        cmocka_unit_test(test_walk_truncated),
        cmocka_unit_test(test_walk_bad_names),
        cmocka_unit_test(test_srv_order_weights),
    };
    return cmocka_run_group_tests_name("dns", tests, group_setup, group_teardown);
}
