/*
 * authz-bench-index --full and --serve (see filter-index.c): the whole
 * decision through libauthzfilter, on the data set of filter-data.c
 * served over HTTP by a throwaway server on a thread of its own.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/hlc.h"
#include "common/jwt.h"
#include "gateway-filter/authzfilter.h"
#include "tools/bench/filter-bench.h"

/* ---- --full: the whole af_check (route, token cache hit, index) ------- */

/* The snapshot, served once by a throwaway HTTP server on a thread of its
 * own; the change stream is held open with nothing on it. */
typedef struct server {
    struct event_base *base;
    struct evhttp *http;
    char *snapshot;     /* format=json, the whole object */
    char *ndjson;       /* format=ndjson, as authz-server frames it */
    int port;
    pthread_t th;
} server;

/* snap as the lines of authz-server's format=ndjson (docs/authz.md): the
 * head, a line per row, the end with the counts. NULL when out of memory. */
static char *ndjson_text(const json_t *snap)
{
    static const char *const tables[3] = { "users", "memberships", "policies" };
    static const char *const kinds[3] = { "user", "membership", "policy" };
    struct evbuffer *b = evbuffer_new();
    json_t *head, *row;
    char *text, *out = NULL;
    size_t k, i, len;
    int bad = b == NULL;

    head = json_pack("{s:O, s:O, s:O}", "region", json_object_get(snap, "region"), "cursor",
                     json_object_get(snap, "cursor"), "watermarks",
                     json_object_get(snap, "watermarks"));
    text = head != NULL ? json_dumps(head, JSON_COMPACT) : NULL;
    bad |= text == NULL || evbuffer_add_printf(b, "%s\n", text) < 0;
    free(text);
    json_decref(head);
    for (k = 0; k < 3 && !bad; k++) {
        json_array_foreach(json_object_get(snap, tables[k]), i, row) {
            json_t *l = json_pack("{s:s, s:O}", "kind", kinds[k], "row", row);

            text = l != NULL ? json_dumps(l, JSON_COMPACT) : NULL;
            bad |= text == NULL || evbuffer_add_printf(b, "%s\n", text) < 0;
            free(text);
            json_decref(l);
        }
    }
    bad |= evbuffer_add_printf(b, "{\"end\":{\"users\":%zu,\"memberships\":%zu,\"policies\":%zu}}\n",
                               json_array_size(json_object_get(snap, "users")),
                               json_array_size(json_object_get(snap, "memberships")),
                               json_array_size(json_object_get(snap, "policies"))) < 0;
    len = bad ? 0 : evbuffer_get_length(b);
    if (!bad && (out = malloc(len + 1)) != NULL) {
        evbuffer_remove(b, out, len);
        out[len] = '\0';
    }
    if (b != NULL)
        evbuffer_free(b);
    return out;
}

static void srv_snapshot(struct evhttp_request *req, void *arg)
{
    server *sv = arg;
    struct evbuffer *b = evbuffer_new();
    int nd = strstr(evhttp_request_get_uri(req), "format=ndjson") != NULL;
    const char *text = nd ? sv->ndjson : sv->snapshot;

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      nd ? "application/x-ndjson" : "application/json");
    evbuffer_add_reference(b, text, strlen(text), NULL, NULL);
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void srv_changes(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/x-ndjson");
    evhttp_send_reply_start(req, 200, "OK");
}

static void *srv_main(void *arg)
{
    server *sv = arg;

    event_base_loop(sv->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static int srv_start(server *sv)
{
    struct evhttp_bound_socket *bs;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (evthread_use_pthreads() != 0 || (sv->base = event_base_new()) == NULL ||
        (sv->http = evhttp_new(sv->base)) == NULL ||
        evhttp_set_cb(sv->http, "/v1/policy/snapshot", srv_snapshot, sv) != 0 ||
        evhttp_set_cb(sv->http, "/v1/policy/changes", srv_changes, sv) != 0 ||
        (bs = evhttp_bind_socket_with_handle(sv->http, "127.0.0.1", 0)) == NULL ||
        getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    sv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return pthread_create(&sv->th, NULL, srv_main, sv) == 0 ? 0 : -1;
}

static int write_file(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f != NULL && fwrite(text, 1, n, f) == n;

    if (f != NULL && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* A request for query q: path "/<res type>/<res id>", the method naming the
 * verb, the action's type forced to the resource's (routes have one type). */
static const char *const VERBS[] = { "read", "write", "delete", "list", "admin" };
static const char *const METHODS[] = { "GET", "PUT", "DELETE", "PATCH", "POST" };

typedef struct freq {
    const char *method;
    char path[40];
    char *auth;
} freq;

typedef struct frun {
    authzfilter *f;
    const freq *rq;
    size_t n;
    long allowed;
    double secs;
} frun;

static long full_pass(authzfilter *f, const freq *rq, size_t n, double *ns)
{
    af_request r;
    af_decision dd;
    long allowed = 0;
    size_t b, i;
    double t0;

    memset(&r, 0, sizeof r);
    r.arrival_ms = 1; /* long past: a deny is final, the decision never waits */
    for (b = 0; b < n / BATCH; b++) {
        t0 = now_s();
        for (i = b * BATCH; i < (b + 1) * BATCH; i++) {
            r.method = rq[i].method;
            r.path = rq[i].path;
            r.authorization = rq[i].auth;
            af_check(f, &r, &dd);
            allowed += dd.outcome == AF_ALLOW;
        }
        if (ns != NULL)
            ns[b] = (now_s() - t0) * 1e9 / BATCH;
    }
    return allowed;
}

static void *full_thr(void *arg)
{
    frun *r = arg;
    double t0;

    (void)full_pass(r->f, r->rq, r->n, NULL); /* this thread's token cache */
    t0 = now_s();
    r->allowed = full_pass(r->f, r->rq, r->n, NULL);
    r->secs = now_s() - t0;
    return NULL;
}

int full_bench(json_t *snap, const query *qs, const char *label, int serve)
{
    char dir[] = "/tmp/authz-bench-filter.XXXXXX", path[128], conf[2048], err[256];
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL, *bytes, **tok = calloc(NUSERS, sizeof *tok);
    freq *rq = calloc(NQ, sizeof *rq);
    json_t *routes = json_array();
    server sv;
    authzfilter *f = NULL;
    double t0, *ns = malloc((NQ / BATCH) * sizeof *ns);
    size_t i, n, nb = NQ / BATCH;
    long allowed;
    azc_err e;
    int t, v, rc = 1;

    memset(&sv, 0, sizeof sv);
    if (k == NULL || bio == NULL || tok == NULL || rq == NULL || ns == NULL ||
        mkdtemp(dir) == NULL)
        goto out;
    /* Keys and routes. */
    if (PEM_write_bio_PUBKEY(bio, k) != 1)
        goto out;
    n = (size_t)BIO_get_mem_data(bio, &bytes);
    snprintf(path, sizeof path, "%s/k1.pem", dir);
    if (write_file(path, bytes, n) != 0)
        goto out;
    (void)BIO_reset(bio);
    if (PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) != 1)
        goto out;
    n = (size_t)BIO_get_mem_data(bio, &bytes);
    pem = strndup(bytes, n);
    snprintf(path, sizeof path, "%s/keys.json", dir);
    if (write_file(path, "[{\"kid\":\"k1\",\"alg\":\"ES256\",\"file\":\"k1.pem\"}]", 44) != 0)
        goto out;
    for (t = 0; t < 20; t++)
        for (v = 0; v < 5; v++) {
            char p[32], a[32], r[32];

            snprintf(p, sizeof p, "/t%d/{id}", t);
            snprintf(a, sizeof a, "t%d:%s", t, VERBS[v]);
            snprintf(r, sizeof r, "t%d/{id}", t);
            json_array_append_new(routes, json_pack("{s:s, s:s, s:s, s:s}", "method",
                                                    METHODS[v], "path", p, "action", a,
                                                    "resource", r));
        }
    snprintf(path, sizeof path, "%s/routes.json", dir);
    if (json_dump_file(json_pack("{s:o}", "routes", routes), path, 0) != 0)
        goto out;
    /* Requests and one token per user that appears. */
    for (i = 0; i < NQ; i++) {
        const char *slash = strchr(qs[i].res, '/'), *colon = strchr(qs[i].act, ':');
        int u = atoi(qs[i].sub + 4);

        for (v = 0; v < 4 && (colon == NULL || strcmp(colon + 1, VERBS[v]) != 0); v++)
            ;
        rq[i].method = METHODS[v];
        snprintf(rq[i].path, sizeof rq[i].path, "/%s", qs[i].res);
        (void)slash;
        if (tok[u] == NULL) {
            json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "sub", qs[i].sub, "iss",
                                       "bench", "aud", "gateway", "iat",
                                       (json_int_t)time(NULL), "exp",
                                       (json_int_t)time(NULL) + 3600);
            char *jwt = NULL;

            if (azc_jwt_sign("ES256", (const unsigned char *)pem, strlen(pem), "k1", claims,
                             &jwt, &e) != AZC_OK)
                goto out;
            json_decref(claims);
            tok[u] = malloc(strlen(jwt) + 8);
            sprintf(tok[u], "Bearer %s", jwt);
            free(jwt);
        }
        rq[i].auth = tok[u];
    }
    /* The snapshot, watermarks current, and a filter on it. */
    json_object_set_new(snap, "watermarks",
                        json_pack("{s:{s:I, s:I}}", "us", "applied",
                                  (json_int_t)AZC_HLC_MAKE(azc_wall_ms(), 0), "known",
                                  (json_int_t)AZC_HLC_MAKE(azc_wall_ms(), 0)));
    if ((sv.snapshot = json_dumps(snap, JSON_COMPACT)) == NULL ||
        (sv.ndjson = ndjson_text(snap)) == NULL || srv_start(&sv) != 0)
        goto out;
    snprintf(conf, sizeof conf,
             "{\"service\": {\"region\": \"us\", \"regions\": \"us\"},"
             " \"policy\": {\"url\": \"http://127.0.0.1:%d\", \"max_staleness_ms\": 86400000},"
             " \"routes\": {\"file\": \"%s/routes.json\"},"
             " \"jwt\": {\"keys_file\": \"%s/keys.json\", \"issuer\": \"bench\","
             "          \"audience\": \"gateway\", \"cache_entries\": 262144},"
             " \"decision\": {\"heartbeat_ms\": 60000, \"silence_heartbeats\": 1000},"
             " \"log\": {\"level\": \"error\"}}", sv.port, dir, dir);
    snprintf(path, sizeof path, "%s/filter.json", dir);
    if (write_file(path, conf, strlen(conf)) != 0)
        goto out;
    if (serve) {
        char buf[256];

        /* The Zipf mix's first query is the hottest user: allowed or not,
         * it is a decision on the whole set. */
        printf("config %s\ntoken %s\npath %s\n", path, rq[0].auth, rq[0].path);
        fflush(stdout);
        while (fread(buf, 1, sizeof buf, stdin) > 0)
            ;
        rc = 0;
        goto out;
    }
    t0 = now_s();
    if (af_open(path, &f, err, sizeof err) != 0) {
        fprintf(stderr, "af_open: %s\n", err);
        goto out;
    }
    while (!af_ready(f))
        usleep(10000); /* the load itself is what is timed */
    printf("  snapshot over HTTP (format=ndjson), read and loaded by the filter: %.2f s"
           " (%.0f MB of NDJSON)\n", now_s() - t0, (double)strlen(sv.ndjson) / 1048576);
    (void)full_pass(f, rq, NQ, NULL); /* fills this thread's token cache */
    allowed = full_pass(f, rq, NQ, ns);
    qsort(ns, nb, sizeof *ns, cmp_d);
    printf("  af_check, %-16s p50 %7.0f ns  p99 %7.0f ns  p99.9 %7.0f ns  (allowed %.1f%%)\n",
           label, ns[nb / 2], ns[nb * 99 / 100], ns[nb * 999 / 1000],
           100.0 * (double)allowed / (double)NQ);
    for (t = 1; t <= 2; t++) {
        pthread_t th[2];
        frun fr[2];
        double rate = 0;
        int j;

        for (j = 0; j < t; j++) {
            fr[j] = (frun){ .f = f, .rq = rq, .n = NQ };
            if (pthread_create(&th[j], NULL, full_thr, &fr[j]) != 0)
                goto out;
        }
        for (j = 0; j < t; j++) {
            pthread_join(th[j], NULL);
            rate += (double)fr[j].n / fr[j].secs;
        }
        printf("  af_check per second, %d thread%s: %.2f M\n", t, t > 1 ? "s" : "", rate / 1e6);
    }
    rc = 0;
out:
    af_close(f);
    if (sv.base != NULL) {
        event_base_loopbreak(sv.base);
        pthread_join(sv.th, NULL);
    }
    for (i = 0; tok != NULL && i < NUSERS; i++)
        free(tok[i]);
    free(tok);
    free(rq);
    free(ns);
    free(pem);
    free(sv.snapshot);
    free(sv.ndjson);
    BIO_free(bio);
    EVP_PKEY_free(k);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    if (system(path) != 0)
        rc = 1;
    return rc;
}
