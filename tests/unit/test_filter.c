/*
 * libauthzfilter's decision and its feed, against an in-process fake
 * authz-server (evhttp on a thread of its own) that serves a snapshot and
 * a change stream whose lines the test pushes: no policy -> unavailable;
 * allow; arrival-pending and revision-pending denies woken by the lines
 * that satisfy them; stale origins failing closed only for what depends
 * on them; tokens and routes; the waiters' cap; a 410 reloading the
 * snapshot; a bad line neither applied nor fatal.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/hlc.h"
#include "common/jwt.h"
#include "common/revision.h"
#include "gateway-filter/authzfilter.h"

#define U_ALICE "11111111-1111-4111-8111-111111111111"
#define U_BOB   "22222222-2222-4222-8222-222222222222"
#define U_CAROL "33333333-3333-4333-8333-333333333333"
#define T_OPS   "44444444-4444-4444-8444-444444444444"
#define ROLE    "55555555-5555-4555-8555-555555555555"

/* ---- the fake authz-server ---------------------------------------------- */

/* The fake's answers to format=ndjson: plain JSON (a server without the
 * format), the whole NDJSON answer, or one spoilt as a cut connection, a
 * wrong count or an unknown kind would spoil it. */
enum { NDJ_NO, NDJ_OK, NDJ_NO_END, NDJ_BAD_COUNT, NDJ_BAD_KIND };

struct fake {
    struct event_base *base;
    struct evhttp *http;
    struct event *pump;
    pthread_t thread;
    int port;
    pthread_mutex_t lock;
    char *snapshot;              /* NULL: answer 503 */
    int ndjson;                  /* NDJ_*: how format=ndjson is answered */
    atomic_int ndjson_asked;     /* snapshot requests with format=ndjson */
    json_t *lines;               /* queued stream lines (strings) */
    int answer_410;              /* the next stream request gets 410 */
    struct evhttp_request *stream;
    atomic_int snapshots_served, streams_opened;
};

/* fk->snapshot as the NDJSON lines of authz-server's format=ndjson,
 * spoilt as fk->ndjson says. */
static void ndjson_answer(struct fake *fk, struct evbuffer *b)
{
    static const char *const tables[3] = { "users", "memberships", "policies" };
    static const char *const kinds[3] = { "user", "membership", "policy" };
    json_t *snap = json_loads(fk->snapshot, 0, NULL), *head, *row;
    char *text;
    size_t k, i;

    assert_non_null(snap);
    head = json_pack("{s:O, s:O, s:O}", "region", json_object_get(snap, "region"), "cursor",
                     json_object_get(snap, "cursor"), "watermarks",
                     json_object_get(snap, "watermarks"));
    text = json_dumps(head, JSON_COMPACT);
    evbuffer_add_printf(b, "%s\n", text);
    free(text);
    json_decref(head);
    for (k = 0; k < 3; k++) {
        json_array_foreach(json_object_get(snap, tables[k]), i, row) {
            json_t *l = json_pack("{s:s, s:O}", "kind",
                                  fk->ndjson == NDJ_BAD_KIND ? "gizmo" : kinds[k], "row", row);

            text = json_dumps(l, JSON_COMPACT);
            evbuffer_add_printf(b, "%s\n", text);
            free(text);
            json_decref(l);
        }
    }
    if (fk->ndjson != NDJ_NO_END)
        evbuffer_add_printf(b, "{\"end\":{\"users\":%zu,\"memberships\":%zu,\"policies\":%zu}}\n",
                            json_array_size(json_object_get(snap, "users")) +
                                (fk->ndjson == NDJ_BAD_COUNT),
                            json_array_size(json_object_get(snap, "memberships")),
                            json_array_size(json_object_get(snap, "policies")));
    json_decref(snap);
}

static void on_snapshot(struct evhttp_request *req, void *arg)
{
    struct fake *fk = arg;
    struct evbuffer *b = evbuffer_new();

    pthread_mutex_lock(&fk->lock);
    if (fk->snapshot == NULL) {
        pthread_mutex_unlock(&fk->lock);
        evhttp_send_reply(req, 503, "Unavailable", NULL);
        evbuffer_free(b);
        return;
    }
    if (strstr(evhttp_request_get_uri(req), "format=ndjson") != NULL)
        atomic_fetch_add(&fk->ndjson_asked, 1);
    if (fk->ndjson != NDJ_NO && strstr(evhttp_request_get_uri(req), "format=ndjson") != NULL) {
        ndjson_answer(fk, b);
        pthread_mutex_unlock(&fk->lock);
        atomic_fetch_add(&fk->snapshots_served, 1);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/x-ndjson");
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    evbuffer_add(b, fk->snapshot, strlen(fk->snapshot));
    pthread_mutex_unlock(&fk->lock);
    atomic_fetch_add(&fk->snapshots_served, 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void on_changes(struct evhttp_request *req, void *arg)
{
    struct fake *fk = arg;
    int gone;

    pthread_mutex_lock(&fk->lock);
    gone = fk->answer_410;
    fk->answer_410 = 0;
    pthread_mutex_unlock(&fk->lock);
    if (gone) {
        evhttp_send_reply(req, 410, "Gone", NULL);
        return;
    }
    if (fk->stream != NULL)
        evhttp_send_reply_end(fk->stream);
    atomic_fetch_add(&fk->streams_opened, 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/x-ndjson");
    evhttp_send_reply_start(req, 200, "OK");
    /* Kept even when its client goes: libevent then hands the unfinished
     * request over to us, and evhttp_send_reply_end frees it. */
    fk->stream = req;
}

/* Every 2 ms: the queued lines to the open stream. */
static void on_pump(evutil_socket_t s, short what, void *arg)
{
    struct fake *fk = arg;
    size_t i;

    (void)s;
    (void)what;
    if (fk->stream == NULL)
        return;
    pthread_mutex_lock(&fk->lock);
    for (i = 0; i < json_array_size(fk->lines); i++) {
        struct evbuffer *b = evbuffer_new();
        const char *line = json_string_value(json_array_get(fk->lines, i));

        evbuffer_add(b, line, strlen(line));
        evbuffer_add(b, "\n", 1);
        evhttp_send_reply_chunk(fk->stream, b);
        evbuffer_free(b);
    }
    json_array_clear(fk->lines);
    pthread_mutex_unlock(&fk->lock);
}

static void *fake_main(void *arg)
{
    struct fake *fk = arg;

    event_base_loop(fk->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static struct fake *fake_new(void)
{
    struct fake *fk = calloc(1, sizeof *fk);
    struct evhttp_bound_socket *bs;
    struct timeval tv = { 0, 2000 };
    evutil_socket_t fd;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    assert_non_null(fk);
    assert_int_equal(evthread_use_pthreads(), 0);
    pthread_mutex_init(&fk->lock, NULL);
    fk->lines = json_array();
    fk->base = event_base_new();
    fk->http = evhttp_new(fk->base);
    assert_non_null(fk->http);
    assert_int_equal(evhttp_set_cb(fk->http, "/v1/policy/snapshot", on_snapshot, fk), 0);
    assert_int_equal(evhttp_set_cb(fk->http, "/v1/policy/changes", on_changes, fk), 0);
    bs = evhttp_bind_socket_with_handle(fk->http, "127.0.0.1", 0);
    assert_non_null(bs);
    fd = evhttp_bound_socket_get_fd(bs);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    fk->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    fk->pump = event_new(fk->base, -1, EV_PERSIST, on_pump, fk);
    assert_int_equal(event_add(fk->pump, &tv), 0);
    assert_int_equal(pthread_create(&fk->thread, NULL, fake_main, fk), 0);
    return fk;
}

static void fake_free(struct fake *fk)
{
    event_base_loopbreak(fk->base);
    pthread_join(fk->thread, NULL);
    if (fk->stream != NULL)
        evhttp_send_reply_end(fk->stream);
    event_free(fk->pump);
    evhttp_free(fk->http);
    event_base_free(fk->base);
    free(fk->snapshot);
    json_decref(fk->lines);
    pthread_mutex_destroy(&fk->lock);
    free(fk);
}

static void fake_set_snapshot(struct fake *fk, json_t *snap)
{
    char *s = json_dumps(snap, JSON_COMPACT);

    json_decref(snap);
    pthread_mutex_lock(&fk->lock);
    free(fk->snapshot);
    fk->snapshot = s;
    pthread_mutex_unlock(&fk->lock);
}

static void fake_push(struct fake *fk, json_t *line)
{
    char *s = json_dumps(line, JSON_COMPACT);

    json_decref(line);
    pthread_mutex_lock(&fk->lock);
    json_array_append_new(fk->lines, json_string(s));
    pthread_mutex_unlock(&fk->lock);
    free(s);
}

static void fake_push_raw(struct fake *fk, const char *text)
{
    pthread_mutex_lock(&fk->lock);
    json_array_append_new(fk->lines, json_string(text));
    pthread_mutex_unlock(&fk->lock);
}

/* ---- policy rows ---------------------------------------------------------- */

static uint64_t now_hlc(long long offset_ms)
{
    return AZC_HLC_MAKE((uint64_t)((long long)azc_wall_ms() + offset_ms), 0);
}

static json_t *user_row(const char *id, const char *subject, const char *origin, int deleted)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:i, s:b}", "user_id", id, "subject", subject,
                     "hlc", (json_int_t)now_hlc(0), "origin", origin, "origin_seq", 1,
                     "deleted", deleted);
}

static json_t *policy_row(const char *aid, const char *ptype, const char *pid,
                          const char *resource, const char *origin, int deleted)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:I, s:s, s:i, s:b}",
                     "assignment_id", aid, "principal_type", ptype, "principal_id", pid,
                     "role_id", ROLE, "region", "*", "resource", resource, "permissions",
                     "runtime_groups:read", "hlc", (json_int_t)now_hlc(0), "origin", origin,
                     "origin_seq", 2, "deleted", deleted);
}

/* Watermarks: applied = known = now + offset, per origin. */
static json_t *marks(long long us, long long eu, long long ap)
{
    return json_pack("{s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}}",
                     "us", "applied", (json_int_t)now_hlc(us), "known", (json_int_t)now_hlc(us),
                     "eu", "applied", (json_int_t)now_hlc(eu), "known", (json_int_t)now_hlc(eu),
                     "ap", "applied", (json_int_t)now_hlc(ap), "known", (json_int_t)now_hlc(ap));
}

static json_t *snapshot(long long cursor, json_t *wm, json_t *users, json_t *memberships,
                        json_t *policies)
{
    char c[32];

    snprintf(c, sizeof c, "%lld", cursor);
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}", "region", "eu", "cursor", c,
                     "watermarks", wm, "users", users, "memberships", memberships,
                     "policies", policies);
}

static json_t *line(long long cursor, json_t *changes, json_t *wm)
{
    char c[32];

    snprintf(c, sizeof c, "%lld", cursor);
    return json_pack("{s:o, s:s, s:b, s:o}", "changes", changes, "cursor", c, "more", 0,
                     "watermarks", wm);
}

static json_t *change(long long seq, const char *kind, json_t *row)
{
    return json_pack("{s:I, s:s, s:o}", "seq", (json_int_t)seq, "kind", kind, "row", row);
}

/* ---- fixture ---------------------------------------------------------------- */

struct fixture {
    char dir[64];
    struct fake *fk;
    authzfilter *f;
    unsigned char *key;
    size_t key_len;
    char conf[128];
    int mark;                   /* a count to wait beyond */
};

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    fclose(f);
}

static char *token_for(struct fixture *fx, const char *sub, long ttl)
{
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "sub", sub, "iss", "authz-test",
                               "aud", "authz-gateway", "iat", (json_int_t)time(NULL),
                               "exp", (json_int_t)(time(NULL) + ttl));
    char *tok = NULL;
    azc_err e;

    assert_int_equal(azc_jwt_sign("ES256", fx->key, fx->key_len, "k1", claims, &tok, &e),
                     AZC_OK);
    json_decref(claims);
    return tok;
}

static void make_keys(struct fixture *fx)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    BIO *b;
    char *data, path[128];
    long n;

    assert_non_null(k);
    b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(b, &data);
    fx->key = malloc((size_t)n);
    memcpy(fx->key, data, (size_t)n);
    fx->key_len = (size_t)n;
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    n = BIO_get_mem_data(b, &data);
    snprintf(path, sizeof path, "%s/k1.pem", fx->dir);
    {
        FILE *f = fopen(path, "wb");

        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, (size_t)n, f), (size_t)n);
        fclose(f);
    }
    BIO_free(b);
    EVP_PKEY_free(k);
    snprintf(path, sizeof path, "%s/keys.json", fx->dir);
    write_text(path, "[{\"kid\": \"k1\", \"alg\": \"ES256\", \"file\": \"k1.pem\"}]");
}

/* A filter on the fake, with `extra` ("\"key\": value" pairs for the
 * decision section) and max_staleness_ms. */
static void open_filter(struct fixture *fx, const char *decision_extra, long staleness_ms)
{
    char path[128], text[2048], err[256];

    snprintf(path, sizeof path, "%s/routes.json", fx->dir);
    write_text(path, "{\"routes\": [{\"method\": \"GET\", \"path\": \"/runtime-groups/{id}\","
                     " \"action\": \"runtime_groups:read\", \"resource\": \"runtime_groups/{id}\"}]}");
    snprintf(fx->conf, sizeof fx->conf, "%s/filter.json", fx->dir);
    snprintf(text, sizeof text,
             "{\"service\": {\"region\": \"eu\", \"regions\": \"us,eu,ap\"},"
             " \"policy\": {\"url\": \"http://127.0.0.1:%d\", \"max_staleness_ms\": %ld,"
             "              \"backoff_max_ms\": 100},"
             " \"routes\": {\"file\": \"%s/routes.json\"},"
             " \"jwt\": {\"keys_file\": \"%s/keys.json\", \"issuer\": \"authz-test\","
             "          \"audience\": \"authz-gateway\"},"
             " \"decision\": {\"clock_tolerance_ms\": 20 %s%s},"
             " \"log\": {\"level\": \"error\"}}",
             fx->fk->port, staleness_ms, fx->dir, fx->dir, decision_extra[0] ? "," : "",
             decision_extra);
    write_text(fx->conf, text);
    assert_int_equal(af_open(fx->conf, &fx->f, err, sizeof err), 0);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);

    assert_non_null(fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/test_filter.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    make_keys(fx);
    fx->fk = fake_new();
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char cmd[128];

    af_close(fx->f);
    fake_free(fx->fk);
    free(fx->key);
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

static void wait_for(int (*cond)(struct fixture *), struct fixture *fx, const char *what)
{
    struct timespec ts = { 0, 2 * 1000 * 1000 };
    int i;

    for (i = 0; i < 5000; i++) { /* 10 s at most */
        if (cond(fx))
            return;
        nanosleep(&ts, NULL);
    }
    fail_msg("timed out waiting for %s", what);
}

static int loaded(struct fixture *fx)
{
    return af_ready(fx->f);
}

static void decide(struct fixture *fx, const char *tok, const char *path, const char *rev,
                   int64_t arrival, af_decision *d)
{
    char auth[4096];
    af_request rq;

    memset(&rq, 0, sizeof rq);
    rq.method = "GET";
    rq.path = path;
    if (tok != NULL) {
        snprintf(auth, sizeof auth, "Bearer %s", tok);
        rq.authorization = auth;
    }
    rq.revision = rev;
    rq.revision_count = rev != NULL;
    rq.arrival_ms = arrival;
    af_check(fx->f, &rq, d);
}

static json_t *base_users(void)
{
    return json_pack("[o, o, o]", user_row(U_ALICE, "alice", "us", 0),
                     user_row(U_BOB, "bob", "eu", 0), user_row(U_CAROL, "carol", "ap", 0));
}

static void woke(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static atomic_int *g_flag;
static int flag_set(struct fixture *fx)
{
    (void)fx;
    return atomic_load(g_flag) > 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_no_policy_then_allow_and_final_deny(void **state)
{
    struct fixture *fx = *state;
    af_decision d;
    char *alice = token_for(fx, "alice", 600);

    open_filter(fx, "", 30000);
    decide(fx, alice, "/runtime-groups/rg1", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_UNAVAILABLE);
    assert_string_equal(d.reason, "no_policy");
    assert_false(af_ready(fx->f));
    fake_set_snapshot(fx->fk, snapshot(10, marks(0, 0, 0), base_users(), json_array(),
                                       json_pack("[o]", policy_row("a1", "user", U_ALICE,
                                                                   "runtime_groups/rg1", "us", 0))));
    wait_for(loaded, fx, "the snapshot loaded");
    decide(fx, alice, "/runtime-groups/rg1", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_ALLOW);
    assert_string_equal(d.subject, "alice");
    assert_string_equal(d.origin, "us");
    assert_string_equal(d.resource, "runtime_groups/rg1");
    /* Arrived well before every watermark: final. */
    decide(fx, alice, "/runtime-groups/rg2", NULL, (int64_t)azc_wall_ms() - 5000, &d);
    assert_int_equal(d.outcome, AF_DENY);
    assert_string_equal(d.reason, "no_grant");
    /* Routes and tokens. */
    decide(fx, alice, "/nothing", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_DENY);
    assert_string_equal(d.reason, "no_route");
    decide(fx, NULL, "/runtime-groups/rg1", NULL, 0, &d);
    assert_true(d.unauthenticated);
    assert_string_equal(d.reason, "no_token");
    decide(fx, "e30.e30.e30", "/runtime-groups/rg1", NULL, 0, &d);
    assert_true(d.unauthenticated);
    assert_string_equal(d.reason, "bad_token");
    decide(fx, alice, "/runtime-groups/%2e%2e/x", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_DENY);
    assert_string_equal(d.reason, "bad_path");
    decide(fx, alice, "/runtime-groups/rg1", "v1.us.zz", 0, &d);
    assert_string_equal(d.reason, "bad_revision");
    free(alice);
}

/* A deny whose arrival no origin's watermark has reached yet waits; the
 * line that carries a grant wakes it and it is allowed. */
static void test_arrival_wait_woken_by_grant(void **state)
{
    struct fixture *fx = *state;
    af_decision d;
    af_waiter *w;
    atomic_int flag = 0;
    char *bob = token_for(fx, "bob", 600);
    int64_t arrival;

    open_filter(fx, "", 30000);
    fake_set_snapshot(fx->fk, snapshot(10, marks(-100, -100, -100), base_users(), json_array(),
                                       json_array()));
    wait_for(loaded, fx, "the snapshot loaded");
    arrival = (int64_t)azc_wall_ms();
    decide(fx, bob, "/runtime-groups/rg9", NULL, arrival, &d);
    assert_int_equal(d.outcome, AF_DENY_TRANSIENT);
    assert_string_equal(d.reason, "arrival_pending");
    assert_true(d.retry_after_ms > 0);
    assert_int_equal(af_wait(fx->f, &d, woke, &flag, &w), 0);
    fake_push(fx->fk, line(11, json_pack("[o]", change(11, "policy",
                                                       policy_row("a9", "user", U_BOB,
                                                                  "runtime_groups/rg9", "us", 0))),
                           marks(1000, 1000, 1000)));
    g_flag = &flag;
    wait_for(flag_set, fx, "the waiter woken");
    decide(fx, bob, "/runtime-groups/rg9", NULL, arrival, &d);
    assert_int_equal(d.outcome, AF_ALLOW);
    /* The same arrival for something never granted: now final. */
    decide(fx, bob, "/runtime-groups/other", NULL, arrival, &d);
    assert_int_equal(d.outcome, AF_DENY);
    free(bob);
}

/* deny_after "revision": no arrival wait, but a revision newer than
 * applied[origin] is transient until a line carries it. */
static void test_revision_pending(void **state)
{
    struct fixture *fx = *state;
    af_decision d;
    af_waiter *w;
    atomic_int flag = 0;
    char *carol = token_for(fx, "carol", 600), rev[AZC_REVISION_MAX];
    azc_revision r = { "ap", 0 };
    azc_err e;

    open_filter(fx, "\"deny_after\": \"revision\"", 30000);
    fake_set_snapshot(fx->fk, snapshot(10, marks(0, 0, 0), base_users(), json_array(),
                                       json_array()));
    wait_for(loaded, fx, "the snapshot loaded");
    decide(fx, carol, "/runtime-groups/rgc", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_DENY); /* no revision: final at once */
    r.hlc = now_hlc(300);
    assert_int_equal(azc_revision_encode(&r, rev, sizeof rev, &e), AZC_OK);
    decide(fx, carol, "/runtime-groups/rgc", rev, 0, &d);
    assert_int_equal(d.outcome, AF_DENY_TRANSIENT);
    assert_string_equal(d.reason, "revision_pending");
    assert_string_equal(d.origin, "ap");
    assert_int_equal(af_wait(fx->f, &d, woke, &flag, &w), 0);
    /* A heartbeat below the revision does not wake it... */
    fake_push(fx->fk, line(10, json_array(), marks(0, 0, 100)));
    /* ...the line with the grant and the watermark past it does. */
    fake_push(fx->fk, line(11, json_pack("[o]", change(11, "policy",
                                                       policy_row("ac", "user", U_CAROL,
                                                                  "runtime_groups/rgc", "ap", 0))),
                           marks(400, 400, 400)));
    g_flag = &flag;
    wait_for(flag_set, fx, "the waiter woken");
    decide(fx, carol, "/runtime-groups/rgc", rev, 0, &d);
    assert_int_equal(d.outcome, AF_ALLOW);
    assert_string_equal(d.origin, "ap");
    /* A revision from far in the future is not waited for. */
    r.hlc = now_hlc(3600 * 1000);
    assert_int_equal(azc_revision_encode(&r, rev, sizeof rev, &e), AZC_OK);
    decide(fx, carol, "/runtime-groups/never", rev, 0, &d);
    assert_int_equal(d.outcome, AF_DENY);
    free(carol);
}

/* ap's data is older than max_staleness: what ap granted and every deny
 * fail closed; what us granted still answers. */
static void test_stale_origin(void **state)
{
    struct fixture *fx = *state;
    af_decision d;
    char *alice = token_for(fx, "alice", 600), *carol = token_for(fx, "carol", 600);

    open_filter(fx, "", 2000);
    fake_set_snapshot(fx->fk, snapshot(10, marks(0, 0, -10000), base_users(), json_array(),
                                       json_pack("[o, o]",
                                                 policy_row("a1", "user", U_ALICE,
                                                            "runtime_groups/rg1", "us", 0),
                                                 policy_row("a2", "user", U_CAROL,
                                                            "runtime_groups/rg1", "ap", 0))));
    wait_for(loaded, fx, "the snapshot loaded");
    decide(fx, alice, "/runtime-groups/rg1", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_ALLOW);
    decide(fx, carol, "/runtime-groups/rg1", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_UNAVAILABLE);
    assert_string_equal(d.reason, "stale_policy");
    assert_string_equal(d.origin, "ap");
    decide(fx, alice, "/runtime-groups/rg2", NULL, (int64_t)azc_wall_ms() - 5000, &d);
    assert_int_equal(d.outcome, AF_UNAVAILABLE);
    free(alice);
    free(carol);
}

static void test_waiters_cap(void **state)
{
    struct fixture *fx = *state;
    af_decision d;
    af_waiter *w1, *w2;
    atomic_int flag = 0;
    char *bob = token_for(fx, "bob", 600);

    open_filter(fx, "\"max_waiters\": 1", 30000);
    fake_set_snapshot(fx->fk, snapshot(10, marks(-100, -100, -100), base_users(), json_array(),
                                       json_array()));
    wait_for(loaded, fx, "the snapshot loaded");
    decide(fx, bob, "/runtime-groups/x", NULL, (int64_t)azc_wall_ms(), &d);
    assert_int_equal(d.outcome, AF_DENY_TRANSIENT);
    assert_int_equal(af_wait(fx->f, &d, woke, &flag, &w1), 0);
    assert_int_equal(af_wait(fx->f, &d, woke, &flag, &w2), -1);
    assert_int_equal(af_wait_cancel(fx->f, w1), 1);
    assert_int_equal(af_wait(fx->f, &d, woke, &flag, &w2), 0);
    assert_int_equal(af_wait_cancel(fx->f, w2), 1);
    assert_int_equal(atomic_load(&flag), 0);
    free(bob);
}

static void fake_set_ndjson(struct fake *fk, int mode)
{
    pthread_mutex_lock(&fk->lock);
    fk->ndjson = mode;
    pthread_mutex_unlock(&fk->lock);
}

static int served_two_more(struct fixture *fx)
{
    return atomic_load(&fx->fk->snapshots_served) >= fx->mark + 2;
}

/*
 * The filter asks for the snapshot as NDJSON and loads it line by line:
 * an answer cut before its end line, one whose end line counts other
 * rows, or one with a row of no known kind loads nothing (still no
 * policy, the snapshot asked for again); the whole answer loads. A server
 * that answers plain JSON (NDJ_NO, every other test) is loaded too.
 */
static void test_snapshot_ndjson(void **state)
{
    struct fixture *fx = *state;
    static const int spoilt[] = { NDJ_NO_END, NDJ_BAD_COUNT, NDJ_BAD_KIND };
    af_decision d;
    char *alice = token_for(fx, "alice", 600);
    size_t i;

    fake_set_snapshot(fx->fk, snapshot(10, marks(0, 0, 0), base_users(), json_array(),
                                       json_pack("[o]", policy_row("a1", "user", U_ALICE,
                                                                   "runtime_groups/rg1", "us", 0))));
    /* Spoilt from the first request on: a filter that got the fake's
     * default (plain JSON) first would load it and never ask again. */
    fake_set_ndjson(fx->fk, spoilt[0]);
    open_filter(fx, "", 30000);
    for (i = 0; i < sizeof spoilt / sizeof spoilt[0]; i++) {
        fx->mark = atomic_load(&fx->fk->snapshots_served);
        fake_set_ndjson(fx->fk, spoilt[i]);
        wait_for(served_two_more, fx, "the spoilt snapshot asked for again");
        assert_false(af_ready(fx->f));
        decide(fx, alice, "/runtime-groups/rg1", NULL, 0, &d);
        assert_int_equal(d.outcome, AF_UNAVAILABLE);
    }
    assert_true(atomic_load(&fx->fk->ndjson_asked) >= 6);
    fake_set_ndjson(fx->fk, NDJ_OK);
    wait_for(loaded, fx, "the NDJSON snapshot loaded");
    decide(fx, alice, "/runtime-groups/rg1", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_ALLOW);
    assert_string_equal(d.origin, "us");
    decide(fx, alice, "/runtime-groups/rg2", NULL, (int64_t)azc_wall_ms() - 5000, &d);
    assert_int_equal(d.outcome, AF_DENY);
    free(alice);
}

static int streams_two(struct fixture *fx)
{
    return atomic_load(&fx->fk->streams_opened) >= 2;
}

static int snapshots_two(struct fixture *fx)
{
    return atomic_load(&fx->fk->snapshots_served) >= 2 && af_ready(fx->f);
}

static int bob_allowed(struct fixture *fx)
{
    af_decision d;
    char *bob = token_for(fx, "bob", 600);

    decide(fx, bob, "/runtime-groups/rgb", NULL, 0, &d);
    free(bob);
    return d.outcome == AF_ALLOW;
}

/* A bad line is not applied and the stream is reopened from the cursor;
 * a 410 reloads the snapshot, while the old policy keeps answering. */
static void test_bad_line_and_410(void **state)
{
    struct fixture *fx = *state;
    af_decision d;
    af_stats st;
    char *alice = token_for(fx, "alice", 600);

    open_filter(fx, "", 30000);
    fake_set_snapshot(fx->fk, snapshot(10, marks(0, 0, 0), base_users(), json_array(),
                                       json_pack("[o]", policy_row("a1", "user", U_ALICE,
                                                                   "runtime_groups/rg1", "us", 0))));
    wait_for(loaded, fx, "the snapshot loaded");
    fake_push_raw(fx->fk, "{\"changes\": [{\"seq\": 11, \"kind\": \"policy\", \"row\": 7}],"
                          " \"cursor\": \"11\", \"more\": false}");
    wait_for(streams_two, fx, "the stream reopened after the bad line");
    af_get_stats(fx->f, &st);
    assert_int_equal(st.cursor, 10);
    assert_true(st.feed_errors >= 1);
    /* The next stream request is refused with 410: a snapshot reload,
     * this time with bob granted. */
    pthread_mutex_lock(&fx->fk->lock);
    fx->fk->answer_410 = 1;
    pthread_mutex_unlock(&fx->fk->lock);
    fake_set_snapshot(fx->fk, snapshot(50, marks(0, 0, 0), base_users(), json_array(),
                                       json_pack("[o]", policy_row("a2", "user", U_BOB,
                                                                   "runtime_groups/rgb", "eu", 0))));
    decide(fx, alice, "/runtime-groups/rg1", NULL, 0, &d);
    assert_int_equal(d.outcome, AF_ALLOW); /* the old generation still answers */
    /* End the open stream: the follower reconnects, gets 410, reloads. */
    fake_push_raw(fx->fk, "not json");
    wait_for(snapshots_two, fx, "the snapshot reloaded");
    wait_for(bob_allowed, fx, "the reloaded policy answering");
    decide(fx, alice, "/runtime-groups/rg1", NULL, (int64_t)azc_wall_ms() - 5000, &d);
    assert_int_equal(d.outcome, AF_DENY);
    af_get_stats(fx->f, &st);
    assert_int_equal(st.cursor, 50);
    free(alice);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_policy_then_allow_and_final_deny, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arrival_wait_woken_by_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revision_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_origin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiters_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_line_and_410, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_ndjson, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
