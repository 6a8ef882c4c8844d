/* test_cidr.c -- prefix parsing, formatting, longest-prefix sets and list files. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cmocka.h>

#include "chappe/buf.h"
#include "chappe/cidr.h"
#include "chappe/util.h"

static void expect_prefix(const char *s, int family, unsigned len, const char *text)
{
    struct cidr c;
    const char *why = NULL;
    if (cidr_parse(s, strlen(s), &c, &why))
        fail_msg("rejected %s: %s", s, why);
    char out[64];
    assert_int_equal(c.family, family);
    assert_int_equal(c.len, len);
    assert_string_equal(cidr_format(&c, out, sizeof(out)), text);
}

static void expect_bad_n(const char *s, size_t n, const char *why_part)
{
    struct cidr c, zero;
    memset(&c, 0x5a, sizeof(c));
    memset(&zero, 0, sizeof(zero));
    const char *why = NULL;
    assert_int_equal(cidr_parse(s, n, &c, &why), CH_EINVAL);
    assert_non_null(why);
    if (strstr(why, why_part) == NULL)
        fail_msg("%s: why \"%s\" lacks \"%s\"", s, why, why_part);
    assert_memory_equal(&c, &zero, sizeof(c));
}

static void expect_bad(const char *s, const char *why_part)
{
    expect_bad_n(s, strlen(s), why_part);
}

static struct cidr prefix(const char *s)
{
    struct cidr c;
    const char *why = NULL;
    if (cidr_parse(s, strlen(s), &c, &why))
        fail_msg("rejected %s: %s", s, why);
    return c;
}

static void test_parse_valid(void **state)
{
    (void)state;
    expect_prefix("10.0.0.0/8", 4, 8, "10.0.0.0/8");
    expect_prefix("1.2.3.4", 4, 32, "1.2.3.4/32");
    expect_prefix("1.2.3.4/32", 4, 32, "1.2.3.4/32");
    expect_prefix("0.0.0.0/0", 4, 0, "0.0.0.0/0");
    expect_prefix("0.0.0.0", 4, 32, "0.0.0.0/32");
    expect_prefix("255.255.255.255", 4, 32, "255.255.255.255/32");
    expect_prefix("255.255.255.254/31", 4, 31, "255.255.255.254/31");
    expect_prefix("128.0.0.0/1", 4, 1, "128.0.0.0/1");
    expect_prefix("100.64.0.0/10", 4, 10, "100.64.0.0/10");
    expect_prefix("::/0", 6, 0, "::/0");
    expect_prefix("::", 6, 128, "::/128");
    expect_prefix("::1", 6, 128, "::1/128");
    expect_prefix("::1/128", 6, 128, "::1/128");
    expect_prefix("2001:DB8::/32", 6, 32, "2001:db8::/32");
    expect_prefix("fe80::/10", 6, 10, "fe80::/10");
    expect_prefix("8000::/1", 6, 1, "8000::/1");
    expect_prefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 6, 128,
                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
    expect_prefix("2001:db8:0:0:0:0:0:1/128", 6, 128, "2001:db8::1/128");
    /* IPv4-mapped prefixes are IPv4 prefixes. */
    expect_prefix("::ffff:10.0.0.0/104", 4, 8, "10.0.0.0/8");
    expect_prefix("::ffff:0:0/96", 4, 0, "0.0.0.0/0");
    expect_prefix("::ffff:1.2.3.4", 4, 32, "1.2.3.4/32");
    expect_prefix("::FFFF:0102:0304/128", 4, 32, "1.2.3.4/32");
    /* Shorter than /96 it is an IPv6 prefix that merely contains the mapped block. */
    expect_prefix("::fffe:0:0/95", 6, 95, "::fffe:0:0/95");
    /* IPv4-compatible (deprecated) addresses stay IPv6. */
    expect_prefix("::1.2.3.4", 6, 128, "::1.2.3.4/128");
}

static void test_parse_invalid(void **state)
{
    (void)state;
    expect_bad("", "empty");
    expect_bad_n(NULL, 0, "empty");
    expect_bad("/8", "empty address");
    expect_bad(" 10.0.0.0/8", "whitespace");
    expect_bad("10.0.0.0/8 ", "whitespace");
    expect_bad("10.0.0.0 /8", "whitespace");
    expect_bad("10.0.0.0/ 8", "whitespace");
    expect_bad("10.0.0.0/8\n", "whitespace");
    expect_bad("\t::1", "whitespace");
    expect_bad("[::1]", "brackets");
    expect_bad("[::1]/128", "brackets");
    expect_bad("fe80::1%eth0", "zone");
    expect_bad("fe80::%1/64", "zone");
    expect_bad("010.0.0.0/8", "leading zero in IPv4");
    expect_bad("10.0.0.00", "leading zero in IPv4");
    expect_bad("10.00.0.0/16", "leading zero in IPv4");
    expect_bad("1.2.3.256", "invalid IPv4");
    expect_bad("1.2.3.1000", "invalid IPv4");
    expect_bad("1.2.3", "invalid IPv4");
    expect_bad("1.2.3.4.5", "invalid IPv4");
    expect_bad("1..2.3", "invalid IPv4");
    expect_bad("1.2.3.4.", "invalid IPv4");
    expect_bad(".1.2.3.4", "invalid IPv4");
    expect_bad("1.2.3.a", "invalid IPv4");
    expect_bad("16909060", "invalid IPv4");
    expect_bad("0x1.2.3.4", "invalid character");
    expect_bad("1.2.3.4/-1", "invalid character");
    expect_bad("g::1", "invalid character");
    expect_bad("1.2.3.4/", "empty prefix length");
    expect_bad("::/", "empty prefix length");
    expect_bad("1.2.3.4/08", "leading zero in prefix length");
    expect_bad("0.0.0.0/00", "leading zero in prefix length");
    expect_bad("::/0128", "prefix length out of range");
    expect_bad("1.2.3.4/33", "prefix length out of range");
    expect_bad("::/129", "prefix length out of range");
    expect_bad("::/1000", "prefix length out of range");
    expect_bad("1.2.3.4/3a", "invalid prefix length");
    expect_bad("1.2.3.4/8/8", "invalid prefix length");
    expect_bad(":::", "invalid IPv6");
    expect_bad("1:2:3:4:5:6:7:8:9", "invalid IPv6");
    expect_bad("1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19", "invalid IPv6");
    expect_bad("::ffff:01.2.3.4", "invalid IPv6");
    expect_bad_n("1.2.3.4\0", 8, "invalid character");
    expect_bad_n("1.2\0.3.4", 8, "invalid character");
    expect_bad("1.2.3.4\xc2\xa0", "invalid character");
}

static void test_host_bits(void **state)
{
    (void)state;
    expect_bad("10.1.0.0/8", "host bits set (did you mean 10.0.0.0/8?)");
    expect_bad("1.2.3.4/0", "host bits set (did you mean 0.0.0.0/0?)");
    expect_bad("192.168.1.1/24", "host bits set (did you mean 192.168.1.0/24?)");
    expect_bad("255.255.255.255/31", "host bits set (did you mean 255.255.255.254/31?)");
    expect_bad("2001:db8::1/32", "host bits set (did you mean 2001:db8::/32?)");
    expect_bad("fe80::1/10", "host bits set (did you mean fe80::/10?)");
    expect_bad("::1/127", "host bits set (did you mean ::/127?)");
    expect_bad("::ffff:10.1.0.0/104", "host bits set (did you mean ::ffff:10.0.0.0/104?)");
    /* The exact whole message. */
    struct cidr c;
    const char *why = NULL;
    assert_int_equal(cidr_parse("10.1.0.0/8", 10, &c, &why), CH_EINVAL);
    assert_string_equal(why, "host bits set (did you mean 10.0.0.0/8?)");
}

static void test_parse_ip(void **state)
{
    (void)state;
    int family = 0;
    uint8_t a[16];
    static const uint8_t v4[16] = {1, 2, 3, 4};
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};

    assert_int_equal(cidr_parse_ip("1.2.3.4", 7, &family, a), 0);
    assert_int_equal(family, 4);
    assert_memory_equal(a, v4, 16);
    assert_int_equal(cidr_parse_ip("::ffff:1.2.3.4", 14, &family, a), 0);
    assert_int_equal(family, 4);
    assert_memory_equal(a, v4, 16);
    assert_int_equal(cidr_parse_ip("2001:DB8::1", 11, &family, a), 0);
    assert_int_equal(family, 6);
    assert_memory_equal(a, v6, 16);

    static const char *bad[] = {"",     "1.2.3.4/32", "[::1]", "01.2.3.4",  "1.2.3",    "::1%lo",
                                " ::1", "1.2.3.4 ",   "::/0",  "localhost", "1.2.3.4:1"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (cidr_parse_ip(bad[i], strlen(bad[i]), &family, a) != CH_EINVAL)
            fail_msg("accepted %s", bad[i]);
    }
}

static void test_sockaddr_ip(void **state)
{
    (void)state;
    int family = 0;
    uint8_t a[16];
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(8448)};
    inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
    assert_int_equal(cidr_sockaddr_ip((struct sockaddr *)&sin, &family, a), 0);
    assert_int_equal(family, 4);
    assert_memory_equal(a, ((uint8_t[4]){10, 1, 2, 3}), 4);

    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &sin6.sin6_addr);
    assert_int_equal(cidr_sockaddr_ip((struct sockaddr *)&sin6, &family, a), 0);
    assert_int_equal(family, 4);
    assert_memory_equal(a, ((uint8_t[4]){10, 1, 2, 3}), 4);

    inet_pton(AF_INET6, "2001:db8::5", &sin6.sin6_addr);
    assert_int_equal(cidr_sockaddr_ip((struct sockaddr *)&sin6, &family, a), 0);
    assert_int_equal(family, 6);
    assert_memory_equal(a, &sin6.sin6_addr, 16);

    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_int_equal(cidr_sockaddr_ip((struct sockaddr *)&sun, &family, a), CH_EINVAL);
    assert_int_equal(cidr_sockaddr_ip(NULL, &family, a), CH_EINVAL);
}

static void add(struct cidr_set *s, const char *text, const char *label)
{
    struct cidr c = prefix(text);
    assert_int_equal(cidr_set_add(s, &c, label), 0);
}

/* The label of the longest match for an address in text form, or NULL. */
static const char *find(const struct cidr_set *s, const char *ip)
{
    int family;
    uint8_t a[16];
    struct in6_addr raw;
    /* Look IPv4-mapped text up as the raw 16 bytes, to exercise the set's own folding. */
    if (strchr(ip, ':') && inet_pton(AF_INET6, ip, &raw) == 1) {
        const struct cidr_entry *e = cidr_set_lookup(s, 6, raw.s6_addr);
        return e ? e->label : NULL;
    }
    if (cidr_parse_ip(ip, strlen(ip), &family, a))
        fail_msg("bad test address %s", ip);
    const struct cidr_entry *e = cidr_set_lookup(s, family, a);
    return e ? e->label : NULL;
}

static void expect_find(const struct cidr_set *s, const char *ip, const char *label)
{
    const char *got = find(s, ip);
    if (label == NULL && got == NULL)
        return;
    if (label == NULL || got == NULL || strcmp(label, got) != 0)
        fail_msg("%s: got %s, want %s", ip, got ? got : "(none)", label ? label : "(none)");
}

static void test_set_longest_match(void **state)
{
    (void)state;
    struct cidr_set *s = cidr_set_new();
    assert_non_null(s);
    add(s, "10.0.0.0/8", "a");
    add(s, "10.1.0.0/16", "b");
    add(s, "10.1.2.0/24", "c");
    add(s, "10.1.2.3", "d");
    add(s, "2001:db8::/32", "v6a");
    add(s, "2001:db8:1::/48", "v6b");
    add(s, "::1/128", "lo6");
    assert_int_equal(cidr_set_count(s), 7);

    expect_find(s, "10.0.0.0", "a");
    expect_find(s, "10.255.255.255", "a");
    expect_find(s, "10.1.0.0", "b");
    expect_find(s, "10.1.255.255", "b");
    expect_find(s, "10.1.2.0", "c");
    expect_find(s, "10.1.2.2", "c");
    expect_find(s, "10.1.2.3", "d");
    expect_find(s, "10.1.2.4", "c");
    expect_find(s, "9.255.255.255", NULL);
    expect_find(s, "11.0.0.0", NULL);
    expect_find(s, "0.0.0.0", NULL);
    expect_find(s, "2001:db8::", "v6a");
    expect_find(s, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "v6a");
    expect_find(s, "2001:db8:1::1", "v6b");
    expect_find(s, "2001:db8:1:ffff::", "v6b");
    expect_find(s, "2001:db8:2::", "v6a");
    expect_find(s, "2001:db9::", NULL);
    expect_find(s, "2001:db7:ffff::", NULL);
    expect_find(s, "::1", "lo6");
    expect_find(s, "::2", NULL);
    expect_find(s, "::", NULL);
    /* Mapped addresses are looked up as IPv4, never in the IPv6 trie. */
    expect_find(s, "::ffff:10.1.2.3", "d");
    expect_find(s, "::ffff:10.9.9.9", "a");
    expect_find(s, "::ffff:11.0.0.0", NULL);
    /* IPv4-compatible is not mapped. */
    expect_find(s, "::10.1.2.3", NULL);

    /* Unknown families and NULLs find nothing. */
    uint8_t z[16] = {10, 1, 2, 3};
    assert_null(cidr_set_lookup(s, 5, z));
    assert_null(cidr_set_lookup(s, 4, NULL));
    assert_null(cidr_set_lookup(NULL, 4, z));

    /* /0 catches the rest of its family only. */
    add(s, "0.0.0.0/0", "all4");
    expect_find(s, "11.0.0.0", "all4");
    expect_find(s, "255.255.255.255", "all4");
    expect_find(s, "10.1.2.4", "c");
    expect_find(s, "2001:db9::", NULL);
    expect_find(s, "::ffff:11.0.0.0", "all4");
    add(s, "::/0", "all6");
    expect_find(s, "2001:db9::", "all6");
    expect_find(s, "::", "all6");
    expect_find(s, "::ffff:11.0.0.0", "all4");
    expect_find(s, "::10.1.2.3", "all6");
    cidr_set_free(s);
}

static void test_set_add_rules(void **state)
{
    (void)state;
    struct cidr_set *s = cidr_set_new();
    assert_non_null(s);
    /* The same prefix twice keeps the first label and counts once. */
    add(s, "192.168.0.0/16", "first");
    add(s, "192.168.0.0/16", "second");
    assert_int_equal(cidr_set_count(s), 1);
    expect_find(s, "192.168.3.4", "first");
    /* A mapped prefix given as IPv6 lands in the IPv4 trie, and is the same prefix. */
    struct cidr m = {.family = 6, .len = 112};
    inet_pton(AF_INET6, "::ffff:192.168.0.0", m.addr);
    assert_int_equal(cidr_set_add(s, &m, "mapped"), 0);
    assert_int_equal(cidr_set_count(s), 1);
    m.len = 120;
    inet_pton(AF_INET6, "::ffff:192.168.7.0", m.addr);
    assert_int_equal(cidr_set_add(s, &m, "mapped24"), 0);
    expect_find(s, "192.168.7.1", "mapped24");
    const struct cidr_entry *e = cidr_set_entry(s, 1);
    assert_non_null(e);
    assert_int_equal(e->cidr.family, 4);
    assert_int_equal(e->cidr.len, 24);
    /* Host bits given directly are masked in the stored prefix. */
    struct cidr h = {.family = 4, .len = 8, .addr = {172, 99, 1, 1}};
    assert_int_equal(cidr_set_add(s, &h, NULL), 0);
    e = cidr_set_entry(s, 2);
    char txt[64];
    assert_string_equal(cidr_format(&e->cidr, txt, sizeof(txt)), "172.0.0.0/8");
    assert_null(e->label);
    expect_find(s, "172.200.0.1", NULL); /* found, with no label */
    int family;
    uint8_t a[16];
    assert_int_equal(cidr_parse_ip("172.200.0.1", 11, &family, a), 0);
    assert_ptr_equal(cidr_set_lookup(s, 4, a), e);
    /* Nonsense prefixes are refused. */
    struct cidr bad = {.family = 5, .len = 1};
    assert_int_equal(cidr_set_add(s, &bad, "x"), CH_EINVAL);
    bad = (struct cidr){.family = 4, .len = 33};
    assert_int_equal(cidr_set_add(s, &bad, "x"), CH_EINVAL);
    bad = (struct cidr){.family = 6, .len = 129};
    assert_int_equal(cidr_set_add(s, &bad, "x"), CH_EINVAL);
    assert_int_equal(cidr_set_count(s), 3);
    assert_null(cidr_set_entry(s, 3));
    /* Insertion order. */
    assert_string_equal(cidr_set_entry(s, 0)->label, "first");
    assert_string_equal(cidr_set_entry(s, 1)->label, "mapped24");
    cidr_set_free(s);
    cidr_set_free(NULL);
}

static void test_set_lookup_sa(void **state)
{
    (void)state;
    struct cidr_set *s = cidr_set_new();
    assert_non_null(s);
    add(s, "127.0.0.0/8", "lo");
    add(s, "::1", "lo6");
    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.53", &sin.sin_addr);
    assert_string_equal(cidr_set_lookup_sa(s, (struct sockaddr *)&sin)->label, "lo");
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:127.1.2.3", &sin6.sin6_addr);
    assert_string_equal(cidr_set_lookup_sa(s, (struct sockaddr *)&sin6)->label, "lo");
    inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
    assert_string_equal(cidr_set_lookup_sa(s, (struct sockaddr *)&sin6)->label, "lo6");
    inet_pton(AF_INET6, "::2", &sin6.sin6_addr);
    assert_null(cidr_set_lookup_sa(s, (struct sockaddr *)&sin6));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_null(cidr_set_lookup_sa(s, (struct sockaddr *)&sun));
    cidr_set_free(s);
}

/* xorshift64: deterministic pseudo-random prefixes. */
static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static int contains(const struct cidr *c, const uint8_t *a)
{
    for (unsigned bit = 0; bit < c->len; bit++) {
        int x = (c->addr[bit / 8] >> (7 - bit % 8)) & 1, y = (a[bit / 8] >> (7 - bit % 8)) & 1;
        if (x != y)
            return 0;
    }
    return 1;
}

/* The trie agrees with a linear longest-prefix scan on random prefixes and addresses. */
static void test_set_against_linear_scan(void **state)
{
    (void)state;
    enum { N = 600, Q = 20000 };
    struct cidr *all = calloc(N, sizeof(*all));
    assert_non_null(all);
    struct cidr_set *s = cidr_set_new();
    assert_non_null(s);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    size_t n = 0;
    for (size_t i = 0; i < N; i++) {
        struct cidr c = {.family = (rnd(&x) & 1) ? 4 : 6};
        unsigned max = c.family == 4 ? 32 : 128;
        c.len = (uint8_t)(rnd(&x) % (max + 1));
        /* Few distinct top bits, so prefixes overlap a lot; no IPv4-mapped v6 prefixes. */
        for (size_t b = 0; b < 16; b++)
            c.addr[b] = (uint8_t)(b < 2 ? (rnd(&x) & 0x81) : rnd(&x));
        if (c.family == 6)
            c.addr[0] |= 0x20;
        else
            memset(c.addr + 4, 0, 12);
        for (unsigned bit = c.len; bit < 128; bit++)
            c.addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
        char label[16];
        snprintf(label, sizeof(label), "p%zu", i);
        assert_int_equal(cidr_set_add(s, &c, label), 0);
        int dup = 0;
        for (size_t j = 0; j < n; j++)
            dup |= all[j].family == c.family && all[j].len == c.len &&
                   memcmp(all[j].addr, c.addr, 16) == 0;
        if (!dup)
            all[n++] = c;
    }
    assert_int_equal(cidr_set_count(s), n);
    for (size_t q = 0; q < Q; q++) {
        int family = (rnd(&x) & 1) ? 4 : 6;
        uint8_t a[16];
        for (size_t b = 0; b < 16; b++)
            a[b] = (uint8_t)(b < 2 ? (rnd(&x) & 0x81) : rnd(&x));
        if (family == 6)
            a[0] |= 0x20;
        /* Often probe exactly at a stored prefix, with random host bits. */
        if (q % 2 == 0) {
            const struct cidr *c = &all[rnd(&x) % n];
            family = c->family;
            for (unsigned bit = 0; bit < c->len; bit++) {
                uint8_t m = (uint8_t)(0x80u >> (bit % 8));
                a[bit / 8] = (uint8_t)((a[bit / 8] & ~m) | (c->addr[bit / 8] & m));
            }
        }
        const struct cidr *best = NULL;
        for (size_t j = 0; j < n; j++)
            if (all[j].family == family && contains(&all[j], a) &&
                (best == NULL || all[j].len > best->len))
                best = &all[j];
        const struct cidr_entry *e = cidr_set_lookup(s, family, a);
        if (best == NULL) {
            assert_null(e);
            continue;
        }
        assert_non_null(e);
        assert_int_equal(e->cidr.family, best->family);
        assert_int_equal(e->cidr.len, best->len);
        assert_memory_equal(e->cidr.addr, best->addr, 16);
    }
    cidr_set_free(s);
    free(all);
}

static char *write_temp(const char *content)
{
    char tmpl[] = "/tmp/chappe-test-cidr-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    return strdup(tmpl);
}

static void test_load_file(void **state)
{
    (void)state;
    char *path = write_temp("# sovereign ranges\n"
                            "\n"
                            "10.0.0.0/8\n"
                            "  192.0.2.0/24   # documentation\n"
                            "\t2001:db8::/32\r\n"
                            "1.2.3.4\n"
                            "::ffff:198.51.100.0/120\n"
                            "10.0.0.0/8 # again: the first label stays\n"
                            "   \n"
                            "#\n"
                            "2001:db8:5::1"); /* no final newline */
    struct cidr_set *s = cidr_set_new();
    struct buf err = BUF_INIT;
    assert_int_equal(cidr_set_load_file(s, path, &err), 0);
    assert_int_equal(err.len, 0);
    assert_int_equal(cidr_set_count(s), 6);
    char want[128];
    snprintf(want, sizeof(want), "%s:3", path);
    expect_find(s, "10.9.9.9", want);
    snprintf(want, sizeof(want), "%s:4", path);
    expect_find(s, "192.0.2.1", want);
    snprintf(want, sizeof(want), "%s:5", path);
    expect_find(s, "2001:db8::77", want);
    snprintf(want, sizeof(want), "%s:6", path);
    expect_find(s, "1.2.3.4", want);
    expect_find(s, "1.2.3.5", NULL);
    snprintf(want, sizeof(want), "%s:7", path);
    expect_find(s, "198.51.100.7", want);
    snprintf(want, sizeof(want), "%s:11", path);
    expect_find(s, "2001:db8:5::1", want);
    cidr_set_free(s);
    unlink(path);
    free(path);
    buf_free(&err);
}

static void test_load_file_errors(void **state)
{
    (void)state;
    char *path = write_temp("10.0.0.0/8\n"
                            "10.1.0.0/8\n"
                            "# fine\n"
                            "1.2.3.4 5.6.7.8\n"
                            "[::1]\n"
                            "01.2.3.4\n"
                            "fe80::1%eth0/64\n"
                            "1.2.3.4/33\n"
                            "bad\"\x01\n"
                            "192.168.0.0/16\n");
    struct cidr_set *s = cidr_set_new();
    struct buf err = BUF_INIT;
    assert_int_equal(cidr_set_load_file(s, path, &err), CH_EINVAL);
    struct buf want = BUF_INIT;
    buf_appendf(&want,
                "%s:2: invalid prefix \"10.1.0.0/8\": host bits set (did you mean 10.0.0.0/8?)\n"
                "%s:4: invalid prefix \"1.2.3.4 5.6.7.8\": whitespace not allowed\n"
                "%s:5: invalid prefix \"[::1]\": brackets not allowed\n"
                "%s:6: invalid prefix \"01.2.3.4\": leading zero in IPv4 address\n"
                "%s:7: invalid prefix \"fe80::1%%eth0/64\": zone not allowed\n"
                "%s:8: invalid prefix \"1.2.3.4/33\": prefix length out of range\n"
                "%s:9: invalid prefix \"bad\\x22\\x01\": invalid character\n",
                path, path, path, path, path, path, path);
    buf_append(&err, "", 1);
    buf_append(&want, "", 1);
    assert_string_equal(buf_data(&err), buf_data(&want));
    cidr_set_free(s);
    unlink(path);
    free(path);
    buf_free(&err);
    buf_free(&want);
}

static void test_load_file_unreadable(void **state)
{
    (void)state;
    struct cidr_set *s = cidr_set_new();
    struct buf err = BUF_INIT;
    assert_int_equal(cidr_set_load_file(s, "/nonexistent/chappe-ranges.txt", &err), CH_EIO);
    buf_append(&err, "", 1);
    assert_string_equal(buf_data(&err),
                        "/nonexistent/chappe-ranges.txt: No such file or directory\n");
    buf_reset(&err);
    assert_int_equal(cidr_set_load_file(s, "/tmp", &err), CH_EIO);
    buf_append(&err, "", 1);
    assert_string_equal(buf_data(&err), "/tmp: Is a directory\n");
    assert_int_equal(cidr_set_count(s), 0);
    /* Long lines are fine, and the quoted text in the message is cut at 64 bytes. */
    char *line = malloc(10000);
    memset(line, '1', 9998);
    line[9998] = '\n';
    line[9999] = '\0';
    char *path = write_temp(line);
    buf_reset(&err);
    assert_int_equal(cidr_set_load_file(s, path, &err), CH_EINVAL);
    buf_append(&err, "", 1);
    char want[256];
    snprintf(want, sizeof(want), "%s:1: invalid prefix \"%.64s...\": invalid IPv4 address\n", path,
             line);
    assert_string_equal(buf_data(&err), want);
    unlink(path);
    free(path);
    free(line);
    cidr_set_free(s);
    buf_free(&err);
}

static void test_format(void **state)
{
    (void)state;
    char out[64];
    struct cidr c = {.family = 4, .len = 24, .addr = {192, 0, 2, 0}};
    assert_string_equal(cidr_format(&c, out, sizeof(out)), "192.0.2.0/24");
    char small[8];
    assert_string_equal(cidr_format(&c, small, sizeof(small)), "192.0.2");
    c = prefix("2002:7f00::/24");
    assert_string_equal(cidr_format(&c, out, sizeof(out)), "2002:7f00::/24");
    c = prefix("1:2:3:4:5:6:7:8");
    assert_string_equal(cidr_format(&c, out, sizeof(out)), "1:2:3:4:5:6:7:8/128");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_host_bits),
        cmocka_unit_test(test_parse_ip),
        cmocka_unit_test(test_sockaddr_ip),
        cmocka_unit_test(test_set_longest_match),
        cmocka_unit_test(test_set_add_rules),
        cmocka_unit_test(test_set_lookup_sa),
        cmocka_unit_test(test_set_against_linear_scan),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_load_file_unreadable),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
