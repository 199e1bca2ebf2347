/*
 * The retrying client (common/client.c) against a scripted server: an
 * evhttp server on its own thread and loopback port, answering each
 * request with the next step of a script and recording what it received.
 *
 * Nothing sleeps: the client runs on a fake clock whose sleep only moves
 * time forward, so a Retry-After of seconds costs nothing real and the
 * test checks the exact wait. One test runs on the real clock to show the
 * per-attempt timeout and the budget bound a call that gets no answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/client.h"
#include "common/hlc.h"

#define MAX_STEPS 16

struct step {
    int status;
    const char *h[4][2];        /* response headers */
    const char *body;
};

struct seen {
    char method[8];
    char uri[256];
    char idem[256];
    char revision[AZC_REVISION_MAX];
    char auth[256];
    char body[256];
};

struct server {
    pthread_t th;
    struct event_base *base;
    struct evhttp *http;
    int port;
    pthread_mutex_t lock;
    struct step steps[MAX_STEPS];
    size_t nsteps, next;
    struct seen seen[MAX_STEPS * 8];
    size_t nseen;
    SSL_CTX *tls;               /* serve https with it, when set */
};

static void copy_header(struct evkeyvalq *h, const char *name, char *buf, size_t len)
{
    const char *v = evhttp_find_header(h, name);

    snprintf(buf, len, "%s", v != NULL ? v : "");
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    struct evbuffer *out = evbuffer_new();
    struct step st = { 500, { { NULL, NULL } }, "{\"error\":\"script ended\"}" };
    size_t i;

    pthread_mutex_lock(&s->lock);
    if (s->nseen < sizeof s->seen / sizeof s->seen[0]) {
        struct seen *w = &s->seen[s->nseen++];
        size_t n = evbuffer_get_length(body);

        switch (evhttp_request_get_command(req)) {
        case EVHTTP_REQ_GET:
            snprintf(w->method, sizeof w->method, "GET");
            break;
        case EVHTTP_REQ_POST:
            snprintf(w->method, sizeof w->method, "POST");
            break;
        case EVHTTP_REQ_PUT:
            snprintf(w->method, sizeof w->method, "PUT");
            break;
        case EVHTTP_REQ_DELETE:
            snprintf(w->method, sizeof w->method, "DELETE");
            break;
        default:
            snprintf(w->method, sizeof w->method, "OTHER");
        }
        snprintf(w->uri, sizeof w->uri, "%s", evhttp_request_get_uri(req));
        copy_header(in, "Idempotency-Key", w->idem, sizeof w->idem);
        copy_header(in, "Authz-Revision", w->revision, sizeof w->revision);
        copy_header(in, "Authorization", w->auth, sizeof w->auth);
        if (n >= sizeof w->body)
            n = sizeof w->body - 1;
        evbuffer_copyout(body, w->body, n);
        w->body[n] = '\0';
    }
    if (s->next < s->nsteps)
        st = s->steps[s->next++];
    else if (s->nsteps > 0)
        st = s->steps[s->nsteps - 1];   /* the last step repeats */
    pthread_mutex_unlock(&s->lock);
    for (i = 0; i < 4 && st.h[i][0] != NULL; i++)
        evhttp_add_header(evhttp_request_get_output_headers(req), st.h[i][0], st.h[i][1]);
    if (out != NULL && st.body != NULL)
        evbuffer_add(out, st.body, strlen(st.body));
    evhttp_send_reply(req, st.status, "Scripted", out);
    evbuffer_free(out);
}

static void *server_main(void *arg)
{
    struct server *s = arg;

    event_base_dispatch(s->base);
    return NULL;
}

/* A server answering with `steps`; on `fd` (already bound, listening or
 * not) when fd >= 0, else on a new port. */
static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    struct server *s = arg;
    SSL *ssl = SSL_new(s->tls);

    if (ssl == NULL)
        return NULL;
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static struct server *server_start_tls(const struct step *steps, size_t n, int fd,
                                       SSL_CTX *tls)
{
    struct server *s = calloc(1, sizeof *s);
    struct evhttp_bound_socket *bs;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;

    assert_non_null(s);
    assert_true(n <= MAX_STEPS);
    memcpy(s->steps, steps, n * sizeof *steps);
    s->nsteps = n;
    assert_int_equal(pthread_mutex_init(&s->lock, NULL), 0);
    s->base = event_base_new();
    assert_non_null(s->base);
    s->http = evhttp_new(s->base);
    assert_non_null(s->http);
    evhttp_set_gencb(s->http, handle, s);
    s->tls = tls;
    if (tls != NULL)
        evhttp_set_bevcb(s->http, tls_bev, s);
    if (fd >= 0) {
        assert_int_equal(listen(fd, 16), 0);
        assert_int_equal(evutil_make_socket_nonblocking(fd), 0);
        assert_int_equal(evhttp_accept_socket(s->http, fd), 0);
    } else {
        bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
        assert_non_null(bs);
        fd = evhttp_bound_socket_get_fd(bs);
    }
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
    return s;
}

static struct server *server_start_on(const struct step *steps, size_t n, int fd)
{
    return server_start_tls(steps, n, fd, NULL);
}

static struct server *server_start(const struct step *steps, size_t n)
{
    return server_start_on(steps, n, -1);
}

static void server_stop(struct server *s)
{
    if (s == NULL)
        return;
    assert_int_equal(event_base_loopbreak(s->base), 0);
    assert_int_equal(pthread_join(s->th, NULL), 0);
    evhttp_free(s->http);
    event_base_free(s->base);
    SSL_CTX_free(s->tls);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static size_t server_seen(struct server *s)
{
    size_t n;

    pthread_mutex_lock(&s->lock);
    n = s->nseen;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void url_of(int port, const char *path, char *buf, size_t len)
{
    snprintf(buf, len, "http://127.0.0.1:%d%s", port, path);
}

/* A bound socket that does not listen: connecting to it is refused for
 * as long as it stays open (no other process can take the port). */
static int refusing_socket(int *port)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* ---- the fake clock -------------------------------------------------------- */

struct fake_clock {
    uint64_t offset_ms;     /* added to the real clocks by every sleep */
    uint64_t slept_ms;
    int sleeps;
};

static uint64_t fake_mono(void *arg)
{
    struct fake_clock *f = arg;
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + f->offset_ms;
}

static uint64_t fake_wall(void *arg)
{
    struct fake_clock *f = arg;

    return azc_wall_ms() + f->offset_ms;
}

static void fake_sleep(void *arg, uint64_t ms)
{
    struct fake_clock *f = arg;

    f->offset_ms += ms;
    f->slept_ms += ms;
    f->sleeps++;
}

struct ctx {
    struct fake_clock fc;
    azc_client_clock clock;
    azc_client_options o;
    azc_client *c;
    struct server *srv;
    int refuse_fd;
    int retry_calls;
    char last_reason[160];
    const struct step *late_steps;  /* on_retry starts a server on refuse_fd with these */
    size_t late_n;
};

static void on_retry(void *arg, int attempt, uint64_t delay_ms, const char *reason)
{
    struct ctx *x = arg;

    (void)attempt;
    (void)delay_ms;
    x->retry_calls++;
    snprintf(x->last_reason, sizeof x->last_reason, "%s", reason);
    if (x->late_steps != NULL && x->srv == NULL) {
        x->srv = server_start_on(x->late_steps, x->late_n, x->refuse_fd);
        x->refuse_fd = -1;   /* the server's now */
    }
}

static int setup(void **state)
{
    struct ctx *x = calloc(1, sizeof *x);

    if (x == NULL)
        return -1;
    x->clock.mono_ms = fake_mono;
    x->clock.wall_ms = fake_wall;
    x->clock.sleep_ms = fake_sleep;
    x->clock.arg = &x->fc;
    azc_client_options_init(&x->o);
    x->o.max_attempts = 5;
    x->o.budget_ms = 30000;          /* fake milliseconds, Retry-After included */
    x->o.attempt_timeout_ms = 2000;
    x->o.backoff_base_ms = 5;
    x->o.backoff_cap_ms = 40;
    x->o.clock = &x->clock;
    x->o.on_retry = on_retry;
    x->o.on_retry_arg = x;
    x->refuse_fd = -1;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *x = *state;

    azc_client_free(x->c);
    server_stop(x->srv);
    if (x->refuse_fd >= 0)
        close(x->refuse_fd);
    free(x);
    return 0;
}

static void client_make(struct ctx *x)
{
    azc_err e;

    assert_int_equal(azc_client_new(&x->o, &x->c, &e), AZC_OK);
}

static int call(struct ctx *x, const char *method, const char *path, const char *body,
                azc_client_result *res)
{
    char url[128];
    azc_client_request rq = { 0 };
    azc_err e;

    url_of(x->srv != NULL ? x->srv->port : 0, path, url, sizeof url);
    rq.method = method;
    rq.url = url;
    rq.body = body;
    rq.body_len = body != NULL ? strlen(body) : 0;
    return azc_client_do(x->c, &rq, res, &e);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_transient_then_allow(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = {
        { 403, { { "Authz-Decision", "transient" }, { "Authz-Reason", "revision_pending" },
                 { "Retry-After", "1" } }, "{\"error\":\"transient\"}" },
        { 200, { { "Authz-Decision", "allow" }, { "X-Test", "yes" } }, "{\"ok\":true}" },
    };
    azc_client_result res;

    x->srv = server_start(steps, 2);
    client_make(x);
    assert_int_equal(call(x, "GET", "/runtime-groups/42", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "{\"ok\":true}");
    assert_int_equal(res.body_len, 11);
    assert_string_equal(azc_client_result_header(&res, "x-test"), "yes");
    assert_int_equal(res.attempts, 2);
    assert_int_equal(res.nretries, 1);
    assert_int_equal(res.retries[0].attempt, 1);
    assert_int_equal(res.retries[0].status, 403);
    assert_int_equal(res.retries[0].delay_ms, 1000);   /* Retry-After honoured exactly */
    assert_non_null(strstr(res.retries[0].reason, "403 transient (revision_pending)"));
    assert_non_null(strstr(res.retries[0].reason, "Retry-After 1"));
    assert_int_equal(x->fc.slept_ms, 1000);
    assert_true(res.elapsed_ms >= 1000);
    assert_int_equal(x->retry_calls, 1);
    assert_string_equal(res.stop, "answer");
    assert_int_equal(server_seen(x->srv), 2);
    assert_string_equal(x->srv->seen[1].uri, "/runtime-groups/42");
    assert_string_equal(res.idempotency_key, "");   /* GET: no key */
    assert_string_equal(x->srv->seen[0].idem, "");
    azc_client_result_clear(&res);
}

static void test_final_403_not_retried(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = {
        { 403, { { "Authz-Decision", "final" }, { "Retry-After", "1" } }, "{\"denied\":1}" },
        { 403, { { NULL, NULL } }, "{\"denied\":2}" },   /* no marker: final too */
        { 200, { { NULL, NULL } }, "{}" },
    };
    azc_client_result res;

    x->srv = server_start(steps, 3);
    client_make(x);
    assert_int_equal(call(x, "GET", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 403);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(res.nretries, 0);
    assert_string_equal(res.stop, "final 403");
    assert_string_equal(res.body, "{\"denied\":1}");
    azc_client_result_clear(&res);
    assert_int_equal(call(x, "POST", "/a", "{}", &res), AZC_OK);
    assert_int_equal(res.status, 403);
    assert_int_equal(res.attempts, 1);
    assert_string_equal(res.body, "{\"denied\":2}");
    azc_client_result_clear(&res);
    assert_int_equal(server_seen(x->srv), 2);
    assert_int_equal(x->fc.sleeps, 0);
}

static void test_other_answers_not_retried(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = {
        { 500, { { NULL, NULL } }, "{}" },
        { 404, { { "Retry-After", "1" } }, "{}" },
        { 200, { { NULL, NULL } }, "{}" },
    };
    azc_client_result res;

    x->srv = server_start(steps, 3);
    client_make(x);
    assert_int_equal(call(x, "GET", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 500);
    assert_int_equal(res.attempts, 1);
    azc_client_result_clear(&res);
    assert_int_equal(call(x, "DELETE", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 404);
    assert_int_equal(res.attempts, 1);
    azc_client_result_clear(&res);
}

static void test_retry_after_seconds(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = {
        { 503, { { "Retry-After", "2" } }, "{\"error\":\"unavailable\"}" },
        { 429, { { "Retry-After", "0" } }, "{\"error\":\"slow down\"}" },   /* 0: back off */
        { 200, { { NULL, NULL } }, "{}" },
    };
    azc_client_result res;

    x->srv = server_start(steps, 3);
    client_make(x);
    assert_int_equal(call(x, "GET", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.attempts, 3);
    assert_int_equal(res.retries[0].status, 503);
    assert_int_equal(res.retries[0].delay_ms, 2000);
    assert_non_null(strstr(res.retries[0].reason, "503, Retry-After 2"));
    assert_int_equal(res.retries[1].status, 429);
    /* second attempt's window: base 5 doubled once */
    assert_true(res.retries[1].delay_ms <= 10);
    assert_int_equal(x->fc.slept_ms, 2000 + res.retries[1].delay_ms);
    azc_client_result_clear(&res);
}

static void test_retry_after_http_date(void **state)
{
    struct ctx *x = *state;
    struct step steps[] = {
        { 503, { { "Retry-After", NULL } }, "{}" },
        { 200, { { NULL, NULL } }, "{}" },
    };
    char date[64];
    time_t t = (time_t)(fake_wall(&x->fc) / 1000u) + 3;
    struct tm tm;
    azc_client_result res;

    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    steps[0].h[0][1] = date;
    x->srv = server_start(steps, 2);
    client_make(x);
    assert_int_equal(call(x, "GET", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.attempts, 2);
    /* the date has whole seconds: between 2 and 3 s from now */
    assert_true(res.retries[0].delay_ms > 1900 && res.retries[0].delay_ms <= 3000);
    azc_client_result_clear(&res);
}

static void test_retry_after_parse(void **state)
{
    /* 1994-11-06 08:49:37 UTC, the RFC's example, in its three forms */
    const uint64_t at = 784111777000u;
    uint64_t d = 0;

    (void)state;
    assert_int_equal(azc_retry_after_parse("120", 0, &d), AZC_OK);
    assert_int_equal(d, 120000);
    assert_int_equal(azc_retry_after_parse("0", 0, &d), AZC_OK);
    assert_int_equal(d, 0);
    assert_int_equal(azc_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", at - 1500, &d),
                     AZC_OK);
    assert_int_equal(d, 1500);
    assert_int_equal(azc_retry_after_parse("Sunday, 06-Nov-94 08:49:37 GMT", at - 10, &d), AZC_OK);
    assert_int_equal(d, 10);
    assert_int_equal(azc_retry_after_parse("Sun Nov  6 08:49:37 1994", at - 2000, &d), AZC_OK);
    assert_int_equal(d, 2000);
    /* a date in the past: retry now */
    assert_int_equal(azc_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", at + 5000, &d),
                     AZC_OK);
    assert_int_equal(d, 0);
    assert_int_equal(azc_retry_after_parse("", 0, &d), AZC_EINVAL);
    assert_int_equal(azc_retry_after_parse("-1", 0, &d), AZC_EINVAL);
    assert_int_equal(azc_retry_after_parse("1.5", 0, &d), AZC_EINVAL);
    assert_int_equal(azc_retry_after_parse("99999999999999999999", 0, &d), AZC_EINVAL);
    assert_int_equal(azc_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT x", 0, &d), AZC_EINVAL);
    assert_int_equal(azc_retry_after_parse("tomorrow", 0, &d), AZC_EINVAL);
}

static void test_budget_exhausted(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = { { 503, { { NULL, NULL } }, "{\"error\":\"busy\"}" } };
    azc_client_result res;

    x->o.max_attempts = 100;
    x->o.budget_ms = 50;
    x->o.backoff_base_ms = 10;
    x->o.backoff_cap_ms = 40;
    x->srv = server_start(steps, 1);
    client_make(x);
    assert_int_equal(call(x, "GET", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 503);    /* the last answer is the caller's */
    assert_string_equal(res.body, "{\"error\":\"busy\"}");
    assert_true(res.attempts >= 2 && res.attempts < 100);
    assert_int_equal(res.nretries, (size_t)res.attempts - 1);
    assert_non_null(strstr(res.stop, "budget exhausted (50 ms)"));
    assert_true(res.elapsed_ms < 50);
    azc_client_result_clear(&res);

    /* A Retry-After beyond the budget ends the call at once. */
    azc_client_free(x->c);
    server_stop(x->srv);
    {
        const struct step s2[] = { { 503, { { "Retry-After", "5" } }, "{}" } };

        x->srv = server_start(s2, 1);
    }
    x->o.budget_ms = 1000;
    x->fc.sleeps = 0;
    client_make(x);
    assert_int_equal(call(x, "GET", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 503);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(x->fc.sleeps, 0);
    assert_non_null(strstr(res.stop, "budget exhausted"));
    assert_non_null(strstr(res.stop, "next wait 5000 ms"));
    azc_client_result_clear(&res);
}

static void test_attempts_exhausted(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = { { 429, { { NULL, NULL } }, "{}" } };
    azc_client_result res;

    x->o.max_attempts = 3;
    x->srv = server_start(steps, 1);
    client_make(x);
    assert_int_equal(call(x, "GET", "/a", NULL, &res), AZC_OK);
    assert_int_equal(res.status, 429);
    assert_int_equal(res.attempts, 3);
    assert_int_equal(res.nretries, 2);
    assert_true(res.retries[0].delay_ms <= 5 && res.retries[1].delay_ms <= 10);
    assert_non_null(strstr(res.stop, "attempts exhausted (3): 429"));
    azc_client_result_clear(&res);
}

static void test_post_same_idempotency_key(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = {
        { 503, { { "Retry-After", "1" } }, "{}" },
        { 429, { { NULL, NULL } }, "{}" },
        { 201, { { NULL, NULL } }, "{\"id\":\"t1\"}" },
        { 201, { { NULL, NULL } }, "{\"id\":\"t2\"}" },
    };
    azc_client_result res;
    azc_client_request rq = { 0 };
    char url[128];
    azc_err e;

    x->srv = server_start(steps, 4);
    client_make(x);
    assert_int_equal(call(x, "POST", "/v1/teams", "{\"name\":\"payments\"}", &res), AZC_OK);
    assert_int_equal(res.status, 201);
    assert_int_equal(res.attempts, 3);
    assert_int_equal(server_seen(x->srv), 3);
    assert_int_equal(strlen(x->srv->seen[0].idem), 36);   /* a generated UUID */
    assert_string_equal(x->srv->seen[0].idem, res.idempotency_key);
    assert_string_equal(x->srv->seen[1].idem, res.idempotency_key);
    assert_string_equal(x->srv->seen[2].idem, res.idempotency_key);
    assert_string_equal(x->srv->seen[2].body, "{\"name\":\"payments\"}");
    assert_string_equal(x->srv->seen[2].method, "POST");
    azc_client_result_clear(&res);

    /* The caller's own key is used as given. */
    url_of(x->srv->port, "/v1/teams", url, sizeof url);
    rq.method = "POST";
    rq.url = url;
    rq.body = "{}";
    rq.body_len = 2;
    rq.idempotency_key = "my-key-1";
    assert_int_equal(azc_client_do(x->c, &rq, &res, &e), AZC_OK);
    assert_string_equal(x->srv->seen[3].idem, "my-key-1");
    assert_string_equal(res.idempotency_key, "my-key-1");
    azc_client_result_clear(&res);
    rq.idempotency_key = "bad key";
    assert_int_equal(azc_client_do(x->c, &rq, &res, &e), AZC_EINVAL);
    azc_client_result_clear(&res);
}

static int call_port(struct ctx *x, int port, const char *method, int idem,
                     azc_client_result *res, azc_err *e)
{
    char url[128];
    azc_client_request rq = { 0 };

    url_of(port, "/v1/users", url, sizeof url);
    rq.method = method;
    rq.url = url;
    rq.idempotency = idem;
    if (strcmp(method, "POST") == 0) {
        rq.body = "{}";
        rq.body_len = 2;
    }
    return azc_client_do(x->c, &rq, res, e);
}

static void test_refused_get_retried(void **state)
{
    struct ctx *x = *state;
    azc_client_result res;
    azc_err e;
    int port;

    x->o.max_attempts = 3;
    x->refuse_fd = refusing_socket(&port);
    client_make(x);
    assert_int_equal(call_port(x, port, "GET", AZC_IDEM_AUTO, &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.status, 0);
    assert_null(res.body);
    assert_int_equal(res.attempts, 3);
    assert_int_equal(res.nretries, 2);
    assert_int_equal(res.retries[0].status, 0);
    assert_string_equal(res.retries[0].reason, "connection refused");
    assert_non_null(strstr(e.msg, "connection refused (3 attempts)"));
    assert_non_null(strstr(res.stop, "attempts exhausted"));
    azc_client_result_clear(&res);
}

static void test_refused_then_served(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = { { 200, { { NULL, NULL } }, "{\"items\":[]}" } };
    azc_client_result res;
    azc_err e;
    int port;

    x->refuse_fd = refusing_socket(&port);
    x->late_steps = steps;   /* the server comes up during the first wait */
    x->late_n = 1;
    client_make(x);
    assert_int_equal(call_port(x, port, "PUT", AZC_IDEM_AUTO, &res, &e), AZC_OK);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.attempts, 2);
    assert_string_equal(res.retries[0].reason, "connection refused");
    assert_string_equal(res.body, "{\"items\":[]}");
    azc_client_result_clear(&res);
}

static void test_refused_post(void **state)
{
    struct ctx *x = *state;
    azc_client_result res;
    azc_err e;
    int port;

    x->o.max_attempts = 3;
    x->refuse_fd = refusing_socket(&port);
    client_make(x);
    /* Without a key the first try may have been applied: never resent. */
    assert_int_equal(call_port(x, port, "POST", AZC_IDEM_NONE, &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.attempts, 1);
    assert_int_equal(res.nretries, 0);
    assert_non_null(strstr(res.stop, "not retryable: connection refused"));
    assert_string_equal(res.idempotency_key, "");
    azc_client_result_clear(&res);
    /* PATCH carries no key either. */
    assert_int_equal(call_port(x, port, "PATCH", AZC_IDEM_AUTO, &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.attempts, 1);
    azc_client_result_clear(&res);
    /* With its (generated) key it is. */
    assert_int_equal(call_port(x, port, "POST", AZC_IDEM_AUTO, &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.attempts, 3);
    assert_int_equal(strlen(res.idempotency_key), 36);
    azc_client_result_clear(&res);
}

static void test_revision_carried(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = {
        { 201, { { "Authz-Revision", "v1.us.0001936a4c2f0003" } }, "{}" },
        { 200, { { "Authz-Revision", "v1.eu.0001936a4c2f0001" } }, "{}" },   /* older */
        { 200, { { "Authz-Revision", "garbage" } }, "{}" },                  /* ignored */
        { 200, { { "Authz-Revision", "v1.eu.0001936a4c300000" } }, "{}" },   /* newer */
        { 200, { { NULL, NULL } }, "{}" },
    };
    azc_client_result res;
    int i;

    x->o.token = "tok-123";
    x->srv = server_start(steps, 5);
    client_make(x);
    assert_string_equal(azc_client_revision(x->c), "");
    for (i = 0; i < 5; i++) {
        assert_int_equal(call(x, i == 0 ? "POST" : "GET", "/v1/x", i == 0 ? "{}" : NULL, &res),
                         AZC_OK);
        azc_client_result_clear(&res);
    }
    assert_int_equal(server_seen(x->srv), 5);
    assert_string_equal(x->srv->seen[0].revision, "");
    assert_string_equal(x->srv->seen[1].revision, "v1.us.0001936a4c2f0003");
    assert_string_equal(x->srv->seen[2].revision, "v1.us.0001936a4c2f0003");
    assert_string_equal(x->srv->seen[3].revision, "v1.us.0001936a4c2f0003");
    assert_string_equal(x->srv->seen[4].revision, "v1.eu.0001936a4c300000");
    assert_string_equal(x->srv->seen[4].auth, "Bearer tok-123");
    assert_string_equal(azc_client_revision(x->c), "v1.eu.0001936a4c300000");
}

static void test_revision_merge(void **state)
{
    struct ctx *x = *state;
    azc_err e;

    client_make(x);
    assert_int_equal(azc_client_merge_revision(x->c, "v1.us.0000000000000010", &e), AZC_OK);
    assert_int_equal(azc_client_merge_revision(x->c, "v1.ap.0000000000000010", &e), AZC_OK);
    assert_string_equal(azc_client_revision(x->c), "v1.us.0000000000000010");   /* tie: kept */
    assert_int_equal(azc_client_merge_revision(x->c, "v1.ap.0000000000000011", &e), AZC_OK);
    assert_string_equal(azc_client_revision(x->c), "v1.ap.0000000000000011");
    assert_int_equal(azc_client_merge_revision(x->c, "v1.AP.0000000000000012", &e), AZC_EINVAL);
    assert_string_equal(azc_client_revision(x->c), "v1.ap.0000000000000011");
}

/* A server that reads each request and closes without answering (a
 * crash mid-request): the request may have been applied. */
struct closer {
    pthread_t th;
    int fd, n;
};

static void *closer_main(void *arg)
{
    struct closer *k = arg;
    char buf[4096];
    int i;

    for (i = 0; i < k->n; i++) {
        int c = accept(k->fd, NULL, NULL);

        if (c < 0)
            break;
        if (read(c, buf, sizeof buf) < 0) {
            /* the client went first: nothing to do but close */
        }
        close(c);
    }
    return NULL;
}

static void test_closed_without_answer(void **state)
{
    struct ctx *x = *state;
    struct closer k;
    azc_client_result res;
    azc_err e;
    int port;

    k.fd = refusing_socket(&port);
    k.n = 4;   /* three GET attempts, one POST */
    assert_int_equal(listen(k.fd, 16), 0);
    assert_int_equal(pthread_create(&k.th, NULL, closer_main, &k), 0);
    x->o.max_attempts = 3;
    client_make(x);
    assert_int_equal(call_port(x, port, "GET", AZC_IDEM_AUTO, &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.attempts, 3);
    assert_string_equal(res.retries[0].reason, "connection closed without an answer");
    azc_client_result_clear(&res);
    assert_int_equal(call_port(x, port, "POST", AZC_IDEM_NONE, &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.attempts, 1);
    assert_non_null(strstr(res.stop, "not retryable: connection closed without an answer"));
    azc_client_result_clear(&res);
    assert_int_equal(pthread_join(k.th, NULL), 0);
    close(k.fd);
}

/* Real clock: a server that accepts connections and never answers. The
 * per-attempt timeout ends each attempt, the budget the call. */
static void test_timeout_and_budget(void **state)
{
    struct ctx *x = *state;
    azc_client_result res;
    azc_err e;
    int port, fd = refusing_socket(&port);
    struct timespec t0, t1;
    long ms;

    assert_int_equal(listen(fd, 16), 0);   /* the kernel accepts, nobody reads */
    x->refuse_fd = fd;
    x->o.clock = NULL;
    x->o.max_attempts = 10;
    x->o.budget_ms = 80;
    x->o.attempt_timeout_ms = 30;
    x->o.backoff_base_ms = 1;
    x->o.backoff_cap_ms = 2;
    client_make(x);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(call_port(x, port, "GET", AZC_IDEM_AUTO, &res, &e), AZC_EUNAVAIL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (long)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(res.attempts >= 2 && res.attempts <= 4);
    assert_non_null(strstr(res.retries[0].reason, "timed out after 30 ms"));
    assert_true(ms >= 60 && ms < 500);
    assert_true(res.elapsed_ms <= 90);
    azc_client_result_clear(&res);
}

static void test_bad_requests(void **state)
{
    struct ctx *x = *state;
    azc_client_request rq = { 0 };
    azc_client_result res;
    azc_client_options o;
    azc_client *c = NULL;
    azc_err e;

    client_make(x);
    rq.method = "GET";
    rq.url = "ftp://127.0.0.1/";
    assert_int_equal(azc_client_do(x->c, &rq, &res, &e), AZC_EINVAL);
    azc_client_result_clear(&res);
    rq.url = "not a url";
    assert_int_equal(azc_client_do(x->c, &rq, &res, &e), AZC_EINVAL);
    azc_client_result_clear(&res);
    rq.url = "http://127.0.0.1:1/";
    rq.method = "BREW";
    assert_int_equal(azc_client_do(x->c, &rq, &res, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "unsupported method"));
    azc_client_result_clear(&res);
    azc_client_options_init(&o);
    o.max_attempts = 0;
    assert_int_equal(azc_client_new(&o, &c, &e), AZC_EINVAL);
    assert_null(c);
    azc_client_options_init(&o);
    o.backoff_cap_ms = 1;
    o.backoff_base_ms = 2;
    assert_int_equal(azc_client_new(&o, &c, &e), AZC_EINVAL);
    azc_client_free(NULL);
    azc_client_result_clear(NULL);
}

/* An https URL against a plain-http server: the handshake fails, the
 * call ends with a message, nothing leaks. */
static void test_https_to_plain_server(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = { { 200, { { NULL, NULL } }, "{}" } };
    azc_client_request rq = { 0 };
    azc_client_result res;
    char url[128];
    azc_err e;

    x->o.max_attempts = 2;
    x->srv = server_start(steps, 1);
    client_make(x);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/", x->srv->port);
    rq.method = "GET";
    rq.url = url;
    assert_int_equal(azc_client_do(x->c, &rq, &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.attempts, 2);   /* a GET: retried, then given up */
    azc_client_result_clear(&res);
}

/* A self-signed certificate for `san` ("IP:127.0.0.1,DNS:localhost"),
 * written as PEM to `path`, and a server context with it. */
static SSL_CTX *tls_server_ctx(const char *san, const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    X509_EXTENSION *ext;
    X509V3_CTX v3;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    FILE *f;

    assert_non_null(k);
    assert_non_null(x);
    assert_non_null(ctx);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -60));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, k), 1);
    name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"authz test", -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
    return ctx;
}

static int https_get(struct ctx *x, const char *host, azc_client_result *res, azc_err *e)
{
    azc_client_request rq = { 0 };
    char url[128];

    snprintf(url, sizeof url, "https://%s:%d/secure", host, x->srv->port);
    rq.method = "GET";
    rq.url = url;
    return azc_client_do(x->c, &rq, res, e);
}

/* https verifies the certificate and the name: against the system store a
 * self-signed one fails, and is not retried; with it as the CA file it
 * passes, for the IP literal and the DNS name it carries; a name it does
 * not carry fails; `insecure` skips the checks. */
static void test_https_verification(void **state)
{
    struct ctx *x = *state;
    const struct step steps[] = { { 200, { { NULL, NULL } }, "{\"tls\":true}" } };
    char path[] = "/tmp/test_client_caXXXXXX";
    azc_client_result res;
    azc_err e;
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    close(fd);
    x->srv = server_start_tls(steps, 1, -1, tls_server_ctx("IP:127.0.0.1,DNS:localhost", path));
    x->o.max_attempts = 3;
    client_make(x);
    assert_int_equal(https_get(x, "127.0.0.1", &res, &e), AZC_EUNAVAIL);
    assert_int_equal(res.attempts, 1);
    assert_non_null(strstr(e.msg, "certificate verification failed"));
    assert_non_null(strstr(res.stop, "not retryable: certificate verification failed"));
    azc_client_result_clear(&res);
    azc_client_free(x->c);
    x->c = NULL;

    x->o.ca_file = path;
    client_make(x);
    assert_int_equal(https_get(x, "127.0.0.1", &res, &e), AZC_OK);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "{\"tls\":true}");
    azc_client_result_clear(&res);
    assert_int_equal(https_get(x, "localhost", &res, &e), AZC_OK);
    assert_int_equal(res.status, 200);
    azc_client_result_clear(&res);
    azc_client_free(x->c);
    x->c = NULL;
    server_stop(x->srv);

    /* Trusted, but issued to another name. */
    x->srv = server_start_tls(steps, 1, -1, tls_server_ctx("DNS:other.example", path));
    client_make(x);
    assert_int_equal(https_get(x, "127.0.0.1", &res, &e), AZC_EUNAVAIL);
    assert_non_null(strstr(e.msg, "certificate verification failed"));
    assert_int_equal(res.attempts, 1);
    azc_client_result_clear(&res);
    azc_client_free(x->c);
    x->c = NULL;

    x->o.ca_file = NULL;
    x->o.insecure = 1;
    client_make(x);
    assert_int_equal(https_get(x, "127.0.0.1", &res, &e), AZC_OK);
    assert_int_equal(res.status, 200);
    azc_client_result_clear(&res);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_transient_then_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_final_403_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_answers_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_http_date, setup, teardown),
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test_setup_teardown(test_budget_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attempts_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_same_idempotency_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_get_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_then_served, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_post, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_without_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revision_carried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revision_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_and_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_to_plain_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_verification, setup, teardown),
    };

    /* The servers' loops are stopped from the test's thread. */
    if (evthread_use_pthreads() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
