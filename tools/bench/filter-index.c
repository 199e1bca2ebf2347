/*
 * authz-bench-index: the in-process benchmark of the gateway filter's
 * policy index (gateway-filter/index.h). Builds 100,000 users, 10,000
 * teams (3-4 per user) and 1,000,000 assignments (about 140 per user with
 * its teams) as a snapshot json_t in memory, loads it, and prints: JSON
 * build and load times, the index's memory (RSS delta and its own count),
 * ns per check p50/p99/p99.9 on one thread for Zipf (s=1.1) and uniform
 * users, checks per second on 1 and 2 threads, and the same queries
 * against a "floor": a plain chained hash table of the same data (user ->
 * teams -> arrays of strings); then one principal holding 100, 10,000 and
 * 100,000 assignments (deny and allow p50/p99). Figures only, no
 * assertions.
 *
 * --full: the whole decision instead, through libauthzfilter: the snapshot
 * served over HTTP by a throwaway server and loaded by af_open, 100 routes
 * (/t<N>/{id}, the method naming the verb), an ES256 token per user, and
 * af_check timed the same way on Zipf users after one warm-up pass (so the
 * tokens are in the per-thread cache), then decisions per second on 1 and
 * 2 threads.
 *
 * --serve: the --full set up (snapshot server, keys, routes, the filter's
 * configuration file) without the measurement, for a filter in another
 * process (tools/bench/module-memory runs nginx with the module on it):
 * prints "config PATH", "token BEARER" and "path PATH" (a request one of the
 * users is allowed) on stdout, serves until its standard input closes,
 * then removes its files.
 *
 * Timing: clock_gettime(CLOCK_MONOTONIC) around batches of BATCH checks,
 * divided by BATCH, so the clock read (about 20 ns) does not dominate; the
 * percentiles are therefore of batch means, which smooths the tail a
 * little.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/hlc.h"
#include "common/jwt.h"
#include "common/policy.h"
#include "gateway-filter/authzfilter.h"
#include "gateway-filter/index.h"

#define NUSERS 100000
#define NTEAMS 10000
#define TEAM_ASG 38     /* 380,000 team assignments */
#define NQ 1000000
#define BATCH 8

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- the data set, kept as plain arrays for the floor and queries ---- */

typedef struct a_row {
    char perm[24];
    char res[24];
} a_row;

typedef struct data {
    int nteams_of[NUSERS];
    int teams_of[NUSERS][4];
    int ndirect[NUSERS];
    a_row *direct[NUSERS];
    a_row team_asg[NTEAMS][TEAM_ASG];
    size_t nasg;
} data;

static void rand_grant(a_row *a)
{
    unsigned t = (unsigned)(rng() % 20), r = (unsigned)(rng() % 100);
    static const char *const verbs[] = { "read", "write", "delete", "list", "admin" };

    if (r == 0)
        strcpy(a->perm, "*");
    else if (r < 15)
        snprintf(a->perm, sizeof a->perm, "t%u:*", t);
    else
        snprintf(a->perm, sizeof a->perm, "t%u:%s", t, verbs[rng() % 5]);
    r = (unsigned)(rng() % 100);
    if (r < 25)
        snprintf(a->res, sizeof a->res, "t%u/*", t);
    else
        snprintf(a->res, sizeof a->res, "t%u/r%u", t, (unsigned)(rng() % 1000));
}

static data *make_data(void)
{
    data *d = calloc(1, sizeof *d);
    int u, t, k;
    size_t direct_total = 1000000 - (size_t)NTEAMS * TEAM_ASG, given = 0;

    if (d == NULL)
        return NULL;
    for (t = 0; t < NTEAMS; t++)
        for (k = 0; k < TEAM_ASG; k++)
            rand_grant(&d->team_asg[t][k]);
    for (u = 0; u < NUSERS; u++) {
        d->nteams_of[u] = 3 + (int)(rng() % 2);
        for (k = 0; k < d->nteams_of[u]; k++)
            d->teams_of[u][k] = (int)((u * 7 + k * 2503 + (int)(rng() % 3)) % NTEAMS);
        /* 6.2 direct assignments on average, to total 1,000,000. */
        d->ndirect[u] = (int)((direct_total * (size_t)(u + 1)) / NUSERS - given);
        given += (size_t)d->ndirect[u];
        d->direct[u] = calloc((size_t)d->ndirect[u] + 1, sizeof(a_row));
        for (k = 0; k < d->ndirect[u]; k++)
            rand_grant(&d->direct[u][k]);
    }
    d->nasg = given + (size_t)NTEAMS * TEAM_ASG;
    return d;
}

static json_t *row_meta(json_t *o)
{
    json_object_set_new(o, "hlc", json_integer(1));
    json_object_set_new(o, "origin", json_string("us"));
    json_object_set_new(o, "origin_seq", json_integer(1));
    json_object_set_new(o, "deleted", json_false());
    return o;
}

static json_t *asg_json(const char *id, const char *ptype, const char *pid, const a_row *a)
{
    return row_meta(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[s]}", "assignment_id", id,
                              "principal_type", ptype, "principal_id", pid, "role_id", "role",
                              "region", "*", "resource", a->res, "permissions", a->perm));
}

static json_t *make_snapshot(const data *d)
{
    json_t *us = json_array(), *ms = json_array(), *ps = json_array();
    char id[32], pid[32];
    long n = 0;
    int u, t, k;

    for (u = 0; u < NUSERS; u++) {
        snprintf(id, sizeof id, "user-%08d", u);
        snprintf(pid, sizeof pid, "sub-%d", u);
        json_array_append_new(us, row_meta(json_pack("{s:s, s:s}", "user_id", id, "subject",
                                                     pid)));
        for (k = 0; k < d->nteams_of[u]; k++) {
            char tid[32];

            snprintf(tid, sizeof tid, "team-%08d", d->teams_of[u][k]);
            json_array_append_new(ms, row_meta(json_pack("{s:s, s:s}", "team_id", tid,
                                                         "user_id", id)));
        }
        for (k = 0; k < d->ndirect[u]; k++) {
            char aid[32];

            snprintf(aid, sizeof aid, "asg-%010ld", n++);
            json_array_append_new(ps, asg_json(aid, "user", id, &d->direct[u][k]));
        }
    }
    for (t = 0; t < NTEAMS; t++) {
        snprintf(pid, sizeof pid, "team-%08d", t);
        for (k = 0; k < TEAM_ASG; k++) {
            char aid[32];

            snprintf(aid, sizeof aid, "asg-%010ld", n++);
            json_array_append_new(ps, asg_json(aid, "team", pid, &d->team_asg[t][k]));
        }
    }
    return json_pack("{s:s, s:s, s:{s:{s:i, s:i}}, s:o, s:o, s:o}", "region", "us", "cursor",
                     "1", "watermarks", "us", "applied", 1, "known", 1, "users", us,
                     "memberships", ms, "policies", ps);
}

/* ---- the floor: the obvious chained hash table of strings ------------ */

typedef struct f_team {
    struct f_team *next;
    char *id;
    size_t n;
    char **perm, **res;
} f_team;

typedef struct f_user {
    struct f_user *next;
    char *subject;
    size_t nteams;
    f_team **teams;
    size_t n;
    char **perm, **res;
} f_user;

#define FLOOR_BUCKETS (1u << 17)

typedef struct floor_t {
    f_user *u[FLOOR_BUCKETS];
    f_team *t[FLOOR_BUCKETS];
} floor_t;

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static f_team *floor_team(floor_t *f, const char *id)
{
    f_team *t;

    for (t = f->t[fnv(id) % FLOOR_BUCKETS]; t != NULL; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

static floor_t *make_floor(const data *d)
{
    floor_t *f = calloc(1, sizeof *f);
    char id[32];
    int u, t, k;

    for (t = 0; t < NTEAMS; t++) {
        f_team *x = calloc(1, sizeof *x);

        snprintf(id, sizeof id, "team-%08d", t);
        x->id = strdup(id);
        x->n = TEAM_ASG;
        x->perm = calloc(TEAM_ASG, sizeof *x->perm);
        x->res = calloc(TEAM_ASG, sizeof *x->res);
        for (k = 0; k < TEAM_ASG; k++) {
            x->perm[k] = strdup(d->team_asg[t][k].perm);
            x->res[k] = strdup(d->team_asg[t][k].res);
        }
        x->next = f->t[fnv(id) % FLOOR_BUCKETS];
        f->t[fnv(id) % FLOOR_BUCKETS] = x;
    }
    for (u = 0; u < NUSERS; u++) {
        f_user *x = calloc(1, sizeof *x);

        snprintf(id, sizeof id, "sub-%d", u);
        x->subject = strdup(id);
        x->nteams = (size_t)d->nteams_of[u];
        x->teams = calloc(x->nteams, sizeof *x->teams);
        for (k = 0; k < d->nteams_of[u]; k++) {
            snprintf(id, sizeof id, "team-%08d", d->teams_of[u][k]);
            x->teams[k] = floor_team(f, id);
        }
        x->n = (size_t)d->ndirect[u];
        x->perm = calloc(x->n + 1, sizeof *x->perm);
        x->res = calloc(x->n + 1, sizeof *x->res);
        for (k = 0; k < d->ndirect[u]; k++) {
            x->perm[k] = strdup(d->direct[u][k].perm);
            x->res[k] = strdup(d->direct[u][k].res);
        }
        x->next = f->u[fnv(x->subject) % FLOOR_BUCKETS];
        f->u[fnv(x->subject) % FLOOR_BUCKETS] = x;
    }
    return f;
}

static int floor_scan(char **perm, char **res, size_t n, const char *act, const char *wact,
                      const char *r, const char *wr)
{
    size_t i;

    for (i = 0; i < n; i++)
        if ((strcmp(perm[i], act) == 0 || strcmp(perm[i], wact) == 0 ||
             strcmp(perm[i], "*") == 0) &&
            (strcmp(res[i], r) == 0 || strcmp(res[i], wr) == 0 || strcmp(res[i], "*") == 0))
            return 1;
    return 0;
}

static int floor_check(const floor_t *f, const char *sub, const char *act, const char *res)
{
    char wact[80], wres[80];
    const f_user *u;
    size_t k;

    if (azc_action_wildcards(act, wact, sizeof wact) != AZC_OK ||
        azc_resource_wildcard(res, wres, sizeof wres) != AZC_OK)
        return 0;
    for (u = f->u[fnv(sub) % FLOOR_BUCKETS]; u != NULL; u = u->next)
        if (strcmp(u->subject, sub) == 0)
            break;
    if (u == NULL)
        return 0;
    if (floor_scan(u->perm, u->res, u->n, act, wact, res, wres))
        return 1;
    for (k = 0; k < u->nteams; k++)
        if (floor_scan(u->teams[k]->perm, u->teams[k]->res, u->teams[k]->n, act, wact, res,
                       wres))
            return 1;
    return 0;
}

/* ---- queries --------------------------------------------------------- */

typedef struct query {
    char sub[16], act[32], res[32];
} query;

static void concrete(const a_row *a, query *q)
{
    static const char *const verbs[] = { "read", "write", "delete", "list", "admin" };
    unsigned t = (unsigned)(rng() % 20);

    if (strcmp(a->perm, "*") == 0)
        snprintf(q->act, sizeof q->act, "t%u:read", t);
    else if (strchr(a->perm, '*') != NULL)
        snprintf(q->act, sizeof q->act, "%.*s:%s", (int)(strchr(a->perm, ':') - a->perm),
                 a->perm, verbs[rng() % 5]);
    else
        snprintf(q->act, sizeof q->act, "%s", a->perm);
    if (strchr(a->res, '*') != NULL)
        snprintf(q->res, sizeof q->res, "%.*s/r%u", (int)(strchr(a->res, '/') - a->res), a->res,
                 (unsigned)(rng() % 1000));
    else
        snprintf(q->res, sizeof q->res, "%s", a->res);
    /* A "*" permission grants any type: keep the resource's type. */
    if (strcmp(a->perm, "*") == 0 && strchr(q->res, '/') != NULL)
        snprintf(q->act, sizeof q->act, "%.*s:read", (int)(strchr(q->res, '/') - q->res), q->res);
}

/* Half the queries are for something the user holds (allowed), half at
 * random (mostly denied). */
static query *make_queries(const data *d, int zipf)
{
    query *qs = malloc(NQ * sizeof *qs);
    double *cdf = NULL;
    int i;

    if (zipf) {
        double sum = 0;

        cdf = malloc(NUSERS * sizeof *cdf);
        for (i = 0; i < NUSERS; i++)
            cdf[i] = (sum += 1.0 / pow(i + 1, 1.1));
        for (i = 0; i < NUSERS; i++)
            cdf[i] /= sum;
    }
    for (i = 0; i < NQ; i++) {
        int u;

        if (zipf) {
            double x = (double)(rng() >> 11) / 9007199254740992.0;
            int lo = 0, hi = NUSERS - 1;

            while (lo < hi) {
                int mid = (lo + hi) / 2;

                if (cdf[mid] < x)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            /* Spread the popular users over the table, not 0, 1, 2... */
            u = (int)(((uint64_t)lo * 48271u) % NUSERS);
        } else {
            u = (int)(rng() % NUSERS);
        }
        snprintf(qs[i].sub, sizeof qs[i].sub, "sub-%d", u);
        if (rng() % 2 == 0) {
            int k = (int)(rng() % (uint64_t)(d->ndirect[u] + d->nteams_of[u] * TEAM_ASG));

            concrete(k < d->ndirect[u] ? &d->direct[u][k]
                                       : &d->team_asg[d->teams_of[u][(k - d->ndirect[u]) /
                                                                     TEAM_ASG]]
                                                     [(k - d->ndirect[u]) % TEAM_ASG],
                     &qs[i]);
        } else {
            snprintf(qs[i].act, sizeof qs[i].act, "t%u:write", (unsigned)(rng() % 20));
            snprintf(qs[i].res, sizeof qs[i].res, "t%u/r%u", (unsigned)(rng() % 20),
                     (unsigned)(rng() % 1000));
        }
    }
    free(cdf);
    return qs;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

typedef struct run {
    af_index *ix;
    const floor_t *fl;
    const query *qs;
    size_t off, n;      /* thread i starts at query off and wraps around */
    long allowed;
    double secs;
} run;

static void measure(const char *label, af_index *ix, const floor_t *fl, const query *qs)
{
    size_t nb = NQ / BATCH, b, i;
    double *ns = malloc(nb * sizeof *ns), t0;
    long allowed = 0;

    for (b = 0; b < nb; b++) {
        t0 = now_s();
        for (i = b * BATCH; i < (b + 1) * BATCH; i++) {
            if (ix != NULL) {
                af_result r;
                af_query q = { qs[i].sub, qs[i].act, qs[i].res };

                af_index_check(ix, &q, &r);
                allowed += r.allowed;
            } else {
                allowed += floor_check(fl, qs[i].sub, qs[i].act, qs[i].res);
            }
        }
        ns[b] = (now_s() - t0) * 1e9 / BATCH;
    }
    qsort(ns, nb, sizeof *ns, cmp_d);
    printf("  %-22s p50 %7.0f ns  p99 %7.0f ns  p99.9 %7.0f ns  (allowed %.1f%%)\n", label,
           ns[nb / 2], ns[nb * 99 / 100], ns[nb * 999 / 1000], 100.0 * allowed / (double)NQ);
    free(ns);
}

static void *thr(void *arg)
{
    run *r = arg;
    double t0 = now_s();
    size_t i;

    for (i = 0; i < r->n; i++) {
        af_result res;
        const query *x = &r->qs[(r->off + i) % NQ];
        af_query q = { x->sub, x->act, x->res };

        af_index_check(r->ix, &q, &res);
        r->allowed += res.allowed;
    }
    r->secs = now_s() - t0;
    return NULL;
}

static void throughput(af_index *ix, const query *qs, const char *mix, int nthreads)
{
    pthread_t th[2];
    run r[2];
    double rate = 0;
    int i;

    for (i = 0; i < nthreads; i++) {
        r[i] = (run){ .ix = ix, .qs = qs, .off = (size_t)i * (NQ / 2), .n = 2000000 };
        if (pthread_create(&th[i], NULL, thr, &r[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return;
        }
    }
    for (i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        rate += (double)r[i].n / r[i].secs;
    }
    printf("  checks per second, %s, %d thread%s: %.2f M\n", mix, nthreads,
           nthreads > 1 ? "s" : "", rate / 1e6);
}

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

static int full_bench(json_t *snap, const query *qs, const char *label, int serve)
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

/* One user in one team holding n assignments between them: the cost of a
 * check must not grow with n (entries are probed, not scanned). */
static void heavy_principal(size_t n)
{
    json_t *snap = json_pack("{s:s, s:s, s:[{s:s, s:s, s:i, s:s, s:i, s:b}],"
                             " s:[{s:s, s:s, s:i, s:s, s:i, s:b}], s:[]}",
                             "region", "us", "cursor", "1", "users", "user_id", "hu",
                             "subject", "heavy", "hlc", 1, "origin", "us", "origin_seq", 1,
                             "deleted", 0, "memberships", "team_id", "ht", "user_id", "hu",
                             "hlc", 1, "origin", "us", "origin_seq", 1, "deleted", 0,
                             "policies");
    json_t *pol = json_object_get(snap, "policies");
    af_index *ix = af_index_new("us");
    static const char *const acts[2] = { "t3:write", "t3:read" };
    double ns[2][2500], t0;
    azc_err e;
    size_t i;
    int k, b;

    for (i = 0; pol != NULL && i < n; i++) {
        a_row a;
        char id[24];

        snprintf(id, sizeof id, "h%zu", i);
        snprintf(a.perm, sizeof a.perm, "t%u:read", (unsigned)(i % 20));
        snprintf(a.res, sizeof a.res, "t%u/r%u", (unsigned)(i % 20), (unsigned)i);
        json_array_append_new(pol, asg_json(id, i % 2 ? "team" : "user", i % 2 ? "ht" : "hu",
                                            &a));
    }
    if (ix == NULL || pol == NULL || af_index_load_snapshot(ix, snap, &e) != AZC_OK) {
        fprintf(stderr, "heavy principal: load failed\n");
        goto out;
    }
    /* A deny reads every entry on the asked resource, an allow stops at
     * the grant; both on t3/r63, which the principal holds. */
    for (k = 0; k < 2; k++)
        for (b = 0; b < 2500; b++) {
            af_query q = { "heavy", acts[k], "t3/r63" };
            af_result r;
            int j;

            t0 = now_s();
            for (j = 0; j < BATCH; j++)
                af_index_check(ix, &q, &r);
            ns[k][b] = (now_s() - t0) * 1e9 / BATCH;
            if (r.allowed != k)
                fprintf(stderr, "heavy principal: wrong answer\n");
        }
    qsort(ns[0], 2500, sizeof ns[0][0], cmp_d);
    qsort(ns[1], 2500, sizeof ns[1][0], cmp_d);
    printf("  one principal, %7zu assignments: deny p50 %5.0f ns p99 %5.0f ns, "
           "allow p50 %5.0f ns p99 %5.0f ns\n", n, ns[0][1250], ns[0][2475], ns[1][1250],
           ns[1][2475]);
out:
    json_decref(snap);
    af_index_free(ix);
}

int main(int argc, char **argv)
{
    data *d;
    floor_t *fl;
    json_t *snap;
    af_index *ix;
    af_index_stats st;
    query *qz, *qu;
    azc_err e;
    long rss0, rss1, rss2;
    double t0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 2 ||
        (argc == 2 && strcmp(argv[1], "--full") != 0 && strcmp(argv[1], "--serve") != 0)) {
        fprintf(stderr, "usage: authz-bench-index [--full | --serve]\n");
        return 2;
    }
    if (argc == 2) {
        /* The whole decision through libauthzfilter, Zipf users (the
         * realistic mix: their tokens stay in the per-thread cache). */
        if ((d = make_data()) == NULL || (snap = make_snapshot(d)) == NULL) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        qz = make_queries(d, 1);
        if (strcmp(argv[1], "--serve") == 0)
            return full_bench(snap, qz, NULL, 1);
        printf("authz-bench-index --full: %d users, %d teams, %zu assignments,"
               " 100 routes, ES256 tokens\n", NUSERS, NTEAMS, d->nasg);
        return full_bench(snap, qz, "zipf users", 0);
    }
    if ((d = make_data()) == NULL || (ix = af_index_new("us")) == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    printf("authz-bench-index: %d users, %d teams, %zu assignments\n", NUSERS, NTEAMS, d->nasg);
    t0 = now_s();
    snap = make_snapshot(d);
    printf("  json build:            %.2f s\n", now_s() - t0);
    rss0 = rss_kb();
    t0 = now_s();
    if (snap == NULL || af_index_load_snapshot(ix, snap, &e) != AZC_OK) {
        fprintf(stderr, "load failed: %s\n", snap == NULL ? "no json" : e.msg);
        return 1;
    }
    printf("  snapshot load:         %.2f s\n", now_s() - t0);
    rss1 = rss_kb();
    json_decref(snap);
    rss2 = rss_kb();
    af_index_get_stats(ix, &st);
    printf("  index: %zu users, %zu teams, %zu memberships, %zu assignments\n", st.users,
           st.teams, st.memberships, st.assignments);
    printf("  index memory: RSS delta over the load %.1f MB (%.0f B/assignment); "
           "its own count %.1f MB (%.0f B/assignment); RSS after freeing the json %.1f MB\n",
           (double)(rss1 - rss0) / 1024, (double)(rss1 - rss0) * 1024 / (double)st.assignments,
           (double)st.bytes / 1048576, (double)st.bytes / (double)st.assignments,
           (double)rss2 / 1024);
    fl = make_floor(d);
    qz = make_queries(d, 1);
    qu = make_queries(d, 0);
    printf("  per check, one thread (batches of %d timed with clock_gettime):\n", BATCH);
    measure("index, zipf users", ix, NULL, qz);
    measure("index, uniform users", ix, NULL, qu);
    measure("floor, zipf users", NULL, fl, qz);
    measure("floor, uniform users", NULL, fl, qu);
    throughput(ix, qz, "zipf users", 1);
    throughput(ix, qz, "zipf users", 2);
    throughput(ix, qu, "uniform users", 1);
    throughput(ix, qu, "uniform users", 2);
    af_index_free(ix);
    heavy_principal(100);
    heavy_principal(10000);
    heavy_principal(100000);
    return 0;
}
