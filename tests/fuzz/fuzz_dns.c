/* fuzz_dns.c -- libFuzzer target: the DNS answer walker and the SRV answer path of dns.c. */
/* SPDX-License-Identifier: ISC */
/*
 * DNS answers come from the network: whoever can spoof a UDP packet writes
 * them. The target includes dns.c to reach its static parsers (the Makefile
 * links this target without dns.o) and feeds them arbitrary messages.
 */
#include "../../src/dns.c"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy in its own allocation, so that reads past the input are caught. */
    unsigned char *m = malloc(size ? size : 1);
    if (m == NULL)
        return 0;
    if (size)
        memcpy(m, data, size);
    static const uint16_t types[] = {DNS_TYPE_SRV, 1, 28};
    for (size_t i = 0; i < ARRAY_LEN(types); i++) {
        struct msg_ttls t;
        if (walk_msg(m, size, types[i], &t) == 0)
            CHECK(size >= 12);
    }
    /* The whole SRV answer path, as c-ares hands a reply over. */
    struct dns_entry *e = calloc(1, sizeof(*e) + 1);
    if (e != NULL && size <= INT_MAX) {
        srv_answer(e, ARES_SUCCESS, m, (int)size);
        if (e->status == 0) {
            CHECK(e->nsrvs > 0 && e->nsrvs <= DNS_MAX_SRV);
            for (size_t i = 0; i < e->nsrvs; i++)
                CHECK(strlen(e->srvs[i].target) < sizeof(e->srvs[i].target));
            for (size_t i = 1; i < e->nsrvs; i++)
                CHECK(e->srvs[i - 1].priority <= e->srvs[i].priority);
        }
        free(e->srvs);
    }
    free(e);
    free(m);
    return 0;
}
