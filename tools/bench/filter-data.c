/*
 * The data set, snapshot and queries of authz-bench-index (shared by its
 * in-process and --full modes; tools/bench/filter-bench.h), and the timing
 * helpers. Deterministic: one xorshift sequence from a fixed seed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/bench/filter-bench.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

uint64_t rng(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the data set, kept as plain arrays for the floor and queries ---- */

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

data *make_data(void)
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

json_t *asg_json(const char *id, const char *ptype, const char *pid, const a_row *a)
{
    return row_meta(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[s]}", "assignment_id", id,
                              "principal_type", ptype, "principal_id", pid, "role_id", "role",
                              "region", "*", "resource", a->res, "permissions", a->perm));
}

json_t *make_snapshot(const data *d)
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

/* ---- queries --------------------------------------------------------- */

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
query *make_queries(const data *d, int zipf)
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

int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}
