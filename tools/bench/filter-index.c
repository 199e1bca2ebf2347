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
 * --full (filter-full.c; the data set and queries: filter-data.c): the
 * whole decision instead, through libauthzfilter: the snapshot
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/policy.h"
#include "gateway-filter/index.h"
#include "tools/bench/filter-bench.h"

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
