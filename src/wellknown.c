/* wellknown.c -- read a /.well-known/matrix/server body, and how long it may be cached. */
/* SPDX-License-Identifier: ISC */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "chappe/util.h"
#include "chappe/wellknown.h"

/* RFC 9111 section 1.2.2: a delta-seconds too large to represent is taken as 2^31. */
#define DELTA_SECONDS_MAX 2147483648ull

/* The message of the last invalid m.server, per thread (wellknown_parse's *why may point here). */
static _Thread_local char why_buf[128];

int wellknown_parse(const char *body, size_t n, struct server_name *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (n > WELLKNOWN_MAX_BODY) {
        *why = "body too large";
        return CH_EINVAL;
    }
    if (body == NULL) {
        *why = "not JSON";
        return CH_EINVAL;
    }
    /* Jansson checks UTF-8 and, without JSON_ALLOW_NUL, refuses "\u0000" in strings. */
    json_error_t jerr;
    json_t *root = json_loadb(body, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        *why = "not JSON";
        return CH_EINVAL;
    }
    int rc = CH_EINVAL;
    const json_t *ms = json_object_get(root, "m.server");
    if (!json_is_object(root)) {
        *why = "not a JSON object";
    } else if (!json_is_string(ms) || strlen(json_string_value(ms)) != json_string_length(ms)) {
        *why = "no m.server string";
    } else {
        const char *s = json_string_value(ms), *swhy = NULL;
        rc = server_name_parse(s, json_string_length(ms), out, &swhy);
        if (rc) {
            snprintf(why_buf, sizeof(why_buf), "m.server is not a valid server name: %s", swhy);
            *why = why_buf;
        }
    }
    json_decref(root);
    return rc;
}

/* ---- Cache-Control (RFC 9111 section 5.2) ---- */

struct cache_control {
    bool no_store; /* no-store, or no-cache (with or without field names) */
    bool has_max_age;
    uint64_t max_age; /* seconds */
};

/* RFC 9110 section 5.6.2: tchar. */
static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/*
 * Split off the next element of a comma-separated list (RFC 9110 section
 * 5.6.1), where a comma inside a quoted-string does not split. false when the
 * list is exhausted.
 */
static bool next_element(struct slice *rest, struct slice *el)
{
    if (rest->len == 0)
        return false;
    bool quoted = false;
    size_t i = 0;
    for (; i < rest->len; i++) {
        char c = rest->base[i];
        if (quoted && c == '\\')
            i++; /* quoted-pair */
        else if (c == '"')
            quoted = !quoted;
        else if (c == ',' && !quoted)
            break;
    }
    if (i > rest->len)
        i = rest->len;
    *el = slice_trim_ows((struct slice){rest->base, i});
    size_t skip = i < rest->len ? i + 1 : i;
    rest->base += skip;
    rest->len -= skip;
    return true;
}

/* delta-seconds = 1*DIGIT, in token form or (RFC 9111 section 5.2: recipients accept both)
 * as a quoted-string. false when not that. */
static bool parse_delta_seconds(struct slice v, uint64_t *out)
{
    if (v.len >= 2 && v.base[0] == '"' && v.base[v.len - 1] == '"') {
        v.base++;
        v.len -= 2;
    }
    if (v.len == 0)
        return false;
    uint64_t s = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return false;
        if (s < DELTA_SECONDS_MAX)
            s = s * 10 + (uint64_t)(v.base[i] - '0');
    }
    *out = s < DELTA_SECONDS_MAX ? s : DELTA_SECONDS_MAX;
    return true;
}

/* One directive: token [ "=" ( token / quoted-string ) ]; malformed ones are ignored. */
static void cache_directive(struct slice el, struct cache_control *cc)
{
    size_t i = 0;
    while (i < el.len && is_tchar((unsigned char)el.base[i]))
        i++;
    struct slice name = {el.base, i}, arg = {NULL, 0};
    if (i == 0)
        return;
    if (i < el.len) {
        if (el.base[i] != '=')
            return;
        arg = (struct slice){el.base + i + 1, el.len - i - 1};
    }
    /* Qualified no-cache="field" still forbids reuse of those fields; the body is what we cache,
     * so any no-cache is taken as "do not cache". */
    if (slice_case_eq_str(name, "no-store") || slice_case_eq_str(name, "no-cache")) {
        cc->no_store = true;
    } else if (slice_case_eq_str(name, "max-age") && !cc->has_max_age) {
        uint64_t v;
        if (arg.base && parse_delta_seconds(arg, &v)) {
            cc->has_max_age = true;
            cc->max_age = v;
        }
    }
}

/* Every Cache-Control field line combines into one list (RFC 9110 section 5.3). */
static void parse_cache_control(const struct http_msg *msg, struct cache_control *cc)
{
    for (size_t f = 0; f < msg->nfields; f++) {
        if (!slice_case_eq_str(msg->fields[f].name, "cache-control"))
            continue;
        struct slice rest = msg->fields[f].value, el;
        while (next_element(&rest, &el))
            if (el.len)
                cache_directive(el, cc);
    }
}

/* ---- HTTP-date (RFC 9110 section 5.6.7) ---- */

struct cursor {
    const char *p;
    size_t n;
};

static bool eat(struct cursor *c, const char *lit)
{
    size_t l = strlen(lit);
    if (c->n < l || memcmp(c->p, lit, l) != 0)
        return false;
    c->p += l;
    c->n -= l;
    return true;
}

/* Exactly ndigits digits. */
static bool digits(struct cursor *c, size_t ndigits, int *out)
{
    if (c->n < ndigits)
        return false;
    int v = 0;
    for (size_t i = 0; i < ndigits; i++) {
        if (c->p[i] < '0' || c->p[i] > '9')
            return false;
        v = v * 10 + (c->p[i] - '0');
    }
    c->p += ndigits;
    c->n -= ndigits;
    *out = v;
    return true;
}

/* One of names (case-sensitive, as the grammar's literals); its index in *out. */
static bool one_of(struct cursor *c, const char *const *names, int count, int *out)
{
    for (int i = 0; i < count; i++) {
        if (eat(c, names[i])) {
            *out = i;
            return true;
        }
    }
    return false;
}

static const char *const day_names[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const day_names_long[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                             "Friday", "Saturday", "Sunday"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

struct date {
    int year, month, day, hour, min, sec; /* month 1..12 */
};

static bool time_of_day(struct cursor *c, struct date *d)
{
    return digits(c, 2, &d->hour) && eat(c, ":") && digits(c, 2, &d->min) && eat(c, ":") &&
           digits(c, 2, &d->sec);
}

static bool month(struct cursor *c, struct date *d)
{
    int m;
    if (!one_of(c, months, 12, &m))
        return false;
    d->month = m + 1;
    return true;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
static bool imf_fixdate(struct cursor c, struct date *d)
{
    int wd;
    return one_of(&c, day_names, 7, &wd) && eat(&c, ", ") && digits(&c, 2, &d->day) &&
           eat(&c, " ") && month(&c, d) && eat(&c, " ") && digits(&c, 4, &d->year) &&
           eat(&c, " ") && time_of_day(&c, d) && eat(&c, " GMT") && c.n == 0;
}

/*
 * rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT". A two-digit year more than
 * 50 years in the future is the most recent past year with those digits.
 */
static bool rfc850_date(struct cursor c, struct date *d, int this_year)
{
    int wd, yy;
    if (!(one_of(&c, day_names_long, 7, &wd) && eat(&c, ", ") && digits(&c, 2, &d->day) &&
          eat(&c, "-") && month(&c, d) && eat(&c, "-") && digits(&c, 2, &yy) && eat(&c, " ") &&
          time_of_day(&c, d) && eat(&c, " GMT") && c.n == 0))
        return false;
    d->year = this_year - this_year % 100 + yy;
    if (d->year > this_year + 50)
        d->year -= 100;
    else if (d->year <= this_year - 50)
        d->year += 100;
    return true;
}

/* asctime-date: "Sun Nov  6 08:49:37 1994" (the day is two digits or SP DIGIT). */
static bool asctime_date(struct cursor c, struct date *d)
{
    int wd;
    if (!(one_of(&c, day_names, 7, &wd) && eat(&c, " ") && month(&c, d) && eat(&c, " ")))
        return false;
    if (!(eat(&c, " ") ? digits(&c, 1, &d->day) : digits(&c, 2, &d->day)))
        return false;
    return eat(&c, " ") && time_of_day(&c, d) && eat(&c, " ") && digits(&c, 4, &d->year) &&
           c.n == 0;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static bool date_valid(const struct date *d)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int dim = mdays[d->month - 1] + (d->month == 2 && is_leap(d->year));
    /* RFC 9110 allows second 60 (a leap second). */
    return d->day >= 1 && d->day <= dim && d->hour <= 23 && d->min <= 59 && d->sec <= 60;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* An HTTP-date in any of its three forms, as ms since the epoch. false when invalid. */
static bool parse_http_date(struct slice v, uint64_t now_ms, int64_t *out_ms)
{
    struct cursor c = {v.base, v.len};
    struct date d = {0};
    time_t now_s = (time_t)(now_ms / 1000);
    struct tm tm;
    int this_year = gmtime_r(&now_s, &tm) ? tm.tm_year + 1900 : 1970;
    if (!imf_fixdate(c, &d) && !rfc850_date(c, &d, this_year) && !asctime_date(c, &d))
        return false;
    if (!date_valid(&d))
        return false;
    int64_t secs =
        days_from_civil(d.year, d.month, d.day) * 86400 + d.hour * 3600 + d.min * 60 + d.sec;
    *out_ms = secs * 1000;
    return true;
}

/*
 * Expires (RFC 9111 section 5.3): an invalid date, or more than one field
 * line, counts as already expired.
 */
static uint64_t expires_ms(const struct http_msg *msg, uint64_t now_ms, bool *present)
{
    const struct http_field *found = NULL;
    size_t count = 0;
    for (size_t f = 0; f < msg->nfields; f++) {
        if (slice_case_eq_str(msg->fields[f].name, "expires")) {
            found = &msg->fields[f];
            count++;
        }
    }
    *present = count > 0;
    int64_t at;
    if (count != 1 || !parse_http_date(found->value, now_ms, &at))
        return 0;
    return at > 0 && (uint64_t)at > now_ms ? (uint64_t)at - now_ms : 0;
}

uint64_t wellknown_cache_ms(const struct http_msg *msg, uint64_t now_ms, uint64_t def_ms,
                            uint64_t max_ms)
{
    struct cache_control cc = {0};
    uint64_t ms = def_ms;
    bool has_expires;
    parse_cache_control(msg, &cc);
    if (cc.no_store) {
        ms = 0;
    } else if (cc.has_max_age) {
        ms = cc.max_age * 1000; /* at most 2^31 s: no overflow */
    } else {
        uint64_t e = expires_ms(msg, now_ms, &has_expires);
        if (has_expires)
            ms = e;
    }
    return ms < max_ms ? ms : max_ms;
}
