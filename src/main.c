/* main.c -- the chappe command line: run, check-config, keygen. */
/* SPDX-License-Identifier: ISC */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "chappe/admin.h"
#include "chappe/b64.h"
#include "chappe/cidr.h"
#include "chappe/cjson.h"
#include "chappe/cli_queue.h"
#include "chappe/client.h"
#include "chappe/config.h"
#include "chappe/keydoc.h"
#include "chappe/keys.h"
#include "chappe/keystore.h"
#include "chappe/log.h"
#include "chappe/egress.h"
#include "chappe/inbound.h"
#include "chappe/keyfetch.h"
#include "chappe/mint.h"
#include "chappe/policy.h"
#include "chappe/trust.h"
#include "chappe/resolve.h"
#include "chappe/sender.h"
#include "chappe/sign.h"
#include "chappe/store.h"
#include "chappe/tls.h"
#include "chappe/util.h"
#include "chappe/worker.h"

#ifndef CHAPPE_VERSION
#define CHAPPE_VERSION "0.1.0"
#endif

static const char usage_text[] =
    "usage: chappe <command> [options]\n"
    "\n"
    "commands:\n"
    "  run [-c FILE]            run the relay in the foreground (default "
    "config: " CONFIG_DEFAULT_PATH ")\n"
    "  check-config [-c FILE]   print the effective configuration, or every error as "
    "FILE:LINE:COL\n"
    "  keygen [-o FILE]         make a new ed25519 signing key (Synapse format; 0600, never "
    "overwrites)\n"
    "  key public --key FILE    print each key's id and unpadded base64 public key\n"
    "  policy check NAME|IP [-c FILE]\n"
    "                           resolve NAME as the relay would and explain every policy\n"
    "                           decision; exit 0 allow, 1 deny\n"
    "  fed-request [-c FILE] [--key FILE] [--origin NAME] METHOD DEST PATH [BODY]\n"
    "                           send an X-Matrix signed request to server DEST (BODY: JSON,\n"
    "                           - for stdin); exit 0 when a response came back\n"
    "  keys fetch NAME [-c FILE] fetch, validate and store server NAME's signing keys\n"
    "  queue list|show DEST|retry DEST [-c FILE] [--json]\n"
    "  queue dead [show|requeue|delete ID] [-c FILE] [--json]\n"
    "                             the outbound queue in queue.path (also while chappe runs)\n"
    "  keys list [NAME] [-c FILE] the remote keys stored in queue.path\n"
    "  json canonical           canonical JSON of stdin on stdout (errors name the JSON path)\n"
    "  json sign --key FILE --server-name NAME\n"
    "                           sign the JSON object on stdin with the first key of FILE\n"
    "  json verify --server-name NAME --key-id ID --public-key B64\n"
    "                           exit 0 when signatures.NAME.ID of stdin verifies, 1 otherwise\n"
    "  --version                print the version\n"
    "  --help                   this text; `chappe <command> --help` for one command\n"
    "\n"
    "signals (run): SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the TLS certificates\n";

static int usage(FILE *f, int status)
{
    fputs(usage_text, f);
    return status;
}

/* Options of every command; each command says which it takes. */
struct opts {
    const char *config, *output, *key, *server_name, *key_id, *public_key, *origin;
    int npos; /* positional arguments left in argv[optind..] (commands that take them) */
    char **pos;
};

/*
 * Parse the options in allowed (their letters: c config, o output, k key,
 * s server-name, i key-id, p public-key, O origin). 0, 1 for --help, 2 for a
 * usage error. Positional arguments are a usage error unless o->pos is wanted
 * (npos set to -1 by the caller): then they are left in o->pos / o->npos.
 */
static int parse_opts(int argc, char **argv, const char *allowed, struct opts *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"output", required_argument, NULL, 'o'},
        {"key", required_argument, NULL, 'k'},
        {"server-name", required_argument, NULL, 's'},
        {"key-id", required_argument, NULL, 'i'},
        {"public-key", required_argument, NULL, 'p'},
        {"origin", required_argument, NULL, 'O'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool want_pos = o->npos < 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:o:h", longopts, NULL)) != -1) {
        if (ch == 'h')
            return 1;
        if (ch == '?' || strchr(allowed, ch) == NULL)
            return 2;
        const char **slot = ch == 'c'   ? &o->config
                            : ch == 'o' ? &o->output
                            : ch == 'k' ? &o->key
                            : ch == 's' ? &o->server_name
                            : ch == 'i' ? &o->key_id
                            : ch == 'p' ? &o->public_key
                                        : &o->origin;
        *slot = optarg;
    }
    if (want_pos) {
        o->pos = argv + optind;
        o->npos = argc - optind;
        return 0;
    }
    return optind == argc ? 0 : 2;
}

static int load_config(const char *path, struct config **cfg)
{
    struct buf err = BUF_INIT;
    int rc = config_load(path, cfg, &err);
    if (rc < 0) {
        fwrite(buf_data(&err), 1, err.len, stderr);
        if (err.len == 0)
            fprintf(stderr, "%s: %s\n", path, util_strerror(rc));
        fprintf(stderr, "chappe: %s: configuration is not valid\n", path);
    }
    buf_free(&err);
    return rc;
}

static void print_errors(const char *cmd, const struct buf *err);

/* Build the policy once to check its list files. 0 or a negative code (errors printed). */
static int check_policy(const char *cmd, const struct config *cfg)
{
    struct buf err = BUF_INIT;
    struct policy *pol = NULL;
    int rc = policy_new(cfg, &pol, &err);
    if (rc < 0)
        print_errors(cmd, &err);
    else
        policy_unref(pol);
    buf_free(&err);
    return rc;
}

static bool has_listener(const struct config *cfg, enum listener_type type)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (cfg->listeners[i].type == type)
            return true;
    return false;
}

static int cmd_check_config(int argc, char **argv)
{
    struct opts opt = {.config = CONFIG_DEFAULT_PATH};
    int o = parse_opts(argc, argv, "c", &opt);
    if (o)
        return o == 1 ? usage(stdout, 0) : usage(stderr, 2);
    const char *path = opt.config;
    struct config *cfg = NULL;
    if (load_config(path, &cfg) < 0)
        return 1;
    /* the policy's list files are part of the configuration, and so are the egress secrets */
    int status = check_policy("check-config", cfg) == 0 ? 0 : 1;
    if (has_listener(cfg, LISTENER_EGRESS)) {
        struct egress_secrets secrets;
        struct buf err = BUF_INIT;
        if (egress_secrets_load(cfg, &secrets, &err) < 0) {
            print_errors("check-config", &err);
            status = 1;
        } else {
            egress_secrets_free(&secrets);
        }
        buf_free(&err);
    }
    if (status == 0)
        config_print(cfg, stdout);
    else
        fprintf(stderr, "chappe: %s: configuration is not valid\n", path);
    config_free(cfg);
    return status;
}

static int cmd_keygen(int argc, char **argv)
{
    struct opts opt = {0};
    int o = parse_opts(argc, argv, "o", &opt);
    if (o)
        return o == 1 ? usage(stdout, 0) : usage(stderr, 2);
    const char *path = opt.output;
    if (path == NULL) {
        struct buf b = BUF_INIT;
        int rc = sign_keygen(&b);
        if (rc == 0)
            fwrite(buf_data(&b), 1, b.len, stdout);
        buf_free_secret(&b);
        return rc == 0 ? 0 : 1;
    }
    const char *why = NULL;
    if (sign_keygen_file(path, &why) < 0) {
        fprintf(stderr, "chappe keygen: %s: %s\n", path, why);
        return 1;
    }
    fprintf(stderr, "chappe keygen: wrote %s (mode 0600)\n", path);
    return 0;
}

/* --- json and key tools ----------------------------------------------------------------- */

/* Read all of stdin (at most 64 MiB). 0 or a negative code. */
static int read_stdin(struct buf *b)
{
    for (;;) {
        if (buf_reserve(b, 65536) < 0)
            return CH_ENOMEM;
        ssize_t n = read(STDIN_FILENO, buf_tail(b), buf_avail(b));
        if (n < 0)
            return CH_EIO;
        if (n == 0)
            return 0;
        buf_commit(b, (size_t)n);
        if (b->len > 64u << 20)
            return CH_ETOOBIG;
    }
}

/* Print err (lines) to stderr, each prefixed with the command. */
static void print_errors(const char *cmd, const struct buf *err)
{
    const char *p = buf_data(err), *end = p + err->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        fprintf(stderr, "chappe %s: %.*s\n", cmd, (int)n, p);
        p += n + (nl ? 1 : 0);
    }
}

static int json_from_stdin(const char *cmd, json_t **out)
{
    struct buf in = BUF_INIT, err = BUF_INIT;
    int rc = read_stdin(&in);
    if (rc < 0)
        fprintf(stderr, "chappe %s: cannot read stdin: %s\n", cmd, util_strerror(rc));
    else if ((rc = cjson_parse(buf_data(&in), in.len, out, &err)) < 0)
        print_errors(cmd, &err);
    buf_free(&in);
    buf_free(&err);
    return rc;
}

static int write_json(const char *cmd, const json_t *v)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    int rc = cjson_encode(v, &out, &err);
    if (rc < 0)
        print_errors(cmd, &err);
    else if (fwrite(buf_data(&out), 1, out.len, stdout) != out.len || fflush(stdout) != 0)
        rc = CH_EIO;
    buf_free(&out);
    buf_free(&err);
    return rc;
}

static int load_key_file(const char *cmd, const char *path, struct sign_key **keys, size_t *n)
{
    struct buf err = BUF_INIT;
    int rc = sign_load_keys(path, keys, n, &err);
    if (rc == 0 && *n == 0) {
        buf_appendf(&err, "%s: no key in the file", path);
        sign_keys_free(*keys, *n);
        rc = CH_EINVAL;
    }
    if (rc < 0)
        print_errors(cmd, &err);
    buf_free(&err);
    return rc;
}

static int json_sign(const struct opts *o)
{
    if (o->key == NULL || o->server_name == NULL) {
        fprintf(stderr, "chappe json sign: --key FILE and --server-name NAME are required\n");
        return 2;
    }
    struct sign_key *keys = NULL;
    size_t n = 0;
    if (load_key_file("json sign", o->key, &keys, &n) < 0)
        return 1;
    int status = 1;
    json_t *v = NULL;
    struct buf err = BUF_INIT;
    if (json_from_stdin("json sign", &v) == 0) {
        if (sign_json(v, o->server_name, &keys[0], &err) < 0)
            print_errors("json sign", &err);
        else if (write_json("json sign", v) == 0)
            status = 0;
    }
    json_decref(v);
    buf_free(&err);
    sign_keys_free(keys, n);
    return status;
}

static int json_verify(const struct opts *o)
{
    if (o->server_name == NULL || o->key_id == NULL || o->public_key == NULL) {
        fprintf(stderr, "chappe json verify: --server-name, --key-id and --public-key are "
                        "required\n");
        return 2;
    }
    struct buf pk = BUF_INIT, err = BUF_INIT;
    json_t *v = NULL;
    int status = 1;
    if (b64_decode(&pk, o->public_key, strlen(o->public_key)) < 0 ||
        pk.len != crypto_sign_PUBLICKEYBYTES) {
        fprintf(stderr, "chappe json verify: --public-key: not the base64 of a 32-byte ed25519 "
                        "key\n");
        status = 2;
    } else if (json_from_stdin("json verify", &v) == 0) {
        if (sign_verify_json(v, o->server_name, o->key_id, (const unsigned char *)buf_data(&pk),
                             &err) == 0) {
            fprintf(stderr, "chappe json verify: signature %s of %s verifies\n", o->key_id,
                    o->server_name);
            status = 0;
        } else {
            print_errors("json verify", &err);
        }
    }
    json_decref(v);
    buf_free(&pk);
    buf_free(&err);
    return status;
}

static int cmd_json(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    const char *sub = argv[1];
    struct opts o = {0};
    int po = parse_opts(argc - 1, argv + 1, "ksip", &o);
    if (po)
        return po == 1 ? usage(stdout, 0) : usage(stderr, 2);
    if (strcmp(sub, "canonical") == 0) {
        json_t *v = NULL;
        int rc = json_from_stdin("json canonical", &v);
        if (rc == 0)
            rc = write_json("json canonical", v);
        json_decref(v);
        return rc == 0 ? 0 : 1;
    }
    if (strcmp(sub, "sign") == 0)
        return json_sign(&o);
    if (strcmp(sub, "verify") == 0)
        return json_verify(&o);
    fprintf(stderr, "chappe json: unknown subcommand '%s' (canonical, sign, verify)\n", sub);
    return 2;
}

static int cmd_key(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "public") != 0) {
        fprintf(stderr, "chappe key: expected 'public --key FILE'\n");
        return 2;
    }
    struct opts o = {0};
    int po = parse_opts(argc - 1, argv + 1, "ksip", &o);
    if (po)
        return po == 1 ? usage(stdout, 0) : usage(stderr, 2);
    if (o.key == NULL) {
        fprintf(stderr, "chappe key public: --key FILE is required\n");
        return 2;
    }
    struct sign_key *keys = NULL;
    size_t n = 0;
    if (load_key_file("key public", o.key, &keys, &n) < 0)
        return 1;
    struct buf out = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        buf_appendf(&out, "%s ", keys[i].id);
        sign_public_b64(&keys[i], &out);
        buf_append(&out, "\n", 1);
    }
    fwrite(buf_data(&out), 1, out.len, stdout);
    buf_free(&out);
    sign_keys_free(keys, n);
    return 0;
}

/* --- policy check and fed-request ------------------------------------------------------ */

/* The outbound stack of one CLI command, on its own loop (not a worker's). */
struct outbound {
    uv_loop_t loop;
    struct policy *pol;
    struct dns *dns;
    struct client *cl;
    struct resolve *res;
};

static int outbound_open(const char *cmd, const struct config *cfg, struct outbound *ob)
{
    struct buf err = BUF_INIT;
    int rc;
    memset(ob, 0, sizeof(*ob));
    uv_loop_init(&ob->loop);
    if ((rc = policy_new(cfg, &ob->pol, &err)) == 0 &&
        (rc = dns_new(&ob->loop, cfg, &ob->dns, &err)) == 0 &&
        (rc = client_new(&ob->loop, cfg, ob->pol, &ob->cl, &err)) == 0)
        rc = resolve_new(&ob->loop, cfg, ob->cl, ob->dns, &ob->res);
    if (rc < 0) {
        if (err.len == 0)
            buf_appendf(&err, "%s", util_strerror(rc));
        print_errors(cmd, &err);
    }
    buf_free(&err);
    return rc;
}

static void outbound_close(struct outbound *ob)
{
    if (ob->res != NULL)
        resolve_free(ob->res);
    if (ob->cl != NULL)
        client_free(ob->cl);
    if (ob->dns != NULL)
        dns_free(ob->dns);
    uv_run(&ob->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ob->loop);
    if (ob->pol != NULL)
        policy_unref(ob->pol);
}

static void warn_policy(const struct config *cfg)
{
    if (cfg->sovereign_ranges.any)
        log_warn("sovereign_ranges is `any`: outbound addresses are not checked for sovereignty");
    if (cfg->federation_any)
        log_warn("federation_domain_whitelist is `any`: every server name is allowed");
    if (!cfg->federation_verify_certificates)
        log_warn("federation_verify_certificates is false: remote certificates are NOT verified");
}

static void trace_stdout(void *ud, const char *line)
{
    (void)ud;
    printf("%s\n", line);
    fflush(stdout);
}

static void trace_stderr(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "%s\n", line);
}

struct check_state {
    int status; /* exit status */
};

static void on_checked(void *ud, const struct resolve_result *res)
{
    struct check_state *st = ud;
    if (res->status == 0) {
        printf("decision: allow\n");
        st->status = 0;
    } else {
        printf("decision: deny %s\n", res->reason ? res->reason : "error");
        fprintf(stderr, "chappe policy check: %s\n", res->why);
        st->status = 1;
    }
}

static int cmd_policy(int argc, char **argv)
{
    struct opts opt = {.config = CONFIG_DEFAULT_PATH, .npos = -1};
    if (argc < 2 || strcmp(argv[1], "check") != 0) {
        fprintf(stderr, "chappe policy: expected 'check NAME|IP [-c FILE]'\n");
        return 2;
    }
    int o = parse_opts(argc - 1, argv + 1, "c", &opt);
    if (o)
        return o == 1 ? usage(stdout, 0) : usage(stderr, 2);
    if (opt.npos != 1) {
        fprintf(stderr, "chappe policy check: expected one server name or IP address\n");
        return 2;
    }
    const char *arg = opt.pos[0];
    struct config *cfg = NULL;
    if (load_config(opt.config, &cfg) < 0)
        return 2;
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    warn_policy(cfg);
    struct outbound ob;
    struct check_state st = {.status = 1};
    if (outbound_open("policy check", cfg, &ob) < 0) {
        st.status = 2;
        goto out;
    }
    int family;
    uint8_t ip[16];
    if (cidr_parse_ip(arg, strlen(arg), &family, ip) == 0) {
        /* a bare address: the address rules only */
        struct policy_decision d = policy_check_ip(ob.pol, family, ip);
        printf("address %s: %s%s%s (%s)\n", arg, d.allow ? "allow" : "deny ",
               d.allow ? "" : policy_reason_code(d.reason), "", d.rule);
        printf("decision: %s%s\n", d.allow ? "allow" : "deny ",
               d.allow ? "" : policy_reason_code(d.reason));
        st.status = d.allow ? 0 : 1;
        goto out;
    }
    printf("check %s\n", arg);
    if (resolve_server(ob.res, arg, on_checked, trace_stdout, &st) == NULL) {
        fprintf(stderr, "chappe policy check: out of memory\n");
        goto out;
    }
    uv_run(&ob.loop, UV_RUN_DEFAULT);
out:
    outbound_close(&ob);
    config_free(cfg);
    return st.status;
}

struct fed_state {
    int status;
};

static void fed_on_connected(void *ud, const struct client_target *t, bool reused)
{
    char a[64];
    (void)ud;
    fprintf(stderr, "connected %s host=%s tls=%s%s\n",
            client_format_addr((const struct sockaddr *)&t->addr, a, sizeof(a)), t->host,
            t->tls_name, reused ? " (reused)" : "");
}

static int fed_on_head(void *ud, const struct http_msg *msg)
{
    (void)ud;
    printf("HTTP/%u.%u %d %.*s\n", msg->http_major, msg->http_minor, msg->status,
           (int)msg->reason.len, msg->reason.base);
    for (size_t i = 0; i < msg->nfields; i++)
        printf("%.*s: %.*s\n", (int)msg->fields[i].name.len, msg->fields[i].name.base,
               (int)msg->fields[i].value.len, msg->fields[i].value.base);
    printf("\n");
    return 0;
}

static int fed_on_body(void *ud, const char *p, size_t n)
{
    (void)ud;
    return fwrite(p, 1, n, stdout) == n ? 0 : CH_EIO;
}

static void fed_on_complete(void *ud)
{
    struct fed_state *st = ud;
    fflush(stdout);
    st->status = 0;
}

static void fed_on_error(void *ud, int err, const char *why, bool sent)
{
    struct fed_state *st = ud;
    (void)sent;
    fflush(stdout);
    fprintf(stderr, "error: %s (%s)\n", why, util_strerror(err));
    st->status = 1;
}

static const struct client_handler fed_handler = {
    .on_connected = fed_on_connected,
    .on_head = fed_on_head,
    .on_body = fed_on_body,
    .on_complete = fed_on_complete,
    .on_error = fed_on_error,
};

/* An HTTP method token (RFC 9110 section 9.1), upper case as federation uses them. */
static bool valid_method(const char *m)
{
    if (*m == '\0' || strlen(m) > 16)
        return false;
    for (; *m; m++)
        if (*m < 'A' || *m > 'Z')
            return false;
    return true;
}

/* An origin-form target: "/" then visible ASCII only (no space, no control byte). */
static bool valid_target(const char *t)
{
    if (t[0] != '/')
        return false;
    for (; *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
            return false;
    return true;
}

static int cmd_fed_request(int argc, char **argv)
{
    struct opts opt = {.config = CONFIG_DEFAULT_PATH, .npos = -1};
    int o = parse_opts(argc, argv, "ckO", &opt);
    if (o)
        return o == 1 ? usage(stdout, 0) : usage(stderr, 2);
    if (opt.npos < 3 || opt.npos > 4) {
        fprintf(stderr, "chappe fed-request: expected METHOD DEST PATH [BODY]\n");
        return 2;
    }
    const char *method = opt.pos[0], *dest = opt.pos[1], *path = opt.pos[2];
    const char *body = opt.npos == 4 ? opt.pos[3] : NULL;
    if (!valid_method(method) || !valid_target(path)) {
        fprintf(stderr, "chappe fed-request: METHOD must be upper-case letters and PATH start "
                        "with / and hold no space or control character\n");
        return 2;
    }
    struct config *cfg = NULL;
    if (load_config(opt.config, &cfg) < 0)
        return 2;
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    warn_policy(cfg);
    const char *key_path = opt.key ? opt.key : cfg->signing_key_path;
    const char *origin = opt.origin ? opt.origin : cfg->server_name;
    struct fed_state st = {.status = 2};
    struct sign_key *keys = NULL;
    size_t nkeys = 0;
    json_t *content = NULL;
    struct buf in = BUF_INIT, auth = BUF_INIT, hdr = BUF_INIT, err = BUF_INIT;
    struct outbound ob = {0};
    bool ob_open = false;
    if (key_path == NULL) {
        fprintf(stderr, "chappe fed-request: no key: give --key FILE or signing_key_path\n");
        goto out;
    }
    if (load_key_file("fed-request", key_path, &keys, &nkeys) < 0)
        goto out;
    if (body != NULL && strcmp(body, "-") == 0) {
        if (read_stdin(&in) < 0) {
            fprintf(stderr, "chappe fed-request: cannot read the body from stdin\n");
            goto out;
        }
    } else if (body != NULL) {
        buf_append(&in, body, strlen(body));
    }
    if (body != NULL && cjson_parse(buf_data(&in), in.len, &content, &err) < 0) {
        print_errors("fed-request: BODY", &err);
        goto out;
    }
    if (sign_request(&auth, &keys[0], method, path, origin, dest, content, &err) < 0) {
        print_errors("fed-request", &err);
        goto out;
    }
    buf_appendf(&hdr, "Authorization: %.*s\r\n", (int)auth.len, buf_data(&auth));
    if (body != NULL)
        buf_appendf(&hdr, "Content-Type: application/json\r\n");
    buf_append(&hdr, "", 1); /* NUL-terminate for client_request.headers */
    ob_open = true;          /* outbound_close undoes whatever part of the opening succeeded */
    if (outbound_open("fed-request", cfg, &ob) < 0)
        goto out;
    struct client_request req = {
        .method = method,
        .target = path,
        .headers = buf_data(&hdr),
        .body = body != NULL ? buf_data(&in) : NULL,
        .body_len = in.len,
    };
    st.status = 1;
    if (resolve_request(ob.res, dest, &req, &fed_handler, trace_stderr, &st) == NULL) {
        fprintf(stderr, "chappe fed-request: out of memory\n");
        goto out;
    }
    uv_run(&ob.loop, UV_RUN_DEFAULT);
out:
    if (ob_open)
        outbound_close(&ob);
    json_decref(content);
    sign_keys_free(keys, nkeys);
    buf_free(&in);
    buf_free(&auth);
    buf_free(&hdr);
    buf_free(&err);
    config_free(cfg);
    return st.status;
}

/* --- keys: remote servers' verify keys in the store ---------------------------------- */

#define KEYDOC_BODY_MAX (64 * 1024) /* a key document is a few hundred bytes */

struct fetch_state {
    const char *name;
    int status;      /* exit status */
    int http_status; /* of the response */
    struct buf body;
    bool too_big;
};

static int kf_on_head(void *ud, const struct http_msg *msg)
{
    struct fetch_state *st = ud;
    st->http_status = msg->status;
    return 0;
}

static int kf_on_body(void *ud, const char *p, size_t n)
{
    struct fetch_state *st = ud;
    if (st->body.len + n > KEYDOC_BODY_MAX) {
        st->too_big = true;
        return CH_ETOOBIG;
    }
    return buf_append(&st->body, p, n) == 0 ? 0 : CH_ENOMEM;
}

static void kf_on_complete(void *ud)
{
    struct fetch_state *st = ud;
    st->status = 0;
}

static void kf_on_error(void *ud, int err, const char *why, bool sent)
{
    struct fetch_state *st = ud;
    (void)sent;
    if (st->too_big)
        fprintf(stderr, "chappe keys fetch: %s: key document larger than %d KiB\n", st->name,
                KEYDOC_BODY_MAX / 1024);
    else
        fprintf(stderr, "chappe keys fetch: %s: %s (%s)\n", st->name, why, util_strerror(err));
    st->status = 1;
}

static const struct client_handler kf_handler = {
    .on_head = kf_on_head,
    .on_body = kf_on_body,
    .on_complete = kf_on_complete,
    .on_error = kf_on_error,
};

static int open_store(const char *cmd, const struct config *cfg, struct store **s)
{
    struct buf err = BUF_INIT;
    int rc = store_open(cfg->queue.path, 0, 0, s, &err);
    if (rc < 0)
        print_errors(cmd, &err);
    buf_free(&err);
    return rc;
}

/* "2026-11-26T15:04:05Z" for a time in ms since the epoch. */
static const char *iso_ms(uint64_t ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return out;
}

static void print_key(const char *server, const struct keystore_key *k)
{
    char until[32], fetched[32], expired[32];
    struct buf pk = BUF_INIT;
    b64_encode(&pk, k->public_key, sizeof(k->public_key));
    printf("%s %s %.*s valid_until=%s fetched=%s source=%s%s%s%s", server, k->key_id, (int)pk.len,
           buf_data(&pk), iso_ms(k->valid_until_ts, until, sizeof(until)),
           iso_ms(k->fetched_at, fetched, sizeof(fetched)), keystore_source_name(k->source),
           k->notary[0] ? ":" : "", k->notary, k->expired_ts ? " expired=" : "");
    printf("%s\n", k->expired_ts ? iso_ms(k->expired_ts, expired, sizeof(expired)) : "");
    buf_free(&pk);
}

/* Pinned keys are the operator's: shown, never fetched nor stored. */
static void print_pins(const struct cfg_pinned *pin)
{
    for (size_t i = 0; i < pin->nkeys; i++) {
        struct buf pk = BUF_INIT;
        b64_encode(&pk, pin->keys[i].pk, sizeof(pin->keys[i].pk));
        printf("%s %s %.*s source=pinned (%s)\n", pin->server_name, pin->keys[i].id, (int)pk.len,
               buf_data(&pk), pin->keys[i].label);
        buf_free(&pk);
    }
}

static const struct cfg_pinned *find_pin(const struct config *cfg, const char *name)
{
    struct server_name sn;
    const char *why;
    if (server_name_parse(name, strlen(name), &sn, &why) != 0)
        return NULL;
    for (size_t i = 0; i < cfg->npinned_keys; i++)
        if (strcmp(cfg->pinned_keys[i].server_name, sn.name) == 0)
            return &cfg->pinned_keys[i];
    return NULL;
}

/* One request through the outbound stack, the response body kept (at most 64 KiB). 0 or 1. */
static int fetch_body(struct outbound *ob, const char *dest, const struct client_request *req,
                      struct fetch_state *st)
{
    buf_reset(&st->body);
    st->http_status = 0;
    st->too_big = false;
    st->status = 1;
    if (resolve_request(ob->res, dest, req, &kf_handler, trace_stderr, st) == NULL) {
        fprintf(stderr, "chappe keys fetch: out of memory\n");
        return 1;
    }
    uv_run(&ob->loop, UV_RUN_DEFAULT);
    if (st->status == 0 && st->http_status != 200) {
        fprintf(stderr, "chappe keys fetch: %s answered HTTP %d\n", dest, st->http_status);
        st->status = 1;
    }
    return st->status;
}

static int store_doc(struct store *s, const char *name, const char *notary,
                     const struct keydoc *doc, struct slice json, uint64_t now)
{
    struct keyfetch_doc_write w = {doc, name, notary, now, json};
    int rc = store_write_now(s, keyfetch_write_doc, &w);
    if (rc < 0) {
        fprintf(stderr, "chappe keys fetch: %s: cannot store the keys: %s\n", store_path(s),
                util_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < doc->nkeys; i++) {
        struct keystore_key k;
        if (keystore_get(s, name, doc->keys[i].id, &k) == 0)
            print_key(name, &k);
    }
    return 0;
}

/* Ask one notary (trusted_key_servers) for name's keys: POST /_matrix/key/v2/query. 0 or 1. */
static int fetch_via_notary(struct outbound *ob, struct store *s, const struct cfg_notary *nt,
                            const char *name, struct fetch_state *st)
{
    struct buf q = BUF_INIT, err = BUF_INIT, json = BUF_INIT;
    struct keydoc_key keys[8];
    struct keydoc *docs = NULL;
    size_t ndocs = 0, nkeys = nt->nkeys < 8 ? nt->nkeys : 8;
    int status = 1;
    for (size_t i = 0; i < nkeys; i++) {
        memset(&keys[i], 0, sizeof(keys[i]));
        snprintf(keys[i].id, sizeof(keys[i].id), "%s", nt->keys[i].id);
        memcpy(keys[i].pk, nt->keys[i].pk, sizeof(keys[i].pk));
    }
    struct keydoc_notary notary = {nt->server_name, keys, nkeys};
    buf_append_str(&q, "{\"server_keys\":{");
    cjson_append_string(&q, name, strlen(name));
    buf_append_str(&q, ":{}}}");
    struct client_request req = {.method = "POST",
                                 .target = "/_matrix/key/v2/query",
                                 .headers = "Content-Type: application/json\r\n",
                                 .body = buf_data(&q),
                                 .body_len = q.len};
    fprintf(stderr, "notary %s: asking for %s\n", nt->server_name, name);
    if (fetch_body(ob, nt->server_name, &req, st) != 0)
        goto out;
    uint64_t now = util_wall_ms();
    if (keydoc_parse_query_response(buf_data(&st->body), st->body.len, name, &notary, now, &docs,
                                    &ndocs, &err) < 0) {
        print_errors("keys fetch: notary answer refused", &err);
        goto out;
    }
    /* the document valid the longest is the one kept */
    size_t best = 0;
    for (size_t i = 1; i < ndocs; i++)
        if (docs[i].valid_until_ts > docs[best].valid_until_ts)
            best = i;
    if (cjson_encode(docs[best].doc, &json, &err) < 0) {
        print_errors("keys fetch", &err);
        goto out;
    }
    status = store_doc(s, name, nt->server_name, &docs[best], buf_slice(&json), now);
out:
    keydoc_free_array(docs, ndocs);
    buf_free(&q);
    buf_free(&err);
    buf_free(&json);
    return status;
}

/*
 * Synapse's order: the notaries of trusted_key_servers first, then the server
 * itself. A pinned server is never fetched.
 */
static int keys_fetch(const struct config *cfg, const char *name)
{
    struct outbound ob;
    struct store *s = NULL;
    struct fetch_state st = {.name = name, .status = 2, .body = BUF_INIT};
    struct buf err = BUF_INIT;
    struct keydoc doc = {0};
    bool have_doc = false, ob_open = false;
    int status = 1;
    const struct cfg_pinned *pin = find_pin(cfg, name);
    if (pin != NULL) {
        print_pins(pin);
        fprintf(stderr, "chappe keys fetch: %s: keys pinned in %s, never fetched\n", name,
                cfg->path);
        return 0;
    }
    if (open_store("keys fetch", cfg, &s) < 0)
        return 2;
    ob_open = true;
    if (outbound_open("keys fetch", cfg, &ob) < 0) {
        status = 2;
        goto out;
    }
    for (size_t i = 0; i < cfg->ntrusted_key_servers; i++)
        if (fetch_via_notary(&ob, s, &cfg->trusted_key_servers[i], name, &st) == 0) {
            status = 0;
            goto out;
        }
    struct client_request req = {.method = "GET", .target = "/_matrix/key/v2/server"};
    if (fetch_body(&ob, name, &req, &st) != 0)
        goto out;
    uint64_t now = util_wall_ms();
    if (keydoc_parse(buf_data(&st.body), st.body.len, name, now, &doc, &err) < 0) {
        print_errors("keys fetch: refused", &err);
        goto out;
    }
    have_doc = true;
    status = store_doc(s, name, NULL, &doc, buf_slice(&st.body), now);
out:
    if (ob_open)
        outbound_close(&ob);
    if (have_doc)
        keydoc_free(&doc);
    buf_free(&st.body);
    buf_free(&err);
    store_close(s);
    return status;
}

static int list_one(void *ud, const char *server, const struct keystore_key *k, int status)
{
    size_t *n = ud;
    if (status != 0)
        printf("%s %s (malformed record)\n", server, k->key_id);
    else
        print_key(server, k);
    (*n)++;
    return 0;
}

static int cmd_keys(int argc, char **argv)
{
    struct opts opt = {.config = CONFIG_DEFAULT_PATH, .npos = -1};
    const char *sub = argc >= 2 ? argv[1] : "";
    bool fetch = strcmp(sub, "fetch") == 0;
    if (!fetch && strcmp(sub, "list") != 0) {
        fprintf(stderr, "chappe keys: expected 'list [NAME]' or 'fetch NAME' [-c FILE]\n");
        return 2;
    }
    int o = parse_opts(argc - 1, argv + 1, "c", &opt);
    if (o)
        return o == 1 ? usage(stdout, 0) : usage(stderr, 2);
    if ((fetch && opt.npos != 1) || opt.npos > 1) {
        fprintf(stderr, "chappe keys %s: expected %s\n", sub,
                fetch ? "one server name" : "at most one server name");
        return 2;
    }
    struct config *cfg = NULL;
    if (load_config(opt.config, &cfg) < 0)
        return 2;
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    int status;
    if (fetch) {
        status = keys_fetch(cfg, opt.pos[0]);
    } else {
        struct store *s = NULL;
        size_t n = 0;
        status = 2;
        const struct cfg_pinned *only = opt.npos ? find_pin(cfg, opt.pos[0]) : NULL;
        for (size_t i = 0; i < cfg->npinned_keys; i++) {
            if (opt.npos == 0 || only == &cfg->pinned_keys[i]) {
                print_pins(&cfg->pinned_keys[i]);
                n++;
            }
        }
        if (open_store("keys list", cfg, &s) == 0) {
            status = keystore_list(s, opt.npos ? opt.pos[0] : NULL, list_one, &n) < 0 ? 1 : 0;
            if (status == 0 && n == 0)
                fprintf(stderr, "chappe keys list: no key stored%s%s\n", opt.npos ? " for " : "",
                        opt.npos ? opt.pos[0] : "");
            store_close(s);
        }
    }
    config_free(cfg);
    return status;
}

/* --- run ------------------------------------------------------------------------------- */

struct runtime {
    uv_loop_t *loop;
    const struct config *cfg;
    struct worker *workers;
    unsigned nworkers;
    unsigned exited;
    uv_mutex_t lock;
    uv_async_t exit_async;
    uv_signal_t sigterm, sigint, sighup;
    int stopping;
    struct trust *trust; /* the snapshot in service (one reference) */
    struct keyfetch *keyfetch;
    struct sender *sender; /* with an egress listener */
};

static struct runtime rt;

/* A verified inbound request: its origin is up, whatever its queue's backoff says. */
static void on_peer_up(void *ud, const char *server)
{
    sender_peer_up(ud, server);
}

static void on_worker_exit(struct worker *w)
{
    (void)w;
    uv_mutex_lock(&rt.lock);
    rt.exited++;
    uv_mutex_unlock(&rt.lock);
    uv_async_send(&rt.exit_async);
}

static void on_exit_async(uv_async_t *a)
{
    (void)a;
    uv_mutex_lock(&rt.lock);
    unsigned exited = rt.exited;
    uv_mutex_unlock(&rt.lock);
    if (exited < rt.nworkers)
        return;
    uv_close((uv_handle_t *)&rt.exit_async, NULL);
    uv_close((uv_handle_t *)&rt.sigterm, NULL);
    uv_close((uv_handle_t *)&rt.sigint, NULL);
    uv_close((uv_handle_t *)&rt.sighup, NULL);
}

static bool uses_tls(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (cfg->listeners[i].tls)
            return true;
    return false;
}

static void reload_certificates(void)
{
    if (!uses_tls(rt.cfg))
        return;
    struct buf err = BUF_INIT;
    struct tls_material *m = NULL;
    if (tls_material_load(rt.cfg, &m, &err) < 0) {
        /* Strip the final newline: one log line per problem. */
        buf_trim_newlines(&err);
        log_error("SIGHUP: certificates not reloaded, the current ones stay in service: %.*s",
                  (int)err.len, buf_data(&err));
        buf_free(&err);
        return;
    }
    buf_free(&err);
    for (unsigned i = 0; i < rt.nworkers; i++)
        worker_post_tls(&rt.workers[i], m);
    tls_material_unref(m);
    log_info("SIGHUP: reloaded %zu certificate(s)", rt.cfg->tls.ncertificates);
}

/*
 * Reread the configuration file for federation_domain_whitelist, the address
 * lists, pinned_keys and trusted_key_servers, and put the new snapshot in
 * service everywhere at once. Anything wrong keeps the current one.
 */
static void reload_trust(void)
{
    struct buf err = BUF_INIT;
    struct config *cfg = NULL;
    struct trust *t = NULL;
    if (config_load(rt.cfg->path, &cfg, &err) < 0 || trust_new(cfg, true, &t, &err) < 0) {
        buf_trim_newlines(&err);
        for (size_t i = 0; i < err.len; i++)
            if (buf_data(&err)[i] == '\n')
                buf_data(&err)[i] = ' ';
        log_error("SIGHUP: policy not reloaded, the current one stays in service: %.*s",
                  (int)err.len, buf_data(&err));
        buf_free(&err);
        return;
    }
    buf_free(&err);
    for (unsigned i = 0; i < rt.nworkers; i++)
        worker_post_trust(&rt.workers[i], t);
    if (rt.keyfetch)
        keyfetch_set_trust(rt.keyfetch, t);
    if (rt.sender)
        sender_set_trust(rt.sender, t);
    trust_unref(rt.trust);
    rt.trust = t;
    warn_policy(t->cfg);
    log_info(
        "SIGHUP: reloaded policy from %s: federation_domain_whitelist, sovereign_ranges, "
        "ip_range_blacklist/whitelist, pinned_keys (%zu server(s)), trusted_key_servers (%zu); "
        "other settings need a restart",
        t->cfg->path, t->cfg->npinned_keys, t->cfg->ntrusted_key_servers);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (signum == SIGHUP) {
        reload_trust();
        reload_certificates();
        return;
    }
    rt.stopping++;
    char dur[32];
    util_format_duration_ms(rt.cfg->limits.drain_timeout_ms, dur, sizeof(dur));
    if (rt.stopping == 1)
        log_info("%s: stopping: no new connections, draining requests in flight (up to %s)",
                 strsignal(signum), dur);
    else
        log_info("%s again: closing every connection now", strsignal(signum));
    for (unsigned i = 0; i < rt.nworkers; i++)
        worker_post_stop(&rt.workers[i], rt.stopping > 1);
}

static void log_ready(const struct config *cfg, unsigned n)
{
    struct buf b = BUF_INIT;
    buf_appendf(&b, "ready: %u worker(s)", n);
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        for (size_t j = 0; j < l->nbinds; j++)
            buf_appendf(&b, ", %s on %s (%s)", config_listener_type_name(l->type), l->binds[j].text,
                        l->tls ? "tls" : "plain");
    }
    for (size_t i = 0; i < cfg->nhomeservers; i++)
        buf_appendf(&b, "; %s -> %s", cfg->homeservers[i].server_name,
                    cfg->homeservers[i].upstream.url);
    log_info("%.*s", (int)b.len, buf_data(&b));
    buf_free(&b);
}

static int cmd_run(int argc, char **argv)
{
    struct opts opt = {.config = CONFIG_DEFAULT_PATH};
    int o = parse_opts(argc, argv, "c", &opt);
    if (o)
        return o == 1 ? usage(stdout, 0) : usage(stderr, 2);
    const char *path = opt.config;
    struct config *cfg = NULL;
    if (load_config(path, &cfg) < 0)
        return 1;
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    int status = 1;
    struct tls_material *m = NULL;
    struct trust *trust = NULL;
    struct store *store = NULL;
    {
        struct buf err = BUF_INIT;
        if (trust_new(cfg, false, &trust, &err) < 0) {
            print_errors("run", &err);
            log_error("%s: the policy could not be loaded", path);
            buf_free(&err);
            config_free(cfg);
            return 1;
        }
        buf_free(&err);
    }
    warn_policy(cfg);
    struct keys_own keys = {0};
    struct egress_secrets secrets = {0};
    struct mint *mint = NULL;
    unsigned started = 0;
    if (log_access_open(cfg->access_log) < 0) {
        log_error("cannot open access_log %s", cfg->access_log);
        goto out_cfg;
    }
    if (tls_global_init() < 0) {
        log_error("cannot initialise TLS");
        goto out_log;
    }
    if (uses_tls(cfg)) {
        struct buf err = BUF_INIT;
        if (tls_material_load(cfg, &m, &err) < 0) {
            fwrite(buf_data(&err), 1, err.len, stderr);
            log_error("%s: TLS certificates could not be loaded", path);
            buf_free(&err);
            goto out_tls;
        }
        buf_free(&err);
    }
    {
        struct buf err = BUF_INIT;
        if (keys_own_load(cfg, &keys, &err) < 0) {
            fwrite(buf_data(&err), 1, err.len, stderr);
            log_error("%s: the signing key could not be loaded", path);
            buf_free(&err);
            goto out_tls;
        }
        buf_free(&err);
    }
    if (has_listener(cfg, LISTENER_EGRESS)) {
        struct buf err = BUF_INIT;
        if (egress_secrets_load(cfg, &secrets, &err) < 0) {
            fwrite(buf_data(&err), 1, err.len, stderr);
            log_error("%s: the egress secrets could not be loaded", path);
            buf_free(&err);
            goto out_tls;
        }
        buf_free(&err);
    }
    if (has_listener(cfg, LISTENER_ADMIN)) {
        /* read once here so that a bad token file stops the start, not the first request */
        struct buf err = BUF_INIT;
        struct admin_tokens tokens;
        if (admin_tokens_load(cfg, &tokens, &err) < 0) {
            fwrite(buf_data(&err), 1, err.len, stderr);
            log_error("%s: the admin token could not be loaded", path);
            buf_free(&err);
            goto out_tls;
        }
        admin_tokens_free(&tokens);
        buf_free(&err);
    }
    if (cfg->tls.has_egress_ca && has_listener(cfg, LISTENER_EGRESS)) {
        struct buf err = BUF_INIT;
        if (mint_new(cfg, &mint, &err) < 0) {
            fwrite(buf_data(&err), 1, err.len, stderr);
            log_error("%s: the egress CA could not be loaded", path);
            buf_free(&err);
            goto out_tls;
        }
        buf_free(&err);
    }
    {
        /* last of the start-up checks: a configuration that fails creates no directory */
        struct buf err = BUF_INIT;
        if (store_open(cfg->queue.path, cfg->queue.map_size, STORE_F_EXCLUSIVE, &store, &err) < 0) {
            print_errors("run", &err);
            log_error("%s: the store %s could not be opened", path, cfg->queue.path);
            buf_free(&err);
            goto out_tls;
        }
        buf_free(&err);
    }
    {
        struct buf err = BUF_INIT;
        if (keyfetch_start(cfg, trust, store, &rt.keyfetch, &err) < 0) {
            print_errors("run", &err);
            buf_free(&err);
            goto out_tls;
        }
        buf_free(&err);
    }
    if (!cfg->queue.group_commit) {
        store_set_group_commit(store, false);
        log_warn("queue.group_commit is off: one durable commit per transaction (for "
                 "benchmarks; it costs throughput)");
    }
    if (has_listener(cfg, LISTENER_EGRESS)) {
        struct buf err = BUF_INIT;
        if (sender_start(cfg, trust, store, &rt.sender, &err) < 0) {
            print_errors("run", &err);
            buf_free(&err);
            goto out_tls;
        }
        buf_free(&err);
        inbound_set_peer_up_hook(on_peer_up, rt.sender);
    }
    rt.trust = trust;
    trust_ref(trust);
    rt.cfg = cfg;
    rt.loop = uv_default_loop();
    rt.nworkers = cfg->workers;
    rt.workers = calloc(rt.nworkers, sizeof(*rt.workers));
    if (rt.workers == NULL)
        goto out_tls;
    uv_mutex_init(&rt.lock);
    uv_async_init(rt.loop, &rt.exit_async, on_exit_async);
    uv_signal_init(rt.loop, &rt.sigterm);
    uv_signal_init(rt.loop, &rt.sigint);
    uv_signal_init(rt.loop, &rt.sighup);
    uv_signal_start(&rt.sigterm, on_signal, SIGTERM);
    uv_signal_start(&rt.sigint, on_signal, SIGINT);
    uv_signal_start(&rt.sighup, on_signal, SIGHUP);
    if (worker_open_listeners(rt.workers, rt.nworkers, cfg) < 0)
        goto out_stop;
    for (unsigned i = 0; i < rt.nworkers; i++) {
        rt.workers[i].keys = &keys;
        rt.workers[i].trust = trust;
        trust_ref(trust);
        rt.workers[i].keyfetch = rt.keyfetch;
        rt.workers[i].sender = rt.sender;
        rt.workers[i].mint = mint;
        rt.workers[i].egress_secrets = &secrets;
        rt.workers[i].store = store;
        rt.workers[i].siblings = rt.workers;
        rt.workers[i].nsiblings = rt.nworkers;
    }
    for (; started < rt.nworkers; started++) {
        if (worker_start(&rt.workers[started], m, on_worker_exit) < 0) {
            started++;
            goto out_stop;
        }
    }
    log_ready(cfg, rt.nworkers);
    uv_run(rt.loop, UV_RUN_DEFAULT);
    status = 0;
    goto out_join;
out_stop:
    /* Start-up failed: stop what started, then wait for it. */
    for (unsigned i = 0; i < started; i++)
        worker_post_stop(&rt.workers[i], true);
    rt.nworkers = started;
    if (started == 0)
        on_exit_async(&rt.exit_async);
    uv_run(rt.loop, UV_RUN_DEFAULT);
    for (unsigned i = started; i < cfg->workers; i++) {
        struct worker *w = &rt.workers[i];
        for (size_t j = 0; j < w->nlisteners; j++)
            if (w->listeners[j].fd >= 0)
                close(w->listeners[j].fd);
        free(w->listeners);
        trust_unref(w->trust);
    }
out_join:
    for (unsigned i = 0; i < started; i++)
        worker_join(&rt.workers[i]);
    uv_loop_close(rt.loop);
    uv_mutex_destroy(&rt.lock);
    free(rt.workers);
    if (status == 0)
        log_info("stopped");
out_tls:
    inbound_set_peer_up_hook(NULL, NULL);
    sender_stop(rt.sender); /* the workers that kick it have stopped */
    rt.sender = NULL;
    keyfetch_stop(rt.keyfetch); /* the workers that ask it have stopped */
    rt.keyfetch = NULL;
    trust_unref(rt.trust);
    rt.trust = NULL;
    keys_own_free(&keys);
    egress_secrets_free(&secrets);
    mint_free(mint); /* after the workers' caches */
    if (m)
        tls_material_unref(m);
    tls_global_free();
out_log:
    log_access_close();
out_cfg:
    store_close(store);
    trust_unref(trust);
    config_free(cfg);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
        printf("chappe %s (libuv %s, %s)\n", CHAPPE_VERSION, uv_version_string(), "mbedTLS 2.28");
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0)
        return usage(stdout, 0);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "check-config") == 0)
        return cmd_check_config(argc - 1, argv + 1);
    if (strcmp(cmd, "keygen") == 0)
        return cmd_keygen(argc - 1, argv + 1);
    if (strcmp(cmd, "json") == 0)
        return cmd_json(argc - 1, argv + 1);
    if (strcmp(cmd, "policy") == 0)
        return cmd_policy(argc - 1, argv + 1);
    if (strcmp(cmd, "fed-request") == 0)
        return cmd_fed_request(argc - 1, argv + 1);
    if (strcmp(cmd, "keys") == 0)
        return cmd_keys(argc - 1, argv + 1);
    if (strcmp(cmd, "queue") == 0)
        return cmd_queue(argc - 1, argv + 1);
    if (strcmp(cmd, "key") == 0)
        return cmd_key(argc - 1, argv + 1);
    fprintf(stderr, "chappe: unknown command '%s'\n", cmd);
    return usage(stderr, 2);
}
