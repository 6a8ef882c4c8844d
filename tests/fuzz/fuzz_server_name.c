/* fuzz_server_name.c -- libFuzzer target: server names, prefixes and addresses, and the policy. */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/buf.h"
#include "chappe/cidr.h"
#include "chappe/config.h"
#include "chappe/policy.h"
#include "chappe/util.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static struct policy *policy;

/* One policy for the whole run (still reachable at exit, so not a leak). */
static struct policy *get_policy(void)
{
    if (policy)
        return policy;
    static struct cfg_name_rule rules[] = {
        {"*.gouv.fr", "f:1:1"}, {"matrix.org", "f:2:1"}, {"example.com:8448", "f:3:1"},
        {"1.2.3.4", "f:4:1"},   {"[::1]:443", "f:5:1"},
    };
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.federation_domain_whitelist = rules;
    cfg.nfederation_domain_whitelist = sizeof(rules) / sizeof(rules[0]);
    struct buf err = BUF_INIT;
    CHECK(policy_new(&cfg, &policy, &err) == 0);
    buf_free(&err);
    return policy;
}

static int is_lower_host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':';
}

static void check_server_name(const char *in, size_t n)
{
    struct server_name sn, again;
    const char *why = NULL;
    if (server_name_parse(in, n, &sn, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        struct policy_decision d = policy_check_name_str(get_policy(), in, n);
        CHECK(!d.allow && d.reason == POLICY_INVALID_SERVER_NAME);
        return;
    }
    /* The normalised name is the input lowercased, and parses to the same thing. */
    size_t len = strnlen(sn.name, sizeof(sn.name));
    CHECK(len == n && len < sizeof(sn.name));
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        CHECK(sn.name[i] == ((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c));
    }
    size_t hl = strnlen(sn.host, sizeof(sn.host));
    CHECK(hl > 0 && hl <= SERVER_NAME_MAX);
    for (size_t i = 0; i < hl; i++)
        CHECK(is_lower_host_char((unsigned char)sn.host[i]));
    CHECK(server_name_parse(sn.name, len, &again, &why) == 0);
    CHECK(memcmp(&sn, &again, sizeof(sn)) == 0);
    CHECK((sn.type == SERVER_HOST_DNS) == (sn.family == 0));
    CHECK(sn.type != SERVER_HOST_IPV4 || sn.family == 4);
    CHECK(sn.type != SERVER_HOST_IPV6 || sn.family == 6);
    if (sn.type == SERVER_HOST_IPV6)
        CHECK((sn.port != 0) == (in[n - 1] != ']'));
    else
        CHECK((sn.port != 0) == (memchr(in, ':', n) != NULL));

    /* A wildcard allow really is a longer name under the suffix. */
    struct policy_decision d = policy_check_name(get_policy(), &sn);
    CHECK(d.allow == (d.reason == POLICY_ALLOW_NAME));
    if (d.allow && strstr(d.rule, "*.gouv.fr")) {
        CHECK(sn.type == SERVER_HOST_DNS && hl > 8);
        CHECK(memcmp(sn.host + hl - 8, ".gouv.fr", 8) == 0);
    }
    /* every decision names what decided it, a rule or the lack of one */
    CHECK(d.rule[0] != '\0');
}

static void check_cidr(const char *in, size_t n)
{
    struct cidr c, again;
    const char *why = NULL;
    if (cidr_parse(in, n, &c, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    CHECK(c.family == 4 || c.family == 6);
    CHECK(c.len <= (c.family == 4 ? 32 : 128));
    /* The text form parses back to the same prefix. */
    char text[64];
    cidr_format(&c, text, sizeof(text));
    CHECK(cidr_parse(text, strlen(text), &again, &why) == 0);
    CHECK(memcmp(&c, &again, sizeof(c)) == 0);

    /* The prefix contains its own network address, and a set finds it there. */
    struct cidr_set *s = cidr_set_new();
    CHECK(s != NULL);
    CHECK(cidr_set_add(s, &c, "x") == 0);
    const struct cidr_entry *e = cidr_set_lookup(s, c.family, c.addr);
    CHECK(e != NULL && memcmp(&e->cidr, &c, sizeof(c)) == 0);
    cidr_set_free(s);
}

static void check_ip(const char *in, size_t n)
{
    int family = 0;
    uint8_t addr[16];
    if (cidr_parse_ip(in, n, &family, addr) != 0)
        return;
    CHECK(family == 4 || family == 6);
    /* A bare address is also a full-length prefix. */
    struct cidr c;
    const char *why;
    CHECK(cidr_parse(in, n, &c, &why) == 0);
    CHECK(c.family == family && c.len == (family == 4 ? 32 : 128));
    CHECK(memcmp(c.addr, addr, family == 4 ? 4 : 16) == 0);
    struct policy_decision d = policy_check_ip(get_policy(), family, addr);
    CHECK(!d.allow); /* no sovereign range in this policy */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so ASan catches any read past the end. */
    char *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    if (size)
        memcpy(in, data, size);
    check_server_name(in, size);
    check_cidr(in, size);
    check_ip(in, size);
    free(in);
    return 0;
}
