/*
 * Unit tests of the gateway filter's policy index (gateway-filter/index.c):
 * decisions against a plain-loop oracle on a random set of 100,000
 * assignments through snapshot and feed answers, validation of bad
 * answers (nothing applied), and readers racing the writer with a checker
 * that a generation is never half-applied.
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

#include <urcu-bp.h>

#include "common/policy.h"
#include "gateway-filter/index.h"
#include "gateway-filter/index_internal.h" /* af__index_refs_ok */

/* ---- a small deterministic RNG (tests must be reproducible) --------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static unsigned rnd(uint64_t *s, unsigned n)
{
    return (unsigned)(rng_next(s) % n);
}

/* ---- the oracle's model: plain rows --------------------------------- */

#define NU 5000
#define NT 500
#define NP 100000
#define MAXP (NP + 20000)
#define MAXM 20000

static const char *const TYPES[] = { "doc", "app", "db" };
static const char *const VERBS[] = { "read", "write", "delete" };
static const char *const REGIONS[] = { "us", "eu", "*" };
static const char *const ORIGINS[] = { "us", "eu" };

typedef struct p_row {
    int live, team, pid, region, origin, nperm;
    char resource[32];
    char perm[3][24];
} p_row;

typedef struct m_row {
    int live, team, user, origin;
} m_row;

typedef struct model {
    int user_live[NU];
    int subject_of[NU];     /* subject number: "s<n>" */
    p_row *p;
    int np;
    m_row *m;
    int nm;
    long long seq;
    uint64_t rng;
} model;

static void rand_perm(model *md, char *out)
{
    unsigned r = rnd(&md->rng, 20);

    if (r == 0)
        strcpy(out, "*");
    else if (r < 4)
        sprintf(out, "%s:*", TYPES[rnd(&md->rng, 3)]);
    else
        sprintf(out, "%s:%s", TYPES[rnd(&md->rng, 3)], VERBS[rnd(&md->rng, 3)]);
}

static void rand_resource(model *md, char *out, int pattern)
{
    unsigned r = rnd(&md->rng, 20);

    if (pattern && r == 0)
        strcpy(out, "*");
    else if (pattern && r < 5)
        sprintf(out, "%s/*", TYPES[rnd(&md->rng, 3)]);
    else
        sprintf(out, "%s/r%u", TYPES[rnd(&md->rng, 3)], rnd(&md->rng, 8));
}

static void rand_policy(model *md, p_row *p)
{
    int k;

    memset(p, 0, sizeof *p);
    p->live = 1;
    p->team = rnd(&md->rng, 3) == 0;
    p->pid = (int)rnd(&md->rng, p->team ? NT : NU);
    p->region = (int)rnd(&md->rng, 3);
    p->origin = (int)rnd(&md->rng, 2);
    p->nperm = 1 + (int)rnd(&md->rng, 3);
    for (k = 0; k < p->nperm; k++)
        rand_perm(md, p->perm[k]);
    rand_resource(md, p->resource, 1);
}

static json_t *user_json(const model *md, int u)
{
    char id[16], sub[16];

    snprintf(id, sizeof id, "u-%d", u);
    snprintf(sub, sizeof sub, "s%d", md->subject_of[u]);
    return json_pack("{s:s, s:s, s:i, s:s, s:i, s:b}", "user_id", id, "subject", sub, "hlc", 1,
                     "origin", "us", "origin_seq", 1, "deleted", !md->user_live[u]);
}

static json_t *membership_json(const m_row *m)
{
    char t[16], u[16];

    snprintf(t, sizeof t, "t-%d", m->team);
    snprintf(u, sizeof u, "u-%d", m->user);
    return json_pack("{s:s, s:s, s:i, s:s, s:i, s:b}", "team_id", t, "user_id", u, "hlc", 1,
                     "origin", ORIGINS[m->origin], "origin_seq", 1, "deleted", !m->live);
}

static json_t *policy_json(const p_row *p, int i)
{
    char id[16], pid[16];
    json_t *perms = json_array();
    int k;

    snprintf(id, sizeof id, "a-%d", i);
    snprintf(pid, sizeof pid, "%s-%d", p->team ? "t" : "u", p->pid);
    for (k = 0; k < p->nperm; k++)
        json_array_append_new(perms, json_string(p->perm[k]));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:i, s:s, s:i, s:b}", "assignment_id",
                     id, "principal_type", p->team ? "team" : "user", "principal_id", pid,
                     "role_id", "role-1", "region", REGIONS[p->region], "resource", p->resource,
                     "permissions", perms, "hlc", 1, "origin", ORIGINS[p->origin],
                     "origin_seq", 1, "deleted", !p->live);
}

static void model_init(model *md, uint64_t seed)
{
    int i;

    memset(md, 0, sizeof *md);
    md->rng = seed;
    md->p = calloc(MAXP, sizeof *md->p);
    md->m = calloc(MAXM, sizeof *md->m);
    assert_non_null(md->p);
    assert_non_null(md->m);
    for (i = 0; i < NU; i++) {
        md->user_live[i] = 1;
        md->subject_of[i] = i;
    }
    for (i = 0; i < NU; i++) {
        int k, n = (int)rnd(&md->rng, 4);

        for (k = 0; k < n; k++) {
            m_row *m = &md->m[md->nm++];

            m->live = 1;
            m->team = (int)rnd(&md->rng, NT);
            m->user = i;
            m->origin = (int)rnd(&md->rng, 2);
        }
    }
    for (i = 0; i < NP; i++)
        rand_policy(md, &md->p[md->np++]);
    md->seq = 100;
}

static json_t *model_snapshot(const model *md)
{
    json_t *us = json_array(), *ms = json_array(), *ps = json_array();
    char cur[24];
    int i;

    for (i = 0; i < NU; i++)
        json_array_append_new(us, user_json(md, i));
    for (i = 0; i < md->nm; i++)
        json_array_append_new(ms, membership_json(&md->m[i]));
    for (i = 0; i < md->np; i++)
        json_array_append_new(ps, policy_json(&md->p[i], i));
    snprintf(cur, sizeof cur, "%lld", md->seq);
    return json_pack("{s:s, s:s, s:{s:{s:i, s:i}}, s:o, s:o, s:o}", "region", "us", "cursor",
                     cur, "watermarks", "us", "applied", 5, "known", 6, "users", us,
                     "memberships", ms, "policies", ps);
}

static int covers_res(const char *pat, const char *res)
{
    const char *sl = strchr(res, '/');

    if (strcmp(pat, "*") == 0 || strcmp(pat, res) == 0)
        return 1;
    return strlen(pat) == (size_t)(sl - res) + 2 && strncmp(pat, res, (size_t)(sl - res) + 1) == 0 &&
           pat[sl - res + 1] == '*';
}

static int grants_perm(const char *perm, const char *act)
{
    const char *c = strchr(act, ':');

    if (strcmp(perm, "*") == 0 || strcmp(perm, act) == 0)
        return 1;
    return strlen(perm) == (size_t)(c - act) + 2 && strncmp(perm, act, (size_t)(c - act) + 1) == 0 &&
           perm[c - act + 1] == '*';
}

static int policy_grants(const p_row *p, const char *act, const char *res)
{
    int k;

    if (!p->live || (p->region != 0 && p->region != 2) || !covers_res(p->resource, res))
        return 0;
    for (k = 0; k < p->nperm; k++)
        if (grants_perm(p->perm[k], act))
            return 1;
    return 0;
}

/* The oracle: plain loops over the rows. */
static int oracle(const model *md, int subject, const char *act, const char *res)
{
    int u, i, j;

    for (u = 0; u < NU; u++) {
        if (!md->user_live[u] || md->subject_of[u] != subject)
            continue;
        for (i = 0; i < md->np; i++)
            if (!md->p[i].team && md->p[i].pid == u && policy_grants(&md->p[i], act, res))
                return 1;
        for (j = 0; j < md->nm; j++) {
            if (!md->m[j].live || md->m[j].user != u)
                continue;
            for (i = 0; i < md->np; i++)
                if (md->p[i].team && md->p[i].pid == md->m[j].team &&
                    policy_grants(&md->p[i], act, res))
                    return 1;
        }
    }
    return 0;
}

static void compare_queries(af_index *ix, model *md, int n)
{
    int i, allows = 0;

    for (i = 0; i < n; i++) {
        char sub[16], act[32], res[32];
        int s = (int)rnd(&md->rng, NU + 50), want;
        af_query q = { sub, act, res };
        af_result r;

        snprintf(sub, sizeof sub, "s%d", s);
        sprintf(act, "%s:%s", TYPES[rnd(&md->rng, 3)], VERBS[rnd(&md->rng, 3)]);
        rand_resource(md, res, 0);
        want = oracle(md, s, act, res);
        af_index_check(ix, &q, &r);
        assert_int_equal(r.loaded, 1);
        if (r.allowed != want)
            fail_msg("subject %s action %s resource %s: index %d, oracle %d", sub, act, res,
                     r.allowed, want);
        if (r.allowed) {
            allows++;
            assert_true(r.origin >= 0 && (size_t)r.origin < r.n_origins);
        } else {
            assert_int_equal(r.origin, -1);
        }
    }
    /* The mix must exercise both answers, or the comparison proves little. */
    assert_true(allows > n / 20);
    assert_true(allows < n - n / 20);
}

/* A random feed answer: adds, deletes, membership changes, subject moves. */
static json_t *random_answer(model *md, int nchanges)
{
    json_t *ch = json_array();
    char cur[24];
    int i;

    for (i = 0; i < nchanges; i++) {
        unsigned what = rnd(&md->rng, 6);
        json_t *row, *c;
        const char *kind;

        if (what == 0 && md->np < MAXP) {
            rand_policy(md, &md->p[md->np]);
            row = policy_json(&md->p[md->np], md->np);
            md->np++;
            kind = "policy";
        } else if (what <= 1) {
            int k = (int)rnd(&md->rng, (unsigned)md->np);

            md->p[k].live = 0;
            row = policy_json(&md->p[k], k);
            kind = "policy";
        } else if (what == 2) {
            int k = (int)rnd(&md->rng, (unsigned)md->np);

            /* An update by key: new resource and permissions. */
            if (md->p[k].live) {
                rand_resource(md, md->p[k].resource, 1);
                rand_perm(md, md->p[k].perm[0]);
            }
            row = policy_json(&md->p[k], k);
            kind = "policy";
        } else if (what == 3 && md->nm < MAXM) {
            m_row *m = &md->m[md->nm++];

            m->live = 1;
            m->team = (int)rnd(&md->rng, NT);
            m->user = (int)rnd(&md->rng, NU);
            m->origin = (int)rnd(&md->rng, 2);
            /* The same (team, user) twice is one row: keep one live copy. */
            for (int j = 0; j < md->nm - 1; j++)
                if (md->m[j].team == m->team && md->m[j].user == m->user)
                    md->m[j].live = 0;
            row = membership_json(m);
            kind = "membership";
        } else if (what == 4) {
            m_row *m = &md->m[rnd(&md->rng, (unsigned)md->nm)];

            m->live = 0;
            row = membership_json(m);
            kind = "membership";
        } else {
            int u = (int)rnd(&md->rng, NU);

            if (rnd(&md->rng, 4) == 0)
                md->user_live[u] = !md->user_live[u];
            else
                md->subject_of[u] = (int)rnd(&md->rng, NU + 50);
            row = user_json(md, u);
            kind = "user";
        }
        c = json_pack("{s:I, s:s, s:o}", "seq", (json_int_t)++md->seq, "kind", kind, "row", row);
        json_array_append_new(ch, c);
    }
    snprintf(cur, sizeof cur, "%lld", md->seq);
    return json_pack("{s:o, s:s, s:b, s:{s:{s:I, s:I}}}", "changes", ch, "cursor", cur, "more", 0,
                     "watermarks", "us", "applied", (json_int_t)md->seq, "known",
                     (json_int_t)md->seq);
}

static void test_oracle(void **state)
{
    model md;
    af_index *ix = af_index_new("us");
    af_index_stats st;
    azc_err e;
    json_t *snap;
    int step;

    (void)state;
    assert_non_null(ix);
    model_init(&md, 0x1234567887654321ULL);
    snap = model_snapshot(&md);
    assert_int_equal(af_index_load_snapshot(ix, snap, &e), AZC_OK);
    json_decref(snap);
    af_index_get_stats(ix, &st);
    assert_int_equal(st.users, NU);
    assert_true(st.assignments > NP / 2 && st.assignments < NP);
    assert_int_equal(af_index_cursor(ix), 100);
    assert_true(af__index_refs_ok(ix));
    compare_queries(ix, &md, 1500);
    for (step = 0; step < 8; step++) {
        json_t *a = random_answer(&md, step == 0 ? 1 : 400);

        if (af_index_apply(ix, a, &e) != AZC_OK)
            fail_msg("apply: %s", e.msg);
        json_decref(a);
        assert_int_equal(af_index_cursor(ix), md.seq);
        assert_true(af__index_refs_ok(ix));
        compare_queries(ix, &md, 600);
    }
    /* A reload of the resulting state answers the same. */
    snap = model_snapshot(&md);
    assert_int_equal(af_index_load_snapshot(ix, snap, &e), AZC_OK);
    json_decref(snap);
    compare_queries(ix, &md, 600);
    af_index_free(ix);
    free(md.p);
    free(md.m);
}

/* ---- validation ------------------------------------------------------ */

static const char BASE[] =
    "{\"region\":\"us\",\"cursor\":\"10\",\"watermarks\":{\"us\":{\"applied\":50,\"known\":60}},"
    "\"users\":[{\"user_id\":\"u1\",\"subject\":\"alice\",\"hlc\":1,\"origin\":\"us\","
    "\"origin_seq\":1,\"deleted\":false}],"
    "\"memberships\":[{\"team_id\":\"t1\",\"user_id\":\"u1\",\"hlc\":1,\"origin\":\"eu\","
    "\"origin_seq\":1,\"deleted\":false}],"
    "\"policies\":[{\"assignment_id\":\"a1\",\"principal_type\":\"team\",\"principal_id\":\"t1\","
    "\"role_id\":\"r\",\"region\":\"*\",\"resource\":\"doc/*\",\"permissions\":[\"doc:read\"],"
    "\"hlc\":1,\"origin\":\"us\",\"origin_seq\":1,\"deleted\":false},"
    "{\"assignment_id\":\"a2\",\"principal_type\":\"user\",\"principal_id\":\"u1\","
    "\"role_id\":\"r\",\"region\":\"eu\",\"resource\":\"*\",\"permissions\":[\"*\"],"
    "\"hlc\":1,\"origin\":\"us\",\"origin_seq\":1,\"deleted\":false}]}";

static json_t *parse(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);

    if (j == NULL)
        fail_msg("test json: %s: %s", je.text, s);
    return j;
}

static int allowed(af_index *ix, const char *sub, const char *act, const char *res,
                   af_result *r)
{
    af_query q = { sub, act, res };

    af_index_check(ix, &q, r);
    return r->allowed;
}

static af_index *loaded_base(void)
{
    af_index *ix = af_index_new("us");
    json_t *j = parse(BASE);
    azc_err e;

    assert_int_equal(af_index_load_snapshot(ix, j, &e), AZC_OK);
    json_decref(j);
    return ix;
}

static void test_basics(void **state)
{
    af_index *ix = af_index_new("us");
    json_t *a = parse("{\"changes\":[],\"cursor\":\"11\",\"more\":false}");
    af_result r;
    azc_err e;

    (void)state;
    /* Nothing loaded: not loaded, never an allow; apply is a conflict. */
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc/1", &r), 0);
    assert_int_equal(r.loaded, 0);
    assert_int_equal(af_index_apply(ix, a, &e), AZC_ECONFLICT);
    assert_int_equal(af_index_cursor(ix), -1);
    json_decref(a);
    af_index_free(ix);

    ix = loaded_base();
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc/1", &r), 1);
    assert_int_equal(r.loaded, 1);
    assert_string_equal(r.marks[r.origin].name, "us");
    assert_string_equal(r.marks[r.via_origin].name, "eu");
    assert_int_equal(r.cursor, 10);
    /* a2 is of region eu only. */
    assert_int_equal(allowed(ix, "alice", "db:read", "db/1", &r), 0);
    assert_int_equal(allowed(ix, "alice", "doc:write", "doc/1", &r), 0);
    assert_int_equal(allowed(ix, "bob", "doc:read", "doc/1", &r), 0);
    /* Malformed queries are denies. */
    assert_int_equal(allowed(ix, "alice", "docread", "doc/1", &r), 0);
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc1", &r), 0);
    assert_int_equal(allowed(ix, "alice", "doc:*", "doc/1", &r), 0);
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc/*", &r), 0);
    assert_int_equal(allowed(ix, "alice", "*", "*", &r), 0);
    af_index_check(ix, &(af_query){ NULL, "doc:read", "doc/1" }, &r);
    assert_int_equal(r.allowed, 0);
    /* A snapshot of another region is refused. */
    a = parse("{\"region\":\"eu\",\"cursor\":\"1\",\"users\":[],\"memberships\":[],"
              "\"policies\":[]}");
    assert_int_equal(af_index_load_snapshot(ix, a, &e), AZC_EINVAL);
    json_decref(a);
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc/1", &r), 1);
    af_index_free(ix);
}

static void test_bad_answers(void **state)
{
    static const char *const bad[] = {
        "[]",
        "{\"cursor\":\"11\",\"more\":false}",
        "{\"changes\":[],\"cursor\":\"x\",\"more\":false}",
        "{\"changes\":[],\"cursor\":\"-1\",\"more\":false}",
        "{\"changes\":[],\"cursor\":\"11\"}",
        /* seq at or below the cursor, seqs going back, cursor below the last seq */
        "{\"changes\":[{\"seq\":10,\"kind\":\"user\",\"row\":{}}],\"cursor\":\"11\",\"more\":false}",
        "{\"changes\":[{\"seq\":12,\"kind\":\"membership\",\"row\":{\"team_id\":\"t1\",\"user_id\":"
        "\"u1\",\"hlc\":2,\"origin\":\"us\",\"origin_seq\":2,\"deleted\":true}},{\"seq\":11,"
        "\"kind\":\"user\",\"row\":{}}],\"cursor\":\"12\",\"more\":false}",
        "{\"changes\":[{\"seq\":12,\"kind\":\"membership\",\"row\":{\"team_id\":\"t1\",\"user_id\":"
        "\"u1\",\"hlc\":2,\"origin\":\"us\",\"origin_seq\":2,\"deleted\":true}}],\"cursor\":\"11\","
        "\"more\":false}",
        /* bad kind, no row, malformed rows (after a good row: nothing applies) */
        "{\"changes\":[{\"seq\":11,\"kind\":\"role\",\"row\":{}}],\"cursor\":\"11\",\"more\":false}",
        "{\"changes\":[{\"seq\":11,\"kind\":\"user\"}],\"cursor\":\"11\",\"more\":false}",
        "{\"changes\":[{\"seq\":11,\"kind\":\"membership\",\"row\":{\"team_id\":\"t1\",\"user_id\":"
        "\"u1\",\"hlc\":2,\"origin\":\"us\",\"origin_seq\":2,\"deleted\":true}},{\"seq\":12,\"kind\":"
        "\"policy\",\"row\":{\"assignment_id\":\"a9\",\"principal_type\":\"group\"}}],\"cursor\":"
        "\"12\",\"more\":false}",
        "{\"changes\":[{\"seq\":11,\"kind\":\"membership\",\"row\":{\"team_id\":\"t1\",\"user_id\":"
        "\"u1\",\"hlc\":\"2\",\"origin\":\"us\",\"origin_seq\":2,\"deleted\":true}}],\"cursor\":"
        "\"11\",\"more\":false}",
        "{\"changes\":[{\"seq\":11,\"kind\":\"policy\",\"row\":{\"assignment_id\":\"a1\","
        "\"principal_type\":\"team\",\"principal_id\":\"t1\",\"role_id\":\"r\",\"region\":\"*\","
        "\"resource\":\"doc/*\",\"permissions\":[\"doc:READ\"],\"hlc\":1,\"origin\":\"us\","
        "\"origin_seq\":1,\"deleted\":false}}],\"cursor\":\"11\",\"more\":false}",
        "{\"changes\":[{\"seq\":11,\"kind\":\"policy\",\"row\":{\"assignment_id\":\"a1\","
        "\"principal_type\":\"team\",\"principal_id\":\"t1\",\"role_id\":\"r\",\"region\":\"*\","
        "\"resource\":\"doc//\",\"permissions\":[\"doc:read\"],\"hlc\":1,\"origin\":\"us\","
        "\"origin_seq\":1,\"deleted\":false}}],\"cursor\":\"11\",\"more\":false}",
        "{\"changes\":[{\"seq\":11,\"kind\":\"user\",\"row\":{\"user_id\":\"u1\",\"subject\":"
        "\"a b\",\"hlc\":1,\"origin\":\"us\",\"origin_seq\":1,\"deleted\":false}}],\"cursor\":"
        "\"11\",\"more\":false}",
        "{\"changes\":[],\"cursor\":\"11\",\"more\":false,\"watermarks\":{\"us\":{\"applied\":-1,"
        "\"known\":1}}}",
        "{\"changes\":[],\"cursor\":\"11\",\"more\":false,\"watermarks\":[]}",
    };
    af_index *ix = loaded_base();
    af_result before, after;
    size_t i;

    (void)state;
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc/1", &before), 1);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *j = parse(bad[i]);
        azc_err e;

        azc_err_clear(&e);
        if (af_index_apply(ix, j, &e) != AZC_EINVAL)
            fail_msg("answer %zu was not refused", i);
        assert_true(e.msg[0] != '\0');
        json_decref(j);
        assert_int_equal(af_index_cursor(ix), 10);
        assert_int_equal(allowed(ix, "alice", "doc:read", "doc/1", &after), 1);
        assert_int_equal(after.generation, before.generation);
        assert_int_equal(after.marks[0].applied, 50);
    }
    af_index_free(ix);
}

static void test_updates(void **state)
{
    af_index *ix = loaded_base();
    af_result r;
    azc_err e;
    json_t *j;
    uint64_t g0;

    (void)state;
    allowed(ix, "alice", "doc:read", "doc/1", &r);
    g0 = r.generation;
    /* Same cursor, same watermarks: nothing published. */
    j = parse("{\"changes\":[],\"cursor\":\"10\",\"more\":false,"
              "\"watermarks\":{\"us\":{\"applied\":40,\"known\":60}}}");
    assert_int_equal(af_index_apply(ix, j, &e), AZC_OK);
    json_decref(j);
    allowed(ix, "alice", "doc:read", "doc/1", &r);
    assert_int_equal(r.generation, g0);
    assert_int_equal(r.marks[0].applied, 50); /* never down */
    /* Watermark-only: a new generation, strings accepted too. */
    j = parse("{\"changes\":[],\"cursor\":\"10\",\"more\":false,"
              "\"watermarks\":{\"us\":{\"applied\":\"70\",\"known\":70},"
              "\"eu\":{\"applied\":3,\"known\":4}}}");
    assert_int_equal(af_index_apply(ix, j, &e), AZC_OK);
    json_decref(j);
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc/1", &r), 1);
    assert_true(r.generation > g0);
    assert_int_equal(r.marks[0].applied, 70);
    /* Deleted rows remove: the membership, then a direct grant added and its
     * user's subject renamed. */
    j = parse("{\"changes\":[{\"seq\":11,\"kind\":\"membership\",\"row\":{\"team_id\":\"t1\","
              "\"user_id\":\"u1\",\"hlc\":2,\"origin\":\"eu\",\"origin_seq\":2,\"deleted\":true}},"
              "{\"seq\":13,\"kind\":\"policy\",\"row\":{\"assignment_id\":\"a3\","
              "\"principal_type\":\"user\",\"principal_id\":\"u1\",\"role_id\":\"r\","
              "\"region\":\"us\",\"resource\":\"db/x\",\"permissions\":[\"db:*\"],\"hlc\":3,"
              "\"origin\":\"eu\",\"origin_seq\":3,\"deleted\":false}}],\"cursor\":\"14\","
              "\"more\":false}");
    assert_int_equal(af_index_apply(ix, j, &e), AZC_OK);
    json_decref(j);
    assert_int_equal(af_index_cursor(ix), 14);
    assert_int_equal(allowed(ix, "alice", "doc:read", "doc/1", &r), 0);
    assert_int_equal(allowed(ix, "alice", "db:drop", "db/x", &r), 1);
    assert_string_equal(r.marks[r.origin].name, "eu");
    assert_int_equal(r.via_origin, -1);
    assert_int_equal(allowed(ix, "alice", "db:drop", "db/y", &r), 0);
    j = parse("{\"changes\":[{\"seq\":15,\"kind\":\"user\",\"row\":{\"user_id\":\"u1\","
              "\"subject\":\"alicia\",\"hlc\":4,\"origin\":\"us\",\"origin_seq\":4,"
              "\"deleted\":false}}],\"cursor\":\"15\",\"more\":false}");
    assert_int_equal(af_index_apply(ix, j, &e), AZC_OK);
    json_decref(j);
    assert_int_equal(allowed(ix, "alice", "db:drop", "db/x", &r), 0);
    assert_int_equal(allowed(ix, "alicia", "db:drop", "db/x", &r), 1);
    assert_true(af__index_refs_ok(ix));
    j = parse("{\"changes\":[{\"seq\":16,\"kind\":\"policy\",\"row\":{\"assignment_id\":\"a3\","
              "\"principal_type\":\"user\",\"principal_id\":\"u1\",\"role_id\":\"r\","
              "\"region\":\"us\",\"resource\":\"db/x\",\"permissions\":[\"db:*\"],\"hlc\":5,"
              "\"origin\":\"eu\",\"origin_seq\":5,\"deleted\":true}}],\"cursor\":\"16\","
              "\"more\":false}");
    assert_int_equal(af_index_apply(ix, j, &e), AZC_OK);
    json_decref(j);
    assert_int_equal(allowed(ix, "alicia", "db:drop", "db/x", &r), 0);
    af_index_free(ix);
}

/* ---- a principal with many assignments ------------------------------ */

#define HEAVY 3000

static json_t *heavy_policy(int i, int deleted, int hlc)
{
    char id[16], res[16], perm[16];

    snprintf(id, sizeof id, "a%d", i);
    /* 700 resources for 3,000 grants (runs of equal resource hashes) and a
     * type wildcard every 50th; the permission names the grant. */
    if (i % 50 == 0)
        snprintf(res, sizeof res, "t%d/*", i % 7);
    else
        snprintf(res, sizeof res, "t%d/r%d", i % 7, i % 700);
    snprintf(perm, sizeof perm, "t%d:v%d", i % 7, i);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:i, s:s, s:i, s:b}",
                     "assignment_id", id, "principal_type", i % 2 ? "team" : "user",
                     "principal_id", i % 2 ? "t1" : "u1", "role_id", "r", "region", "*",
                     "resource", res, "permissions", perm, "hlc", hlc, "origin", "us",
                     "origin_seq", hlc, "deleted", deleted);
}

/* Whether alice holds grant i, asked on the grant's own resource (or one
 * under its wildcard) and permission. */
static int heavy_allowed(af_index *ix, int i)
{
    char res[16], act[16];
    af_result r;

    snprintf(res, sizeof res, "t%d/r%d", i % 7, i % 50 == 0 ? 9999 : i % 700);
    snprintf(act, sizeof act, "t%d:v%d", i % 7, i);
    return allowed(ix, "alice", act, res, &r);
}

/* Entries live in a probed table per record: removing some from inside a
 * run must leave every other one reachable, and a record grown one row at
 * a time must find them all. */
static void test_heavy_principal(void **state)
{
    af_index *ix = af_index_new("us");
    json_t *snap = parse("{\"region\":\"us\",\"cursor\":\"1\",\"users\":[{\"user_id\":\"u1\","
                         "\"subject\":\"alice\",\"hlc\":1,\"origin\":\"us\",\"origin_seq\":1,"
                         "\"deleted\":false}],\"memberships\":[{\"team_id\":\"t1\","
                         "\"user_id\":\"u1\",\"hlc\":1,\"origin\":\"us\",\"origin_seq\":1,"
                         "\"deleted\":false}],\"policies\":[]}");
    json_t *pol = json_object_get(snap, "policies"), *ans, *ch;
    af_result r;
    azc_err e;
    int i;

    (void)state;
    for (i = 0; i < HEAVY; i++)
        assert_int_equal(json_array_append_new(pol, heavy_policy(i, 0, 2)), 0);
    assert_int_equal(af_index_load_snapshot(ix, snap, &e), AZC_OK);
    json_decref(snap);
    for (i = 0; i < HEAVY; i++)
        assert_int_equal(heavy_allowed(ix, i), 1);
    assert_int_equal(allowed(ix, "alice", "t1:v9999", "t1/r1", &r), 0);
    assert_int_equal(allowed(ix, "alice", "t1:v1", "t1/r700", &r), 0);

    /* Every third grant revoked in one answer, the rest untouched. */
    ch = json_array();
    for (i = 0; i < HEAVY; i += 3)
        assert_int_equal(json_array_append_new(ch, json_pack("{s:i, s:s, s:o}", "seq", 2 + i,
                                                              "kind", "policy", "row",
                                                              heavy_policy(i, 1, 3))),
                         0);
    ans = json_pack("{s:o, s:s, s:b}", "changes", ch, "cursor", "9000", "more", 0);
    assert_int_equal(af_index_apply(ix, ans, &e), AZC_OK);
    json_decref(ans);
    for (i = 0; i < HEAVY; i++)
        if (heavy_allowed(ix, i) != (i % 3 != 0))
            fail_msg("grant %d: %s after revoking every third", i,
                     i % 3 ? "denied" : "allowed");
    af_index_free(ix);
}

/* Applies a feed answer of one membership change at seq (its cursor). */
static void apply_membership_change(af_index *ix, int seq, const char *team, const char *user,
                                    int deleted)
{
    char cur[16];
    json_t *j;
    azc_err e;

    snprintf(cur, sizeof cur, "%d", seq);
    j = json_pack("{s:[{s:i, s:s, s:{s:s, s:s, s:i, s:s, s:i, s:b}}], s:s, s:b}", "changes",
                  "seq", seq, "kind", "membership", "row", "team_id", team, "user_id", user,
                  "hlc", seq, "origin", "us", "origin_seq", seq, "deleted", deleted, "cursor",
                  cur, "more", 0);
    assert_non_null(j);
    if (af_index_apply(ix, j, &e) != AZC_OK)
        fail_msg("apply: %s", e.msg);
    json_decref(j);
}

/* Ids too long to sit inside a reference (REF_SMALL) are kept apart:
 * loaded, copied into a new generation, removed. */
static void test_long_ids(void **state)
{
    char uid[101], tid[101], doc[2048];
    af_index *ix = af_index_new("us");
    af_result r;
    azc_err e;
    json_t *j;

    (void)state;
    memset(uid, 'u', 100);
    memset(tid, 't', 100);
    uid[100] = tid[100] = '\0';
    snprintf(doc, sizeof doc,
             "{\"region\":\"us\",\"cursor\":\"1\",\"users\":[{\"user_id\":\"%s\","
             "\"subject\":\"long\",\"hlc\":1,\"origin\":\"us\",\"origin_seq\":1,"
             "\"deleted\":false}],\"memberships\":[{\"team_id\":\"%s\",\"user_id\":\"%s\","
             "\"hlc\":1,\"origin\":\"us\",\"origin_seq\":1,\"deleted\":false}],"
             "\"policies\":[{\"assignment_id\":\"a1\",\"principal_type\":\"team\","
             "\"principal_id\":\"%s\",\"role_id\":\"r\",\"region\":\"*\","
             "\"resource\":\"doc/*\",\"permissions\":[\"doc:read\"],\"hlc\":1,"
             "\"origin\":\"us\",\"origin_seq\":1,\"deleted\":false}]}",
             uid, tid, uid, tid);
    j = parse(doc);
    assert_int_equal(af_index_load_snapshot(ix, j, &e), AZC_OK);
    json_decref(j);
    assert_int_equal(allowed(ix, "long", "doc:read", "doc/1", &r), 1);
    /* A second membership: the user's record is copied, long ids too. */
    apply_membership_change(ix, 2, "t2", uid, 0);
    assert_int_equal(allowed(ix, "long", "doc:read", "doc/1", &r), 1);
    assert_true(af__index_refs_ok(ix));
    apply_membership_change(ix, 3, tid, uid, 1);
    assert_int_equal(allowed(ix, "long", "doc:read", "doc/1", &r), 0);
    assert_true(af__index_refs_ok(ix));
    af_index_free(ix);
}

/* ---- readers racing the writer -------------------------------------- */

typedef struct race {
    af_index *ix;
    atomic_int stop;
    atomic_long checks, bad;
} race;

/* Answer k (k >= 1) sets applied[us] = k; the grants (a direct assignment
 * and a membership in a team that holds a grant) are in iff k is odd. A
 * reader whose generation says applied = k must see exactly that state. */
static void *reader(void *arg)
{
    race *rc = arg;

    while (!atomic_load(&rc->stop)) {
        af_result r1, r2;

        allowed(rc->ix, "carol", "doc:read", "doc/x", &r1);
        allowed(rc->ix, "carol", "app:read", "app/y", &r2);
        if (r1.loaded && r1.n_origins > 0 && r1.allowed != (int)(r1.marks[0].applied & 1))
            atomic_fetch_add(&rc->bad, 1);
        if (r2.loaded && r2.n_origins > 0 && r2.allowed != (int)(r2.marks[0].applied & 1))
            atomic_fetch_add(&rc->bad, 1);
        if (r1.loaded && r1.allowed && (r1.via_origin != -1 || r1.origin != 0))
            atomic_fetch_add(&rc->bad, 1);
        if (r2.loaded && r2.allowed && r2.via_origin != 0)
            atomic_fetch_add(&rc->bad, 1);
        atomic_fetch_add(&rc->checks, 2);
    }
    return NULL;
}

static json_t *race_rows(long k, int with_deleted)
{
    int on = (int)(k & 1);
    json_t *p1 = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:I, s:s, s:i, s:b}",
                           "assignment_id", "flip-1", "principal_type", "user", "principal_id",
                           "uc", "role_id", "r", "region", "us", "resource", "doc/x",
                           "permissions", "doc:read", "hlc", (json_int_t)k, "origin", "us",
                           "origin_seq", 1, "deleted", !on);
    json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:i, s:b}", "team_id", "tc", "user_id", "uc",
                          "hlc", (json_int_t)k, "origin", "us", "origin_seq", 1, "deleted", !on);

    (void)with_deleted;
    return json_pack("[{s:s, s:o}, {s:s, s:o}]", "kind", "policy", "row", p1, "kind",
                     "membership", "row", m);
}

static json_t *race_snapshot(long k)
{
    json_t *rows = race_rows(k, 0), *ps = json_array(), *ms = json_array();
    char cur[24];

    json_array_append(ps, json_object_get(json_array_get(rows, 0), "row"));
    json_array_append(ms, json_object_get(json_array_get(rows, 1), "row"));
    json_array_append_new(ps, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:i, s:s, s:i, "
                                        "s:b}", "assignment_id", "team-grant", "principal_type",
                                        "team", "principal_id", "tc", "role_id", "r", "region",
                                        "*", "resource", "app/*", "permissions", "app:read",
                                        "hlc", 1, "origin", "us", "origin_seq", 1, "deleted", 0));
    json_decref(rows);
    snprintf(cur, sizeof cur, "%ld", k * 2);
    return json_pack("{s:s, s:s, s:{s:{s:I, s:I}}, s:[{s:s, s:s, s:i, s:s, s:i, s:b}], s:o, "
                     "s:o}", "region", "us", "cursor", cur, "watermarks", "us", "applied",
                     (json_int_t)k, "known", (json_int_t)k, "users", "user_id", "uc", "subject",
                     "carol", "hlc", 1, "origin", "us", "origin_seq", 1, "deleted", 0,
                     "memberships", ms, "policies", ps);
}

static void test_race(void **state)
{
    race rc = { .ix = af_index_new("us") };
    pthread_t th[3];
    json_t *j;
    azc_err e;
    long k;
    int i;

    (void)state;
    for (i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader, &rc), 0);
    j = race_snapshot(0);
    assert_int_equal(af_index_load_snapshot(rc.ix, j, &e), AZC_OK);
    json_decref(j);
    for (k = 1; k <= 3000; k++) {
        if (k % 500 == 0) {
            /* As on a 410: a whole new state while readers run. */
            j = race_snapshot(k);
            if (af_index_load_snapshot(rc.ix, j, &e) != AZC_OK)
                fail_msg("reload: %s", e.msg);
        } else {
            json_t *rows = race_rows(k, 1);
            char cur[24];

            json_object_set_new(json_array_get(rows, 0), "seq", json_integer(k * 2 - 1));
            json_object_set_new(json_array_get(rows, 1), "seq", json_integer(k * 2));
            snprintf(cur, sizeof cur, "%ld", k * 2);
            j = json_pack("{s:o, s:s, s:b, s:{s:{s:I, s:I}}}", "changes", rows, "cursor", cur,
                          "more", 0, "watermarks", "us", "applied", (json_int_t)k, "known",
                          (json_int_t)k);
            if (af_index_apply(rc.ix, j, &e) != AZC_OK)
                fail_msg("apply %ld: %s", k, e.msg);
        }
        json_decref(j);
    }
    atomic_store(&rc.stop, 1);
    for (i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&rc.bad), 0);
    assert_true(atomic_load(&rc.checks) > 1000);
    af_index_free(rc.ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
        cmocka_unit_test(test_bad_answers),
        cmocka_unit_test(test_updates),
        cmocka_unit_test(test_heavy_principal),
        cmocka_unit_test(test_long_ids),
        cmocka_unit_test(test_race),
        cmocka_unit_test(test_oracle),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
