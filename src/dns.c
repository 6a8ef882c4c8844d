/* dns.c -- asynchronous DNS: c-ares on a libuv loop, with a per-loop TTL cache. */
/* SPDX-License-Identifier: ISC */
#include <ares.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "chappe/config.h"
#include "chappe/dns.h"
#include "chappe/log.h"
#include "chappe/util.h"

/*
 * c-ares retry policy. Each try waits DNS_TIMEOUT_MS for the first server and
 * c-ares doubles the wait on every round over the server list, so with one
 * server a dead resolver is reported after 2 s + 4 s = 6 s: long enough for a
 * slow recursive resolver on a cold cache, short enough that a federation
 * request (outbound_connect_timeout_ms is 10 s by default) is not stuck on
 * DNS alone. The unit test lowers the timeout before including this file.
 */
#ifndef DNS_TIMEOUT_MS
#define DNS_TIMEOUT_MS 2000
#endif
#define DNS_TRIES 2

/* Cache bounds, per loop (see the comment above struct dns_entry). */
#ifndef DNS_CACHE_MAX
#define DNS_CACHE_MAX 4096
#endif
#define DNS_BUCKETS       1024
#define DNS_TTL_MAX_S     86400 /* positive answers are re-resolved at least daily */
#define DNS_NEG_TTL_S     60    /* NXDOMAIN/NODATA without an SOA to say otherwise */
#define DNS_NEG_TTL_MAX_S 3600  /* RFC 2308 section 5 suggests 1-3 h; we stay at 1 h */
#define DNS_ERR_TTL_S     5     /* timeouts and failures: do not hammer a dead server */

/* RFC 1035 section 3.2.2 / RFC 2782 values. */
#define DNS_CLASS_IN   1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_SOA   6
#define DNS_TYPE_SRV   33

enum dns_kind { KIND_ADDR = 0, KIND_SRV };

/* An intrusive doubly linked list; an unlinked node points at itself. */
struct dlink {
    struct dlink *prev, *next;
};

static void dl_init(struct dlink *l)
{
    l->prev = l->next = l;
}

static bool dl_empty(const struct dlink *head)
{
    return head->next == head;
}

static void dl_remove(struct dlink *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    dl_init(l);
}

static void dl_push_tail(struct dlink *head, struct dlink *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Unlink and return the first node of a non-empty list. */
static struct dlink *dl_pop_head(struct dlink *head)
{
    struct dlink *l = head->next;
    head->next = l->next;
    l->next->prev = head;
    dl_init(l);
    return l;
}

/* Move every node of from to the tail of to. */
static void dl_splice_tail(struct dlink *to, struct dlink *from)
{
    if (dl_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    dl_init(from);
}

/* An address as stored in the cache: big enough for both families, unlike sockaddr_storage. */
union dns_sa {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/*
 * One (kind, name): either pending (a c-ares query in flight, waiters queued)
 * or answered. Answered entries with a TTL stay in the hash table and on the
 * age list until they expire or are evicted. An entry is freed when its last
 * reference goes: the hash table, the c-ares query in flight, and every
 * dns_query pointing at it each hold one.
 */
struct dns_entry {
    struct dns_entry *hnext; /* hash chain */
    struct dlink age;        /* in dns->ages while cached, oldest first */
    struct dlink waiters;    /* dns_query.link, while pending */
    struct dns *d;
    unsigned refs;
    bool hashed;     /* in the hash table (pending or cached) */
    bool cached;     /* answered, on the age list, counted in ncached */
    bool pending;    /* the c-ares query has not answered yet */
    bool submitting; /* inside ares_getaddrinfo/ares_query: an answer now sent no packet */
    enum dns_kind kind;
    uint64_t expires_ms; /* uv_now() time, when cached */
    /* the answer */
    int status;
    const char *why;
    uint32_t ttl_s;
    bool from_hosts;
    union dns_sa *addrs; /* AAAA first, then A */
    size_t naddrs;
    struct dns_srv *srvs; /* sorted by priority, answer order within a priority */
    size_t nsrvs;
    char name[]; /* lowercased key, also the name queried */
};

struct dns_query {
    struct dlink link; /* in entry->waiters, dns->ready or dns->delivering */
    struct dns_entry *e;
    dns_cb cb;
    void *ud;
    bool from_cache;
};

/* A socket c-ares asked us to watch. */
struct dns_sock {
    uv_poll_t poll;
    struct dns_sock *next;
    struct dns *d;
    ares_socket_t fd;
};

struct dns {
    uv_loop_t *loop;
    ares_channel channel;
    uv_timer_t timer; /* ares_timeout(): retransmissions and timeouts */
    uv_idle_t idle;   /* runs the callbacks of dns->ready from the loop */
    struct dns_sock *socks;
    struct dns_entry *buckets[DNS_BUCKETS];
    struct dlink ages; /* cached entries, oldest first */
    size_t ncached;
    struct dlink ready;      /* queries answered, callbacks not yet run */
    struct dlink delivering; /* the batch on_idle is running now */
    uint64_t rng;            /* xorshift64* state for RFC 2782 weighted selection */
    int handles;             /* open uv handles; d is freed when the last one closes */
    bool closing;
};

/* --- small helpers ------------------------------------------------------------------ */

static uint64_t rng_next(struct dns *d)
{
    uint64_t x = d->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    d->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n]. The modulo bias is below 2^-40 for the sums of 16-bit weights we use. */
static uint32_t rng_upto(struct dns *d, uint32_t n)
{
    return (uint32_t)(rng_next(d) % ((uint64_t)n + 1));
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static size_t hash_key(enum dns_kind kind, const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind; /* FNV-1a */
    for (const char *p = name; *p; p++) {
        h ^= (unsigned char)ascii_lower(*p);
        h *= 16777619u;
    }
    return h % DNS_BUCKETS;
}

/* DNS names compare without regard to ASCII case (RFC 4343). */
static bool name_eq(const char *a, const char *b)
{
    for (; *a && ascii_lower(*a) == ascii_lower(*b); a++, b++)
        ;
    return ascii_lower(*a) == ascii_lower(*b);
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/* RFC 2181 section 8: a TTL with the top bit set is treated as zero. */
static uint32_t sane_ttl(int64_t ttl)
{
    if (ttl < 0 || ttl > 0x7fffffff)
        return 0;
    return (uint32_t)ttl;
}

/* --- the raw answer: TTLs c-ares's parsers do not give us ------------------------------ */

static uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/*
 * Step over a domain name at *off (RFC 1035 section 4.1.4: labels, ending in
 * a zero octet or a compression pointer). Pointers are not followed: skipping
 * needs only the bytes at *off. 0, or -1 if the name runs past end or uses
 * the reserved label types 01/10.
 */
static int skip_name(const unsigned char *m, size_t end, size_t *off)
{
    size_t o = *off;
    for (int labels = 0; labels < 128; labels++) {
        if (o >= end)
            return -1;
        unsigned len = m[o];
        if ((len & 0xC0) == 0xC0) {
            if (end - o < 2)
                return -1;
            *off = o + 2;
            return 0;
        }
        if (len & 0xC0)
            return -1;
        o += 1 + len;
        if (len == 0) {
            *off = o;
            return 0;
        }
    }
    return -1; /* more labels than fit in 255 octets */
}

/* What walk_msg found; a field is UINT32_MAX when nothing set it. */
struct msg_ttls {
    uint32_t answer; /* lowest TTL of the wanted type (and CNAMEs) in the answer section */
    uint32_t neg;    /* RFC 2308 section 5: min(SOA TTL, SOA MINIMUM) from the authority section */
};

/* The SOA MINIMUM is the last of the five 32-bit fields after MNAME and RNAME (RFC 1035 3.3.13). */
static int soa_minimum(const unsigned char *m, size_t rdata, size_t rdend, uint32_t *out)
{
    size_t o = rdata;
    if (skip_name(m, rdend, &o) < 0 || skip_name(m, rdend, &o) < 0 || rdend - o < 20)
        return -1;
    *out = rd32(m + o + 16);
    return 0;
}

/*
 * Walk a DNS message (header, questions, answer and authority records) with
 * every length checked against len, and collect the TTLs we cache by.
 * 0, or -1 when the message is malformed.
 */
static int walk_msg(const unsigned char *m, size_t len, uint16_t want, struct msg_ttls *t)
{
    t->answer = UINT32_MAX;
    t->neg = UINT32_MAX;
    if (!m || len < 12)
        return -1;
    unsigned qd = rd16(m + 4), an = rd16(m + 6), ns = rd16(m + 8);
    size_t o = 12;
    for (unsigned i = 0; i < qd; i++) {
        if (skip_name(m, len, &o) < 0 || len - o < 4)
            return -1;
        o += 4; /* QTYPE, QCLASS */
    }
    for (unsigned i = 0; i < an + ns; i++) {
        if (skip_name(m, len, &o) < 0 || len - o < 10)
            return -1;
        uint16_t type = rd16(m + o), cls = rd16(m + o + 2);
        uint32_t ttl = sane_ttl(rd32(m + o + 4));
        size_t rdlen = rd16(m + o + 8);
        o += 10;
        if (len - o < rdlen)
            return -1;
        if (cls == DNS_CLASS_IN && i < an && (type == want || type == DNS_TYPE_CNAME)) {
            t->answer = min_u32(t->answer, ttl);
        } else if (cls == DNS_CLASS_IN && i >= an && type == DNS_TYPE_SOA) {
            uint32_t minimum;
            if (soa_minimum(m, o, o + rdlen, &minimum) < 0)
                return -1;
            t->neg = min_u32(t->neg, min_u32(ttl, sane_ttl(minimum)));
        }
        o += rdlen;
    }
    return 0;
}

/* --- answers ------------------------------------------------------------------------ */

static void set_error(struct dns_entry *e, int ares_status)
{
    e->naddrs = e->nsrvs = 0;
    e->ttl_s = DNS_ERR_TTL_S;
    e->status = CH_EIO;
    switch (ares_status) {
    case ARES_ENOTFOUND:
        e->status = CH_ENOENT;
        e->why = "no such name (NXDOMAIN)";
        e->ttl_s = DNS_NEG_TTL_S;
        break;
    case ARES_ENODATA:
        e->status = CH_ENOENT;
        e->why = "no record of that type";
        e->ttl_s = DNS_NEG_TTL_S;
        break;
    case ARES_ETIMEOUT:
        e->status = CH_ETIMEOUT;
        e->why = "no DNS server answered in time";
        break;
    case ARES_ESERVFAIL:
        e->why = "DNS server failure (SERVFAIL)";
        break;
    case ARES_EREFUSED:
        e->why = "DNS server refused the query";
        break;
    case ARES_ECONNREFUSED:
        e->why = "DNS server unreachable (connection refused)";
        break;
    case ARES_EFORMERR:
    case ARES_EBADRESP:
        e->why = "malformed DNS answer";
        break;
    default:
        e->why = ares_strerror(ares_status); /* a static string */
        break;
    }
}

/* Copy the addresses of one family, in answer order, up to DNS_MAX_ADDRS in all. */
static void take_family(struct dns_entry *e, const struct ares_addrinfo *res, int family)
{
    for (const struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) {
        if (e->naddrs == DNS_MAX_ADDRS)
            return;
        if (n->ai_family != family)
            continue;
        union dns_sa *sa = &e->addrs[e->naddrs];
        memset(sa, 0, sizeof(*sa));
        if (family == AF_INET6 && n->ai_addrlen >= sizeof(sa->in6)) {
            sa->in6.sin6_family = AF_INET6;
            memcpy(&sa->in6.sin6_addr,
                   &((const struct sockaddr_in6 *)(const void *)n->ai_addr)->sin6_addr,
                   sizeof(sa->in6.sin6_addr));
        } else if (family == AF_INET && n->ai_addrlen >= sizeof(sa->in)) {
            sa->in.sin_family = AF_INET;
            sa->in.sin_addr = ((const struct sockaddr_in *)(const void *)n->ai_addr)->sin_addr;
        } else {
            continue;
        }
        e->ttl_s = min_u32(e->ttl_s, sane_ttl(n->ai_ttl));
        e->naddrs++;
    }
}

/*
 * An ares_getaddrinfo answer. c-ares reports per-address TTLs in ai_ttl and
 * the CNAMEs' in the cname list; the answer lives as long as the shortest.
 * An answer that came while ares_getaddrinfo was still running sent no packet:
 * it came from /etc/hosts (or RFC 6761 localhost, or an IP literal). Those are
 * never cached (ttl_s 0): c-ares rereads the file on each lookup anyway.
 * c-ares does not show us the authority section, so a negative A/AAAA answer
 * is cached for DNS_NEG_TTL_S.
 */
static void addr_answer(struct dns_entry *e, int status, const struct ares_addrinfo *res)
{
    if (status != ARES_SUCCESS || !res) {
        set_error(e, status == ARES_SUCCESS ? ARES_EBADRESP : status);
        return;
    }
    e->addrs = calloc(DNS_MAX_ADDRS, sizeof(*e->addrs));
    if (!e->addrs) {
        set_error(e, ARES_ENOMEM);
        return;
    }
    e->ttl_s = DNS_TTL_MAX_S;
    take_family(e, res, AF_INET6);
    take_family(e, res, AF_INET);
    if (e->naddrs == 0) {
        set_error(e, ARES_ENODATA);
        return;
    }
    for (const struct ares_addrinfo_cname *c = res->cnames; c; c = c->next)
        e->ttl_s = min_u32(e->ttl_s, sane_ttl(c->ttl));
    e->status = 0;
    e->why = NULL;
    e->from_hosts = e->submitting;
    if (e->from_hosts)
        e->ttl_s = 0;
}

static int srv_cmp(const void *a, const void *b)
{
    const struct dns_srv *x = a, *y = b;
    return (int)x->priority - (int)y->priority;
}

/* Copy one SRV record; false when its target is "." or does not fit. */
static bool take_srv(struct dns_srv *out, const struct ares_srv_reply *r)
{
    size_t n = strlen(r->host);
    while (n > 0 && r->host[n - 1] == '.')
        n--;
    if (n == 0 || n >= sizeof(out->target))
        return false;
    for (size_t i = 0; i < n; i++)
        out->target[i] = ascii_lower(r->host[i]);
    out->target[n] = '\0';
    out->port = r->port;
    out->priority = r->priority;
    out->weight = r->weight;
    return true;
}

/*
 * An ares_query answer for SRV. c-ares parses the records; the TTLs come from
 * our own walk of the message. RFC 2782: a lone record whose target is "."
 * means the service is decidedly not available; such records are dropped
 * from a longer list, and a list left empty is CH_ENOENT for the records' TTL.
 * At most DNS_MAX_SRV records are kept, those of the lowest priorities.
 */
static void srv_answer(struct dns_entry *e, int status, const unsigned char *abuf, int alen)
{
    struct msg_ttls t;
    int walked = walk_msg(abuf, alen > 0 ? (size_t)alen : 0, DNS_TYPE_SRV, &t);
    if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
        set_error(e, status);
        if (walked == 0 && t.neg != UINT32_MAX)
            e->ttl_s = min_u32(t.neg, DNS_NEG_TTL_MAX_S);
        return;
    }
    if (status != ARES_SUCCESS) {
        set_error(e, status);
        return;
    }
    struct ares_srv_reply *list = NULL;
    if (walked < 0 || ares_parse_srv_reply(abuf, alen, &list) != ARES_SUCCESS) {
        set_error(e, ARES_EBADRESP);
        return;
    }
    size_t n = 0;
    for (const struct ares_srv_reply *r = list; r; r = r->next)
        n++;
    e->srvs = calloc(n ? n : 1, sizeof(*e->srvs));
    if (!e->srvs) {
        ares_free_data(list);
        set_error(e, ARES_ENOMEM);
        return;
    }
    for (const struct ares_srv_reply *r = list; r; r = r->next)
        if (take_srv(&e->srvs[e->nsrvs], r))
            e->nsrvs++;
    ares_free_data(list);
    uint32_t ttl = t.answer == UINT32_MAX ? 0 : t.answer;
    if (e->nsrvs == 0) {
        set_error(e, ARES_ENODATA);
        e->why = "service not available (SRV target \".\")";
        e->ttl_s = min_u32(ttl, DNS_NEG_TTL_MAX_S);
        return;
    }
    /* A stable insertion sort: answer order is kept within a priority. */
    for (size_t i = 1; i < e->nsrvs; i++) {
        struct dns_srv s = e->srvs[i];
        size_t j = i;
        for (; j > 0 && srv_cmp(&e->srvs[j - 1], &s) > 0; j--)
            e->srvs[j] = e->srvs[j - 1];
        e->srvs[j] = s;
    }
    if (e->nsrvs > DNS_MAX_SRV)
        e->nsrvs = DNS_MAX_SRV;
    e->status = 0;
    e->why = NULL;
    e->ttl_s = min_u32(ttl, DNS_TTL_MAX_S);
}

/*
 * RFC 2782 "Usage rules": within each priority, pick records one by one at
 * random with probability proportional to weight. The records of weight 0
 * go first in the running sum, so they are picked only when the random
 * number is 0 (rarely, unless every weight is 0: then in answer order).
 */
static void srv_order(struct dns *d, const struct dns_srv *in, size_t n, struct dns_srv *out)
{
    size_t done = 0;
    if (n > DNS_MAX_SRV)
        n = DNS_MAX_SRV;
    for (size_t start = 0; start < n;) {
        size_t end = start;
        while (end < n && in[end].priority == in[start].priority)
            end++;
        struct dns_srv group[DNS_MAX_SRV];
        size_t ng = 0;
        for (size_t i = start; i < end; i++)
            if (in[i].weight == 0)
                group[ng++] = in[i];
        for (size_t i = start; i < end; i++)
            if (in[i].weight != 0)
                group[ng++] = in[i];
        while (ng > 0) {
            uint32_t total = 0;
            for (size_t i = 0; i < ng; i++)
                total += group[i].weight;
            uint32_t pick = rng_upto(d, total), sum = 0;
            size_t i = 0;
            for (; i < ng - 1; i++) {
                sum += group[i].weight;
                if (sum >= pick)
                    break;
            }
            out[done++] = group[i];
            for (ng--; i < ng; i++)
                group[i] = group[i + 1];
        }
        start = end;
    }
}

static void fill_result(struct dns *d, const struct dns_query *q, struct dns_result *r)
{
    const struct dns_entry *e = q->e;
    memset(r, 0, sizeof(*r));
    r->status = e->status;
    r->why = e->status ? e->why : NULL;
    r->ttl_s = e->ttl_s;
    if (q->from_cache) {
        /* What is left of the TTL, rounded up: the caller may cache what it derives. */
        uint64_t now = uv_now(d->loop);
        uint64_t left = e->expires_ms > now ? e->expires_ms - now : 0;
        r->ttl_s = (uint32_t)((left + 999) / 1000);
    }
    r->from_cache = q->from_cache;
    r->from_hosts = e->from_hosts;
    for (size_t i = 0; i < e->naddrs; i++)
        memcpy(&r->addrs[i], &e->addrs[i], sizeof(e->addrs[i]));
    r->naddrs = e->naddrs;
    srv_order(d, e->srvs, e->nsrvs, r->srvs);
    r->nsrvs = e->nsrvs;
}

static void on_idle(uv_idle_t *h);

/* --- the cache: entries keyed by (kind, name), the name lowercased ----------------------- */

static void entry_unref(struct dns_entry *e)
{
    if (--e->refs > 0)
        return;
    free(e->addrs);
    free(e->srvs);
    free(e);
}

static struct dns_entry *cache_find(struct dns *d, enum dns_kind kind, const char *name)
{
    for (struct dns_entry *e = d->buckets[hash_key(kind, name)]; e; e = e->hnext)
        if (e->kind == kind && name_eq(e->name, name))
            return e;
    return NULL;
}

/* Take e out of the table (and the age list); waiters and the query in flight keep it alive. */
static void cache_drop(struct dns *d, struct dns_entry *e)
{
    struct dns_entry **pp = &d->buckets[hash_key(e->kind, e->name)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->hnext = NULL;
    if (e->cached)
        d->ncached--;
    dl_remove(&e->age); /* a no-op unless cached */
    e->cached = false;
    e->hashed = false;
    entry_unref(e);
}

static struct dns_entry *cache_add(struct dns *d, enum dns_kind kind, const char *name)
{
    size_t n = strlen(name);
    struct dns_entry *e = calloc(1, sizeof(*e) + n + 1);
    if (!e)
        return NULL;
    for (size_t i = 0; i < n; i++)
        e->name[i] = ascii_lower(name[i]);
    e->d = d;
    e->kind = kind;
    e->refs = 1;
    e->hashed = true;
    e->pending = true;
    dl_init(&e->age);
    dl_init(&e->waiters);
    size_t b = hash_key(kind, e->name);
    e->hnext = d->buckets[b];
    d->buckets[b] = e;
    return e;
}

/* Make room for one more answered entry: drop the expired ones, then the oldest. */
static void cache_evict(struct dns *d)
{
    if (d->ncached < DNS_CACHE_MAX)
        return;
    uint64_t now = uv_now(d->loop);
    for (struct dlink *l = d->ages.next, *next; l != &d->ages; l = next) {
        next = l->next;
        struct dns_entry *e = CONTAINER_OF(l, struct dns_entry, age);
        if (e->expires_ms <= now)
            cache_drop(d, e);
    }
    for (struct dlink *l = d->ages.next, *next; l != &d->ages && d->ncached >= DNS_CACHE_MAX;
         l = next) {
        next = l->next;
        cache_drop(d, CONTAINER_OF(l, struct dns_entry, age));
    }
}

/* The query of e answered: keep it for its TTL, then hand the answer to every waiter. */
static void entry_complete(struct dns_entry *e)
{
    struct dns *d = e->d;
    if (e->hashed && e->ttl_s > 0) {
        cache_evict(d);
        e->pending = false;
        e->expires_ms = uv_now(d->loop) + (uint64_t)e->ttl_s * 1000;
        dl_push_tail(&d->ages, &e->age);
        e->cached = true;
        d->ncached++;
    } else if (e->hashed) {
        cache_drop(d, e);
    }
    e->pending = false;
    dl_splice_tail(&d->ready, &e->waiters);
    if (!dl_empty(&d->ready))
        uv_idle_start(&d->idle, on_idle);
    log_debug("dns: %s %s: %s, ttl %us", e->kind == KIND_SRV ? "SRV" : "addr", e->name,
              e->status ? e->why : "ok", e->ttl_s);
}

/* --- c-ares on libuv ---------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* Arm the timer for c-ares's next retransmission or timeout, if any query is in flight. */
static void update_timer(struct dns *d)
{
    if (d->closing)
        return;
    struct timeval tv;
    if (!ares_timeout(d->channel, NULL, &tv)) {
        uv_timer_stop(&d->timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
    uv_timer_start(&d->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct dns *d = t->data;
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    update_timer(d);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct dns *d = h->data;
    if (h->type == UV_POLL)
        free(CONTAINER_OF((uv_poll_t *)h, struct dns_sock, poll));
    if (--d->handles == 0 && d->closing)
        free(d);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct dns_sock *s = CONTAINER_OF(h, struct dns_sock, poll);
    struct dns *d = s->d;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (status < 0) {
        /* Let c-ares find the socket error by reading and writing. */
        rfd = wfd = s->fd;
    } else {
        if (events & UV_READABLE)
            rfd = s->fd;
        if (events & UV_WRITABLE)
            wfd = s->fd;
    }
    ares_process_fd(d->channel, rfd, wfd);
    update_timer(d);
}

static void sock_close(struct dns *d, struct dns_sock *s)
{
    struct dns_sock **pp = &d->socks;
    while (*pp != s)
        pp = &(*pp)->next;
    *pp = s->next;
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

/*
 * ARES_OPT_SOCK_STATE_CB: c-ares opened a socket, changed what it waits for,
 * or is about to close it (readable and writable both 0, called before
 * close(2), so the poll handle stops watching a descriptor still open).
 */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_sock *s = d->socks;
    while (s && s->fd != fd)
        s = s->next;
    if (!readable && !writable) {
        if (s)
            sock_close(d, s);
        return;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            log_error("dns: out of memory watching a resolver socket");
            return; /* the query then times out */
        }
        int rc = uv_poll_init_socket(d->loop, &s->poll, fd);
        if (rc < 0) {
            log_error("dns: cannot watch resolver socket: %s", uv_strerror(rc));
            free(s);
            return;
        }
        s->d = d;
        s->fd = fd;
        s->poll.data = d;
        s->next = d->socks;
        d->socks = s;
        d->handles++;
    }
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

/*
 * c-ares callbacks never run user code: answers go on dns->ready and their
 * callbacks run from on_idle, so a callback may call dns_free (ares_destroy
 * must not be called from inside a c-ares callback).
 */
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct dns_entry *e = arg;
    (void)timeouts;
    if (status != ARES_EDESTRUCTION && !e->d->closing) {
        addr_answer(e, status, res);
        entry_complete(e);
    }
    if (res)
        ares_freeaddrinfo(res);
    entry_unref(e); /* the query's reference */
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_entry *e = arg;
    (void)timeouts;
    if (status != ARES_EDESTRUCTION && !e->d->closing) {
        srv_answer(e, status, abuf, alen);
        entry_complete(e);
    }
    entry_unref(e);
}

static void start_query(struct dns *d, struct dns_entry *e)
{
    e->refs++; /* held by the c-ares query until its callback */
    e->submitting = true;
    if (e->kind == KIND_ADDR) {
        /*
         * AF_UNSPEC sends A and AAAA together. ARES_AI_NOSORT keeps the answer
         * order: the RFC 6724 sort would connect(2) a UDP socket per address
         * on the loop, and we order AAAA before A ourselves.
         */
        struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT};
        ares_getaddrinfo(d->channel, e->name, NULL, &hints, on_addrinfo, e);
    } else {
        /* ares_query, not ares_search: the name is absolute, no search domain is tried. */
        ares_query(d->channel, e->name, DNS_CLASS_IN, DNS_TYPE_SRV, on_srv, e);
    }
    e->submitting = false;
    update_timer(d);
}

/* --- delivery ----------------------------------------------------------------------- */

static void free_queries(struct dlink *list)
{
    for (struct dlink *l = list->next, *next; l != list; l = next) {
        next = l->next;
        struct dns_query *q = CONTAINER_OF(l, struct dns_query, link);
        entry_unref(q->e);
        free(q);
    }
    dl_init(list);
}

/*
 * Run the callbacks of the queries answered so far. Queries answered while
 * this runs (a callback that looks up a cached name) wait for the next loop
 * iteration, so a callback that always looks up again cannot starve the loop.
 */
static void on_idle(uv_idle_t *h)
{
    struct dns *d = h->data;
    dl_splice_tail(&d->delivering, &d->ready);
    while (!d->closing && !dl_empty(&d->delivering)) {
        struct dns_query *q = CONTAINER_OF(dl_pop_head(&d->delivering), struct dns_query, link);
        /* On the stack: the callback may clear the cache or free d. */
        struct dns_result r;
        fill_result(d, q, &r);
        dns_cb cb = q->cb;
        void *ud = q->ud;
        entry_unref(q->e);
        free(q);
        cb(ud, &r);
    }
    if (!d->closing && dl_empty(&d->ready))
        uv_idle_stop(&d->idle);
}

/* --- the interface ------------------------------------------------------------------ */

static int set_servers(struct dns *d, const struct config *cfg, struct buf *err)
{
    if (!cfg || cfg->ndns_servers == 0)
        return 0; /* c-ares read /etc/resolv.conf */
    struct buf csv = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < cfg->ndns_servers && rc == 0; i++)
        rc = buf_appendf(&csv, "%s%s", i ? "," : "", cfg->dns_servers[i]);
    if (rc == 0)
        rc = buf_append(&csv, "", 1); /* a C string for c-ares */
    if (rc < 0) {
        buf_free(&csv);
        buf_append_str(err, "dns: out of memory");
        return CH_ENOMEM;
    }
    /* "IP:PORT" and "[IPv6]:PORT", as config.c normalises them, is what c-ares parses. */
    rc = ares_set_servers_ports_csv(d->channel, buf_data(&csv));
    if (rc != ARES_SUCCESS)
        buf_appendf(err, "dns: bad dns_servers \"%s\": %s", buf_data(&csv), ares_strerror(rc));
    buf_free(&csv);
    return rc == ARES_SUCCESS ? 0 : CH_EINVAL;
}

static void seed_rng(struct dns *d)
{
    if (getrandom(&d->rng, sizeof(d->rng), GRND_NONBLOCK) != (ssize_t)sizeof(d->rng))
        d->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)d;
    if (d->rng == 0)
        d->rng = 0x9E3779B97F4A7C15ULL; /* xorshift must not start at 0 */
}

int dns_new(uv_loop_t *loop, const struct config *cfg, struct dns **out, struct buf *err)
{
    *out = NULL;
    struct dns *d = calloc(1, sizeof(*d));
    if (!d) {
        buf_append_str(err, "dns: out of memory");
        return CH_ENOMEM;
    }
    d->loop = loop;
    dl_init(&d->ages);
    dl_init(&d->ready);
    dl_init(&d->delivering);
    seed_rng(d);

    /*
     * No search domains (ndomains 0, which also beats LOCALDOMAIN and
     * resolv.conf's search line: ares_getaddrinfo ignores ARES_FLAG_NOSEARCH
     * in c-ares 1.18), no HOSTALIASES, /etc/hosts before DNS.
     */
    struct ares_options o = {0};
    char lookups[] = "fb";
    o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    o.timeout = DNS_TIMEOUT_MS;
    o.tries = DNS_TRIES;
    o.ndots = 1;
    o.domains = NULL;
    o.ndomains = 0;
    o.lookups = lookups;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = d;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS |
               ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB;
    /* ares_library_init is needed on Windows only; Linux c-ares keeps no global state. */
    int rc = ares_init_options(&d->channel, &o, mask);
    if (rc != ARES_SUCCESS) {
        buf_appendf(err, "dns: cannot start c-ares: %s", ares_strerror(rc));
        free(d);
        return rc == ARES_ENOMEM ? CH_ENOMEM : CH_EIO;
    }
    rc = set_servers(d, cfg, err);
    if (rc < 0) {
        ares_destroy(d->channel);
        free(d);
        return rc;
    }
    /* Both inits only fill in the handle on Linux; they cannot fail on a live loop. */
    uv_timer_init(loop, &d->timer);
    uv_idle_init(loop, &d->idle);
    d->timer.data = d;
    d->idle.data = d;
    d->handles = 2;
    *out = d;
    return 0;
}

void dns_free(struct dns *d)
{
    if (!d)
        return;
    d->closing = true;
    free_queries(&d->ready);
    free_queries(&d->delivering);
    for (size_t b = 0; b < DNS_BUCKETS; b++)
        for (struct dns_entry *e = d->buckets[b]; e; e = e->hnext)
            free_queries(&e->waiters);
    /* Ends every query in flight (ARES_EDESTRUCTION, no answer) and closes its sockets. */
    ares_destroy(d->channel);
    while (d->socks)
        sock_close(d, d->socks);
    for (size_t b = 0; b < DNS_BUCKETS; b++)
        for (struct dns_entry *e = d->buckets[b], *next; e; e = next) {
            next = e->hnext;
            cache_drop(d, e);
        }
    uv_close((uv_handle_t *)&d->timer, on_handle_closed);
    uv_close((uv_handle_t *)&d->idle, on_handle_closed);
}

static struct dns_query *lookup(struct dns *d, enum dns_kind kind, const char *name, dns_cb cb,
                                void *ud)
{
    if (d->closing)
        return NULL;
    struct dns_query *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->cb = cb;
    q->ud = ud;
    dl_init(&q->link);

    struct dns_entry *e = cache_find(d, kind, name);
    if (e && !e->pending && e->expires_ms <= uv_now(d->loop)) {
        cache_drop(d, e);
        e = NULL;
    }
    bool fresh = e == NULL;
    if (fresh && (e = cache_add(d, kind, name)) == NULL) {
        free(q);
        return NULL;
    }
    e->refs++;
    q->e = e;
    if (e->pending) {
        dl_push_tail(&e->waiters, &q->link); /* share the query in flight */
    } else {
        q->from_cache = true;
        dl_push_tail(&d->ready, &q->link);
        uv_idle_start(&d->idle, on_idle);
    }
    if (fresh)
        start_query(d, e);
    return q;
}

struct dns_query *dns_lookup_addr(struct dns *d, const char *host, dns_cb cb, void *ud)
{
    return lookup(d, KIND_ADDR, host, cb, ud);
}

struct dns_query *dns_lookup_srv(struct dns *d, const char *name, dns_cb cb, void *ud)
{
    return lookup(d, KIND_SRV, name, cb, ud);
}

void dns_cancel(struct dns_query *q)
{
    if (!q)
        return;
    dl_remove(&q->link);
    entry_unref(q->e);
    free(q);
}

void dns_cache_clear(struct dns *d)
{
    for (struct dlink *l = d->ages.next, *next; l != &d->ages; l = next) {
        next = l->next;
        cache_drop(d, CONTAINER_OF(l, struct dns_entry, age));
    }
}
