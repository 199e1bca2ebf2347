/*
 * The retrying client (client.h, docs/client.md): a loop of attempts over
 * libevent's evhttp client on a private event_base, and the judgement of
 * each answer (retry or stop, and how long to wait).
 *
 * Every attempt uses a new connection, closed after its answer: a retry
 * must not reuse a connection the server may have given up on, and the
 * callers (authzctl, scripts, a demo) make few calls. An attempt ends when
 * its request callback runs (with an answer or without one) or when its
 * own deadline timer fires; evhttp's connection timeout is set to the same
 * value so a stalled connect or read is cut off too.
 */
#define _XOPEN_SOURCE 700   /* strptime */
#include "common/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/hlc.h"
#include "common/url.h"
#include "common/text.h"
#include "common/uuid.h"

#define USER_AGENT "authz-client/" AUTHZ_VERSION
#define MAX_RETRY_AFTER_SECS 86400u   /* a larger delta is nonsense: give up */

struct azc_client {
    struct event_base *base;
    SSL_CTX *ssl_ctx;            /* NULL until the first https call */
    azc_client_options o;        /* token and ca_file point at the copies below */
    char *token;
    char *ca_file;
    azc_client_clock clock;
    uint64_t rng;                /* xorshift64* state for the jitter, seeded from RAND_bytes */
    char revision[AZC_REVISION_MAX];
    azc_revision rev;            /* decoded `revision`, when has_rev */
    int has_rev;
};

/* What one attempt saw. */
struct attempt {
    int done;
    int timed_out;
    int status;                  /* 0: no answer */
    struct evkeyvalq *in_headers;   /* not owned: copied in the callback */
    azc_client_result *res;
    int copy_failed;
    int sys_errno;               /* errno when the callback ran without an answer */
    int dns_error;
    enum evhttp_request_error req_error;
    int has_req_error;
    struct evhttp_connection *evcon;
    SSL *ssl;                    /* https only; owned by the connection */
    int connect_errno;           /* the socket error of a failed connect */
    long verify;                 /* https: the certificate check's result, read before the
                                  * connection (and its SSL) is freed */
    bufferevent_event_cb chained_cb;   /* evhttp's connect callback, see connect_watch */
    void *chained_arg;
};

/* A parsed request URL. */
struct target {
    int https;
    char host[AZC_URL_HOST_MAX];     /* for connecting: no brackets */
    char host_header[AZC_URL_HOST_MAX + 8];
    int port;
    char *uri;                   /* path and query, malloc'ed */
};

/* ---- clocks ------------------------------------------------------------ */

static uint64_t real_mono_ms(void *arg)
{
    struct timespec ts;

    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t real_wall_ms(void *arg)
{
    (void)arg;
    return azc_wall_ms();
}

static void real_sleep_ms(void *arg, uint64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L };

    (void)arg;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- options, creation ---------------------------------------------------- */

void azc_client_options_init(azc_client_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_attempts = 5;
    o->budget_ms = 10000;
    o->attempt_timeout_ms = 5000;
    o->backoff_base_ms = 50;
    o->backoff_cap_ms = 2000;
    o->max_body_bytes = 16u * 1024u * 1024u;
}

static int options_check(const azc_client_options *o, azc_err *e)
{
    if (o->max_attempts < 1 || o->max_attempts > AZC_CLIENT_MAX_RETRIES)
        return azc_err_set(e, AZC_EINVAL, "client: max_attempts must be 1-%d",
                           AZC_CLIENT_MAX_RETRIES);
    if (o->budget_ms < 1 || o->attempt_timeout_ms < 1)
        return azc_err_set(e, AZC_EINVAL, "client: budget and attempt timeout must be positive");
    if (o->backoff_base_ms < 0 || o->backoff_cap_ms < o->backoff_base_ms)
        return azc_err_set(e, AZC_EINVAL, "client: backoff needs 0 <= base <= cap");
    if (o->max_body_bytes == 0)
        return azc_err_set(e, AZC_EINVAL, "client: max_body_bytes must be positive");
    return AZC_OK;
}

int azc_client_new(const azc_client_options *o, azc_client **out, azc_err *e)
{
    azc_client *c;
    azc_client_options dflt;
    int rc;

    *out = NULL;
    if (o == NULL) {
        azc_client_options_init(&dflt);
        o = &dflt;
    }
    if ((rc = options_check(o, e)) != AZC_OK)
        return rc;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return azc_err_set(e, AZC_ENOMEM, "client: out of memory");
    c->o = *o;
    if ((o->token != NULL && (c->token = strdup(o->token)) == NULL) ||
        (o->ca_file != NULL && (c->ca_file = strdup(o->ca_file)) == NULL)) {
        azc_client_free(c);
        return azc_err_set(e, AZC_ENOMEM, "client: out of memory");
    }
    c->o.token = c->token;
    c->o.ca_file = c->ca_file;
    if (o->clock != NULL) {
        c->clock = *o->clock;
    } else {
        c->clock.mono_ms = real_mono_ms;
        c->clock.wall_ms = real_wall_ms;
        c->clock.sleep_ms = real_sleep_ms;
    }
    c->o.clock = &c->clock;
    if (RAND_bytes((unsigned char *)&c->rng, sizeof c->rng) != 1 || c->rng == 0)
        c->rng = 0x9e3779b97f4a7c15u ^ real_mono_ms(NULL);
    c->base = event_base_new();
    if (c->base == NULL) {
        azc_client_free(c);
        return azc_err_set(e, AZC_ERROR, "client: cannot create an event base");
    }
    *out = c;
    return AZC_OK;
}

void azc_client_free(azc_client *c)
{
    if (c == NULL)
        return;
    if (c->base != NULL)
        event_base_free(c->base);
    SSL_CTX_free(c->ssl_ctx);
    if (c->token != NULL) {
        OPENSSL_cleanse(c->token, strlen(c->token));
        free(c->token);
    }
    free(c->ca_file);
    free(c);
}

/* The TLS context, made on first use so plain-http callers never read the
 * CA store. */
static int ssl_ctx_get(azc_client *c, azc_err *e)
{
    SSL_CTX *ctx;

    if (c->ssl_ctx != NULL)
        return AZC_OK;
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return azc_err_set(e, AZC_ERROR, "client: cannot create a TLS context");
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        SSL_CTX_free(ctx);
        return azc_err_set(e, AZC_ERROR, "client: cannot require TLS 1.2");
    }
    if (c->ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1) {
            SSL_CTX_free(ctx);
            return azc_err_set(e, AZC_EINVAL, "client: cannot load CA file %s", c->ca_file);
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return azc_err_set(e, AZC_ERROR, "client: cannot load the system CA store");
    }
    SSL_CTX_set_verify(ctx, c->o.insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    c->ssl_ctx = ctx;
    return AZC_OK;
}

/* ---- revisions ----------------------------------------------------------- */

int azc_revision_newer(const azc_revision *a, const azc_revision *b)
{
    return a->hlc > b->hlc;
}

const char *azc_client_revision(const azc_client *c)
{
    return c->has_rev ? c->revision : "";
}

int azc_client_merge_revision(azc_client *c, const char *token, azc_err *e)
{
    azc_revision r;
    int rc;

    if ((rc = azc_revision_decode(token, &r, e)) != AZC_OK)
        return rc;
    if (c->has_rev && !azc_revision_newer(&r, &c->rev))
        return AZC_OK;
    if ((rc = azc_revision_encode(&r, c->revision, sizeof c->revision, e)) != AZC_OK)
        return rc;
    c->rev = r;
    c->has_rev = 1;
    return AZC_OK;
}

/* ---- Retry-After ------------------------------------------------------- */

int azc_retry_after_parse(const char *value, uint64_t now_wall_ms, uint64_t *delay_ms)
{
    /* RFC 9110 section 10.2.3 and 5.6.7: the preferred IMF-fixdate and the
     * two obsolete forms a recipient must accept. */
    static const char *const forms[] = { "%a, %d %b %Y %H:%M:%S GMT",
                                         "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y" };
    struct tm tm;
    size_t i;

    if (value == NULL || value[0] == '\0')
        return AZC_EINVAL;
    if (strspn(value, "0123456789") == strlen(value)) {
        uint64_t secs = 0;

        for (i = 0; value[i] != '\0'; i++) {
            secs = secs * 10u + (uint64_t)(value[i] - '0');
            if (secs > MAX_RETRY_AFTER_SECS)
                return AZC_EINVAL;
        }
        *delay_ms = secs * 1000u;
        return AZC_OK;
    }
    for (i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        const char *end;
        time_t t;

        memset(&tm, 0, sizeof tm);
        end = strptime(value, forms[i], &tm);
        if (end == NULL || *end != '\0')
            continue;
        t = timegm(&tm);
        if (t == (time_t)-1)
            return AZC_EINVAL;
        *delay_ms = (uint64_t)t * 1000u > now_wall_ms ? (uint64_t)t * 1000u - now_wall_ms : 0;
        if (*delay_ms > (uint64_t)MAX_RETRY_AFTER_SECS * 1000u)
            return AZC_EINVAL;
        return AZC_OK;
    }
    return AZC_EINVAL;
}

/* ---- requests ---------------------------------------------------------------- */

static int method_parse(const char *m, enum evhttp_cmd_type *out, int *idempotent)
{
    static const struct {
        const char *name;
        enum evhttp_cmd_type type;
        int idempotent;
    } methods[] = {
        { "GET", EVHTTP_REQ_GET, 1 },     { "HEAD", EVHTTP_REQ_HEAD, 1 },
        { "PUT", EVHTTP_REQ_PUT, 1 },     { "DELETE", EVHTTP_REQ_DELETE, 1 },
        { "POST", EVHTTP_REQ_POST, 0 },   { "PATCH", EVHTTP_REQ_PATCH, 0 },
    };
    size_t i;

    for (i = 0; m != NULL && i < sizeof methods / sizeof methods[0]; i++) {
        if (strcmp(m, methods[i].name) == 0) {
            *out = methods[i].type;
            *idempotent = methods[i].idempotent;
            return AZC_OK;
        }
    }
    return AZC_EINVAL;
}

static void target_clear(struct target *t)
{
    free(t->uri);
    t->uri = NULL;
}

static int target_parse(const char *url, struct target *t, azc_err *e)
{
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    const char *scheme, *host, *path, *query;
    size_t hl = 0, n;
    int rc = AZC_OK;

    memset(t, 0, sizeof *t);
    if (u == NULL)
        return azc_err_set(e, AZC_EINVAL, "client: \"%.*s\" is not a URL",
                           (int)azc_utf8_cut(url != NULL ? url : "", 80), url != NULL ? url : "");
    scheme = evhttp_uri_get_scheme(u);
    host = evhttp_uri_get_host(u);
    path = evhttp_uri_get_path(u);
    query = evhttp_uri_get_query(u);
    if (scheme == NULL || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
        rc = azc_err_set(e, AZC_EINVAL, "client: the URL must be http:// or https://");
    else if (host == NULL || host[0] == '\0' || (hl = strlen(host)) >= sizeof t->host)
        rc = azc_err_set(e, AZC_EINVAL, "client: the URL has no host");
    else if (evhttp_uri_get_userinfo(u) != NULL || evhttp_uri_get_fragment(u) != NULL)
        rc = azc_err_set(e, AZC_EINVAL, "client: the URL must hold no user or fragment");
    if (rc != AZC_OK) {
        evhttp_uri_free(u);
        return rc;
    }
    t->https = strcmp(scheme, "https") == 0;
    t->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : t->https ? 443 : 80;
    /* An IPv6 literal comes back in its brackets: Host keeps them, the
     * connection does not. */
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']')
        snprintf(t->host, sizeof t->host, "%.*s", (int)(hl - 2), host + 1);
    else
        snprintf(t->host, sizeof t->host, "%s", host);
    if (t->port == (t->https ? 443 : 80))
        snprintf(t->host_header, sizeof t->host_header, "%s", host);
    else
        snprintf(t->host_header, sizeof t->host_header, "%s:%d", host, t->port);
    if (path == NULL || path[0] == '\0')
        path = "/";
    n = strlen(path) + (query != NULL ? strlen(query) + 1 : 0) + 1;
    t->uri = malloc(n);
    if (t->uri == NULL) {
        evhttp_uri_free(u);
        return azc_err_set(e, AZC_ENOMEM, "client: out of memory");
    }
    snprintf(t->uri, n, "%s%s%s", path, query != NULL ? "?" : "", query != NULL ? query : "");
    evhttp_uri_free(u);
    return AZC_OK;
}

/* ---- results ----------------------------------------------------------------- */

static void headers_free(azc_client_result *res)
{
    size_t i;

    for (i = 0; i < res->nheaders; i++) {
        free((char *)res->headers[i].name);
        free((char *)res->headers[i].value);
    }
    free(res->headers);
    res->headers = NULL;
    res->nheaders = 0;
}

void azc_client_result_clear(azc_client_result *res)
{
    if (res == NULL)
        return;
    headers_free(res);
    free(res->body);
    memset(res, 0, sizeof *res);
}

const char *azc_client_result_header(const azc_client_result *res, const char *name)
{
    size_t i;

    for (i = 0; i < res->nheaders; i++) {
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    }
    return NULL;
}

/* Replaces the result's answer with the one of req; 0, or -1 when out of
 * memory. */
static int answer_copy(azc_client_result *res, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    struct evkeyval *kv;
    size_t n = 0, len = b != NULL ? evbuffer_get_length(b) : 0;

    headers_free(res);
    free(res->body);
    res->body = NULL;
    res->body_len = 0;
    for (kv = h->tqh_first; kv != NULL; kv = kv->next.tqe_next)
        n++;
    if (n > 0 && (res->headers = calloc(n, sizeof *res->headers)) == NULL)
        return -1;
    for (kv = h->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        azc_client_header *o = &res->headers[res->nheaders];

        o->name = strdup(kv->key);
        o->value = strdup(kv->value);
        res->nheaders++;
        if (o->name == NULL || o->value == NULL)
            return -1;
    }
    res->body = malloc(len + 1);
    if (res->body == NULL)
        return -1;
    if (len > 0 && evbuffer_remove(b, res->body, len) != (int)len)
        return -1;
    res->body[len] = '\0';
    res->body_len = len;
    return 0;
}

/* ---- one attempt --------------------------------------------------------- */

static void on_error(enum evhttp_request_error err, void *arg)
{
    struct attempt *a = arg;

    a->req_error = err;
    a->has_req_error = 1;
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct attempt *a = arg;
    struct bufferevent *bev;

    a->sys_errno = errno;
    a->done = 1;
    if (a->ssl != NULL)
        a->verify = SSL_get_verify_result(a->ssl);
    if (req != NULL && evhttp_request_get_response_code(req) > 0) {
        a->status = evhttp_request_get_response_code(req);
        if (answer_copy(a->res, req) != 0)
            a->copy_failed = 1;
    } else if (a->evcon != NULL &&
               (bev = evhttp_connection_get_bufferevent(a->evcon)) != NULL) {
        a->dns_error = bufferevent_socket_get_dns_error(bev);
    }
    event_base_loopbreak(evhttp_connection_get_base(a->evcon));
}

/*
 * evhttp reports a failed connect to the request callback with errno
 * already overwritten by its own cleanup, so "connection refused" (nobody
 * listens: a server not up yet) could not be told from a reset. This
 * event callback sits in front of evhttp's connect callback for the
 * connect only (evhttp installs its own callbacks once connected), notes
 * the socket error and hands the event on unchanged.
 */
static void on_connect_event(struct bufferevent *bev, short what, void *arg)
{
    struct attempt *a = arg;

    if (what & BEV_EVENT_ERROR)
        a->connect_errno = EVUTIL_SOCKET_ERROR();
    a->chained_cb(bev, what, a->chained_arg);
}

static void connect_watch(struct attempt *a)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(a->evcon);
    bufferevent_data_cb rd = NULL, wr = NULL;
    bufferevent_event_cb ev = NULL;
    void *arg = NULL;

    if (bev == NULL)
        return;
    bufferevent_getcb(bev, &rd, &wr, &ev, &arg);
    if (ev == NULL || ev == on_connect_event)
        return;
    a->chained_cb = ev;
    a->chained_arg = arg;
    bufferevent_setcb(bev, rd, wr, on_connect_event, a);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct attempt *a = arg;

    (void)fd;
    (void)what;
    a->timed_out = 1;
    a->done = 1;
    event_base_loopbreak(evhttp_connection_get_base(a->evcon));
}

/* Adds a header unless the caller's extra headers name it. */
static int header_add(struct evkeyvalq *h, const azc_client_request *rq, const char *name,
                      const char *value)
{
    size_t i;

    for (i = 0; i < rq->nheaders; i++) {
        if (strcasecmp(rq->headers[i].name, name) == 0)
            return 0;
    }
    return evhttp_add_header(h, name, value);
}

static int request_build(azc_client *c, const azc_client_request *rq, const struct target *t,
                         const char *idem_key, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char auth[16 + 8192], len[32];
    size_t i;
    int bad = 0;

    bad |= header_add(h, rq, "Host", t->host_header);
    bad |= header_add(h, rq, "User-Agent", USER_AGENT);
    bad |= header_add(h, rq, "Accept", "application/json");
    bad |= header_add(h, rq, "Connection", "close");
    if (c->token != NULL) {
        if ((size_t)snprintf(auth, sizeof auth, "Bearer %s", c->token) >= sizeof auth)
            return -1;
        bad |= header_add(h, rq, "Authorization", auth);
        OPENSSL_cleanse(auth, sizeof auth);
    }
    if (c->has_rev)
        bad |= header_add(h, rq, "Authz-Revision", c->revision);
    if (idem_key[0] != '\0')
        bad |= header_add(h, rq, "Idempotency-Key", idem_key);
    if (rq->body != NULL) {
        bad |= header_add(h, rq, "Content-Type",
                          rq->content_type != NULL ? rq->content_type : "application/json");
        bad |= evbuffer_add(evhttp_request_get_output_buffer(req), rq->body, rq->body_len);
    }
    snprintf(len, sizeof len, "%zu", rq->body != NULL ? rq->body_len : 0);
    if (rq->body != NULL || strcmp(rq->method, "POST") == 0 || strcmp(rq->method, "PUT") == 0 ||
        strcmp(rq->method, "PATCH") == 0)
        bad |= header_add(h, rq, "Content-Length", len);
    for (i = 0; i < rq->nheaders; i++)
        bad |= evhttp_add_header(h, rq->headers[i].name, rq->headers[i].value);
    return bad ? -1 : 0;
}

/* Why an attempt got no answer, into buf; *permanent set when trying
 * again cannot help (a certificate that does not verify). */
static void no_answer_reason(const struct attempt *a, uint64_t timeout_ms, char *buf, size_t len,
                             int *permanent)
{
    long v;

    *permanent = 0;
    if (a->timed_out) {
        azc_text_fmt(buf, len, "timed out after %" PRIu64 " ms", timeout_ms);
        return;
    }
    if (a->dns_error != 0) {
        azc_text_fmt(buf, len, "cannot resolve the host: %s", evutil_gai_strerror(a->dns_error));
        return;
    }
    if ((v = a->verify) != X509_V_OK) {
        azc_text_fmt(buf, len, "certificate verification failed: %s",
                     X509_verify_cert_error_string(v));
        *permanent = 1;
        return;
    }
    if (a->connect_errno == ECONNREFUSED || a->sys_errno == ECONNREFUSED) {
        azc_text_fmt(buf, len, "connection refused");
        return;
    }
    if (a->has_req_error && a->req_error == EVREQ_HTTP_TIMEOUT) {
        azc_text_fmt(buf, len, "timed out after %" PRIu64 " ms", timeout_ms);
        return;
    }
    if (a->has_req_error && a->req_error == EVREQ_HTTP_DATA_TOO_LONG) {
        azc_text_fmt(buf, len, "the answer is larger than the client accepts");
        *permanent = 1;
        return;
    }
    if (a->has_req_error && a->req_error == EVREQ_HTTP_INVALID_HEADER) {
        azc_text_fmt(buf, len, "malformed answer");
        return;
    }
    if (a->connect_errno != 0) {
        azc_text_fmt(buf, len, "cannot connect: %s", strerror(a->connect_errno));
        return;
    }
    azc_text_fmt(buf, len, "connection closed without an answer");
}

/* The name the certificate must carry (a DNS name, or an IP address for
 * a literal), and SNI, which RFC 6066 allows for DNS names only. */
static int host_check_set(SSL *ssl, const char *host, int insecure)
{
    unsigned char ip[16];
    int literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;

    if (!literal && SSL_set_tlsext_host_name(ssl, host) != 1)
        return -1;
    if (insecure)
        return 0;
    if (literal)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 ? 0 : -1;
    return SSL_set1_host(ssl, host) == 1 ? 0 : -1;
}

/* Runs one attempt; AZC_OK with a->done set, or a setup failure. */
static int attempt_run(azc_client *c, const azc_client_request *rq, enum evhttp_cmd_type type,
                       const struct target *t, const char *idem_key, uint64_t timeout_ms,
                       struct attempt *a, azc_err *e)
{
    struct bufferevent *bev = NULL;
    struct evhttp_request *req;
    struct event *timer = NULL;
    struct timeval tv = { (time_t)(timeout_ms / 1000u), (suseconds_t)(timeout_ms % 1000u) * 1000 };
    int rc = AZC_OK;

    if (t->https) {
        if ((rc = ssl_ctx_get(c, e)) != AZC_OK)
            return rc;
        a->ssl = SSL_new(c->ssl_ctx);
        if (a->ssl == NULL)
            return azc_err_set(e, AZC_ERROR, "client: cannot create a TLS session");
        if (host_check_set(a->ssl, t->host, c->o.insecure) != 0) {
            SSL_free(a->ssl);
            a->ssl = NULL;
            return azc_err_set(e, AZC_ERROR, "client: cannot set the TLS host name");
        }
        bev = bufferevent_openssl_socket_new(c->base, -1, a->ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (bev == NULL) {
            SSL_free(a->ssl);
            a->ssl = NULL;
            return azc_err_set(e, AZC_ERROR, "client: cannot create a TLS connection");
        }
        /* Servers often close without close_notify; the answer's framing
         * says whether it is whole. */
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        a->evcon = evhttp_connection_base_bufferevent_new(c->base, NULL, bev, t->host,
                                                          (unsigned short)t->port);
        if (a->evcon == NULL)
            bufferevent_free(bev);   /* frees the SSL too (BEV_OPT_CLOSE_ON_FREE) */
    } else {
        a->evcon = evhttp_connection_base_new(c->base, NULL, t->host, (unsigned short)t->port);
    }
    if (a->evcon == NULL) {
        a->ssl = NULL;
        return azc_err_set(e, AZC_ERROR, "client: cannot create a connection");
    }
    evhttp_connection_set_timeout_tv(a->evcon, &tv);
    evhttp_connection_set_max_body_size(a->evcon, (ev_ssize_t)c->o.max_body_bytes);
    evhttp_connection_set_retries(a->evcon, 0);
    req = evhttp_request_new(on_done, a);
    if (req == NULL) {
        rc = azc_err_set(e, AZC_ENOMEM, "client: out of memory");
        goto out;
    }
    evhttp_request_set_error_cb(req, on_error);
    if (request_build(c, rq, t, idem_key, req) != 0) {
        evhttp_request_free(req);
        rc = azc_err_set(e, AZC_ENOMEM, "client: cannot build the request");
        goto out;
    }
    timer = evtimer_new(c->base, on_deadline, a);
    if (timer == NULL || evtimer_add(timer, &tv) != 0) {
        evhttp_request_free(req);
        rc = azc_err_set(e, AZC_ERROR, "client: cannot arm the attempt's timer");
        goto out;
    }
    errno = 0;
    /* The callback may run inside this call (a connect refused at once);
     * after a failure here the request is still ours. */
    if (evhttp_make_request(a->evcon, req, type, t->uri) != 0) {
        if (!a->done)
            evhttp_request_free(req);
        a->done = 1;
        a->sys_errno = errno;
    }
    if (!a->done)
        connect_watch(a);
    while (!a->done) {
        if (event_base_loop(c->base, EVLOOP_ONCE) < 0) {
            rc = azc_err_set(e, AZC_ERROR, "client: the event loop failed");
            break;
        }
    }
out:
    if (timer != NULL)
        event_free(timer);
    /* Frees a request still in flight (timed out) without its callback. */
    evhttp_connection_free(a->evcon);
    a->evcon = NULL;
    a->ssl = NULL;
    return rc;
}

/* ---- the judgement --------------------------------------------------------- */

/* Whether an answer may be retried, with the reason in buf. */
static int answer_retryable(const azc_client_result *res, char *buf, size_t len)
{
    const char *decision = azc_client_result_header(res, "Authz-Decision");
    const char *why = azc_client_result_header(res, "Authz-Reason");

    if (res->status == 403) {
        if (decision != NULL && strcasecmp(decision, "transient") == 0) {
            azc_text_fmt(buf, len, "403 transient%s%s%s", why != NULL ? " (" : "",
                         why != NULL ? why : "", why != NULL ? ")" : "");
            return 1;
        }
        azc_text_fmt(buf, len, "final 403");
        return 0;
    }
    if (res->status == 429 || res->status == 503) {
        azc_text_fmt(buf, len, "%d", res->status);
        return 1;
    }
    azc_text_fmt(buf, len, "answer");
    return 0;
}

/* The next wait: Retry-After when the answer has a usable one, else full
 * jitter over the exponential window. */
static uint64_t next_delay(azc_client *c, const azc_client_result *res, int attempt, char *note,
                           size_t len)
{
    const char *ra = res->status != 0 ? azc_client_result_header(res, "Retry-After") : NULL;
    uint64_t window, r, d;

    note[0] = '\0';
    if (ra != NULL && azc_retry_after_parse(ra, c->clock.wall_ms(c->clock.arg), &d) == AZC_OK &&
        d > 0) {
        azc_text_fmt(note, len, ", Retry-After %s", ra);
        return d;
    }
    window = (uint64_t)c->o.backoff_base_ms;
    while (attempt-- > 1 && window < (uint64_t)c->o.backoff_cap_ms)
        window *= 2;
    if (window > (uint64_t)c->o.backoff_cap_ms)
        window = (uint64_t)c->o.backoff_cap_ms;
    /* xorshift64*: the jitter only has to spread clients apart. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    r = c->rng * 0x2545f4914f6cdd1du;
    return window == 0 ? 0 : r % (window + 1);
}

static void revision_take(azc_client *c, const azc_client_result *res)
{
    const char *tok = azc_client_result_header(res, "Authz-Revision");

    if (tok == NULL || azc_client_merge_revision(c, tok, NULL) == AZC_OK)
        return;
    /* A malformed token from a server is ignored: it must not replace a
     * good one, and the answer itself is still the caller's. */
}

int azc_client_do(azc_client *c, const azc_client_request *rq, azc_client_result *res,
                  azc_err *e)
{
    enum evhttp_cmd_type type;
    struct target t;
    uint64_t start, now, budget = (uint64_t)c->o.budget_ms;
    char reason[160], note[96], why[160] = "";
    int idempotent, rc = AZC_OK, attempt;

    memset(res, 0, sizeof *res);
    if (rq->method == NULL || method_parse(rq->method, &type, &idempotent) != AZC_OK)
        return azc_err_set(e, AZC_EINVAL, "client: unsupported method \"%.*s\"",
                           (int)azc_utf8_cut(rq->method != NULL ? rq->method : "", 16),
                           rq->method != NULL ? rq->method : "");
    if ((rc = target_parse(rq->url, &t, e)) != AZC_OK)
        return rc;
    if (strcmp(rq->method, "POST") == 0 && rq->idempotency != AZC_IDEM_NONE) {
        if (rq->idempotency_key != NULL) {
            size_t n = strlen(rq->idempotency_key), i;

            /* identity's rule: 1-255 printable ASCII characters */
            for (i = 0; i < n && rq->idempotency_key[i] > 0x20 && rq->idempotency_key[i] < 0x7f;
                 i++)
                ;
            if (n == 0 || n >= sizeof res->idempotency_key || i != n) {
                target_clear(&t);
                return azc_err_set(e, AZC_EINVAL,
                                   "client: Idempotency-Key must be 1-255 printable characters");
            }
            memcpy(res->idempotency_key, rq->idempotency_key, n + 1);
        } else if (azc_uuid_new(res->idempotency_key) != AZC_OK) {
            target_clear(&t);
            return azc_err_set(e, AZC_ERROR, "client: cannot generate an Idempotency-Key");
        }
        /* The server replays the first answer for the key: resending
         * after no answer cannot apply the write twice. */
        idempotent = 1;
    }
    start = c->clock.mono_ms(c->clock.arg);
    for (attempt = 1;; attempt++) {
        struct attempt a;
        uint64_t left, delay, timeout = (uint64_t)c->o.attempt_timeout_ms;
        int retry, permanent = 0;

        now = c->clock.mono_ms(c->clock.arg);
        left = now - start < budget ? budget - (now - start) : 1;
        if (timeout > left)
            timeout = left;
        memset(&a, 0, sizeof a);
        a.res = res;
        res->attempts = attempt;
        if ((rc = attempt_run(c, rq, type, &t, res->idempotency_key, timeout, &a, e)) != AZC_OK)
            break;
        if (a.copy_failed) {
            rc = azc_err_set(e, AZC_ENOMEM, "client: out of memory reading the answer");
            break;
        }
        res->status = a.status;
        if (a.status != 0) {
            revision_take(c, res);
            retry = answer_retryable(res, reason, sizeof reason);
            if (!retry) {
                azc_text_fmt(res->stop, sizeof res->stop, "%s", reason);
                break;
            }
        } else {
            /* An earlier answer is not this call's answer any more. */
            headers_free(res);
            free(res->body);
            res->body = NULL;
            res->body_len = 0;
            no_answer_reason(&a, timeout, why, sizeof why, &permanent);
            azc_text_fmt(reason, sizeof reason, "%s", why);
            if (permanent || !idempotent) {
                azc_text_fmt(res->stop, sizeof res->stop, "not retryable: %s%s%s%s", why,
                             permanent ? "" : " (a ", permanent ? "" : rq->method,
                             permanent ? "" : " without an Idempotency-Key is never resent)");
                break;
            }
        }
        if (attempt >= c->o.max_attempts) {
            azc_text_fmt(res->stop, sizeof res->stop, "attempts exhausted (%d): %s", attempt,
                         reason);
            break;
        }
        delay = next_delay(c, res, attempt, note, sizeof note);
        now = c->clock.mono_ms(c->clock.arg);
        if (now - start + delay >= budget) {
            azc_text_fmt(res->stop, sizeof res->stop,
                         "budget exhausted (%d ms): %s%s, next wait %" PRIu64 " ms",
                         c->o.budget_ms, reason, note, delay);
            break;
        }
        {
            azc_client_retry *r = &res->retries[res->nretries++];

            r->attempt = attempt;
            r->status = a.status;
            r->delay_ms = delay;
            azc_text_fmt(r->reason, sizeof r->reason, "%s%s", reason, note);
            if (c->o.on_retry != NULL)
                c->o.on_retry(c->o.on_retry_arg, attempt, delay, r->reason);
        }
        c->clock.sleep_ms(c->clock.arg, delay);
    }
    res->elapsed_ms = c->clock.mono_ms(c->clock.arg) - start;
    target_clear(&t);
    if (rc == AZC_OK && res->status == 0)
        rc = azc_err_set(e, AZC_EUNAVAIL, "%s (%d attempt%s)", why, res->attempts,
                         res->attempts == 1 ? "" : "s");
    return rc;
}
