/*
 * `authz-replicator verify` (see verify.h and docs/replication.md).
 *
 * The comparison streams: every region's table is read through a server
 * side cursor ordered by primary key, in batches of VF_FETCH rows, and the
 * regions' streams are merged by key, so memory stays a few batches per
 * region whatever the number of rows. Each key is judged once, against the
 * last-writer-wins winner among the regions' settled rows (hlc at or below
 * the common watermark of the row's origin), which every region must hold
 * by then. The digests are SHA-256 (OpenSSL EVP) computed here rather than
 * by an aggregate in SQL: the per key judgement already needs every row in
 * the client, an ordered string_agg would build each origin's whole text in
 * one server value, and a digest over the same pass costs nothing more.
 *
 * A region is excused for a key, and the key is left out of the digests
 * (but still checked in the other regions), when
 *   - its row is above the watermark and newer than the winner: it has
 *     moved on, and the others will follow; or
 *   - it lacks the key and the winner is a tombstone it may have collected
 *     under the contract's rule: its own applied[O] and the applied[O] it
 *     recorded for every other region (authz.peer_watermarks) have passed
 *     the tombstone's hlc.
 */
#include "replicator/verify.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>

#include "common/pg.h"

#define VF_MAX_REGIONS 16
#define VF_NAME_LEN 64
#define VF_MAX_ORIGINS 256
#define VF_MAX_DIFFS 10
#define VF_FETCH 2000  /* rows per FETCH: a round trip per 2,000 rows */
#define VF_STR_(x) #x
#define VF_STR(x) VF_STR_(x)
#define VF_MAX_COLS 16

static const char SQL_BEGIN[] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
static const char SQL_TIMEOUT[] = "SELECT set_config('statement_timeout', $1, true)";
static const char SQL_WATERMARKS[] = "SELECT origin, applied_hlc FROM authz.watermarks";
static const char SQL_PEER_WATERMARKS[] =
    "SELECT peer, origin, applied_hlc FROM authz.peer_watermarks";
static const char SQL_FETCH[] = "FETCH " VF_STR(VF_FETCH) " FROM vf_rows";
static const char SQL_CLOSE[] = "CLOSE vf_rows";
static const char SQL_ROLLBACK[] = "ROLLBACK";

/* One replicated table: key columns first, then hlc, origin, origin_seq,
 * deleted, then the payload. Keys are uuids, whose order in PostgreSQL is
 * the byte order, the same as strcmp on their canonical text, so every
 * region's stream comes in the order the merge compares with. */
typedef struct vf_table {
    const char *kind;
    int nkey;
    const char *declare;
} vf_table;

static const vf_table TABLES[] = {
    {"user", 1,
     "DECLARE vf_rows NO SCROLL CURSOR FOR SELECT user_id, hlc, origin, origin_seq, deleted, "
     "subject FROM authz.users ORDER BY user_id"},
    {"membership", 2,
     "DECLARE vf_rows NO SCROLL CURSOR FOR SELECT team_id, user_id, hlc, origin, origin_seq, "
     "deleted FROM authz.memberships ORDER BY team_id, user_id"},
    {"policy", 1,
     "DECLARE vf_rows NO SCROLL CURSOR FOR SELECT assignment_id, hlc, origin, origin_seq, "
     "deleted, principal_type, principal_id, role_id, region, resource, permissions "
     "FROM authz.policies ORDER BY assignment_id"},
};
#define VF_NTABLES (sizeof TABLES / sizeof TABLES[0])

typedef struct vf_region {
    char name[VF_NAME_LEN];
    const char *url;        /* borrowed from the configuration */
    PGconn *conn;
    PGresult *wm;           /* origin, applied_hlc */
    PGresult *pw;           /* peer, origin, applied_hlc */
    PGresult *batch;        /* the current FETCH */
    int pos, done;
    char reason[AZC_ERRMSG_MAX]; /* why it could not be read; "" if it could */
} vf_region;

typedef struct vf_origin {
    char name[VF_NAME_LEN];
    long long w;                            /* min over regions of applied_hlc */
    long long bound[VF_MAX_REGIONS];        /* what region r may have collected */
    EVP_MD_CTX *ctx[VF_MAX_REGIONS];
    EVP_MD_CTX *ref;                        /* the winners: what every region must hold */
    long long rows[VF_MAX_REGIONS];
    int flagged[VF_MAX_REGIONS];            /* a key of this origin differs there */
    long long ndiff;
    json_t *diffs;                          /* the first VF_MAX_DIFFS */
} vf_origin;

typedef struct vf_run {
    vf_region regions[VF_MAX_REGIONS];
    size_t nregions;
    vf_origin *origins;                     /* sorted by name */
    size_t norigins;
    long long timeout_ms, statement_timeout_ms;
    azc_log *log;
    FILE *out;
    long long compared;
} vf_run;

/* ---- configuration ---------------------------------------------------- */

static int read_config(vf_run *run, const azc_config *cfg, azc_err *e)
{
    char names[VF_MAX_REGIONS][VF_NAME_LEN];
    const char *self, *pg_url = NULL, *url;
    size_t i, n;
    int rc;

    if ((rc = azc_config_regions(cfg, &self, &names[0][0], VF_NAME_LEN, VF_MAX_REGIONS, &n, e)) !=
            AZC_OK ||
        (rc = azc_config_get_string(cfg, "pg", "url", NULL, &pg_url, e)) != AZC_OK ||
        (rc = azc_config_get_int(cfg, "verify", "connect_timeout_ms", 5000, 100, 600000,
                                 &run->timeout_ms, e)) != AZC_OK ||
        (rc = azc_config_get_int(cfg, "verify", "statement_timeout_ms", 300000, 100, 86400000,
                                 &run->statement_timeout_ms, e)) != AZC_OK)
        return rc;
    for (i = 0; i < n; i++) {
        vf_region *r = &run->regions[i];
        int own = strcmp(names[i], self) == 0;
        size_t j;

        for (j = 0; j < i; j++)
            if (strcmp(names[j], names[i]) == 0)
                return azc_err_set(e, AZC_EINVAL, "configuration: service.regions names "
                                                  "\"%s\" twice", names[i]);

        if ((rc = azc_config_get_string(cfg, "verify", names[i], own ? pg_url : NULL, &url, e)) !=
            AZC_OK)
            return rc;
        if (url == NULL || *url == '\0')
            return azc_err_set(e, AZC_EINVAL,
                               "configuration: verify.%s must be the PostgreSQL URL of region "
                               "%s's authz store%s", names[i], names[i],
                               own ? " (or set pg.url)" : "");
        memcpy(r->name, names[i], VF_NAME_LEN);
        r->url = url;
    }
    run->nregions = n;
    return AZC_OK;
}

/* ---- reading each region ---------------------------------------------- */

/* Connects and opens the read-only snapshot; on failure r->reason says why. */
static void open_region(vf_run *run, vf_region *r)
{
    char timeout[32];
    const char *p[1] = {timeout};
    azc_err e;

    azc_err_clear(&e);
    snprintf(timeout, sizeof timeout, "%lld", run->statement_timeout_ms);
    if (azc_pg_connect(r->url, "authz-replicator-verify", (int)run->timeout_ms, run->log,
                       &r->conn, &e) != AZC_OK ||
        azc_pg_query(r->conn, SQL_BEGIN, 0, NULL, NULL, &e) != AZC_OK ||
        azc_pg_query(r->conn, SQL_TIMEOUT, 1, p, NULL, &e) != AZC_OK ||
        azc_pg_query(r->conn, SQL_WATERMARKS, 0, NULL, &r->wm, &e) != AZC_OK ||
        azc_pg_query(r->conn, SQL_PEER_WATERMARKS, 0, NULL, &r->pw, &e) != AZC_OK)
        snprintf(r->reason, sizeof r->reason, "%s", e.msg[0] ? e.msg : "cannot read the store");
}

static void close_region(vf_region *r)
{
    PQclear(r->wm);
    PQclear(r->pw);
    PQclear(r->batch);
    if (r->conn != NULL) {
        PGresult *res = PQexec(r->conn, SQL_ROLLBACK);

        PQclear(res);
        PQfinish(r->conn);
    }
    r->wm = r->pw = r->batch = NULL;
    r->conn = NULL;
}

static int parse_ll(const char *s, long long *out)
{
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    return *s != '\0' && *end == '\0' && errno == 0 ? AZC_OK : AZC_EINVAL;
}

/* applied_hlc of `origin` in r (0 when r has none). */
static long long region_applied(const vf_region *r, const char *origin)
{
    long long v;
    int i;

    for (i = 0; i < PQntuples(r->wm); i++)
        if (strcmp(PQgetvalue(r->wm, i, 0), origin) == 0)
            return parse_ll(PQgetvalue(r->wm, i, 1), &v) == AZC_OK ? v : 0;
    return 0;
}

/* What r recorded of `peer`'s applied_hlc of `origin` (0: nothing). */
static long long peer_applied(const vf_region *r, const char *peer, const char *origin)
{
    long long v;
    int i;

    for (i = 0; i < PQntuples(r->pw); i++)
        if (strcmp(PQgetvalue(r->pw, i, 0), peer) == 0 &&
            strcmp(PQgetvalue(r->pw, i, 1), origin) == 0)
            return parse_ll(PQgetvalue(r->pw, i, 2), &v) == AZC_OK ? v : 0;
    return 0;
}

static int origin_cmp(const void *a, const void *b)
{
    return strcmp(((const vf_origin *)a)->name, ((const vf_origin *)b)->name);
}

static int add_origin(vf_run *run, const char *name, azc_err *e)
{
    size_t i;

    for (i = 0; i < run->norigins; i++)
        if (strcmp(run->origins[i].name, name) == 0)
            return AZC_OK;
    if (run->norigins == VF_MAX_ORIGINS)
        return azc_err_set(e, AZC_ETOOBIG, "more than %d origins", VF_MAX_ORIGINS);
    if (strlen(name) >= VF_NAME_LEN)
        return azc_err_set(e, AZC_EINVAL, "origin name too long in authz.watermarks");
    memcpy(run->origins[run->norigins].name, name, strlen(name) + 1);
    run->norigins++;
    return AZC_OK;
}

/* The origins (every configured region and every origin some region has
 * a watermark for), their common watermark and each region's collection
 * bound, and the digest contexts. */
static int build_origins(vf_run *run, azc_err *e)
{
    size_t i, j, k, o;
    int rc;

    run->origins = calloc(VF_MAX_ORIGINS, sizeof *run->origins);
    if (run->origins == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    for (i = 0; i < run->nregions; i++)
        if ((rc = add_origin(run, run->regions[i].name, e)) != AZC_OK)
            return rc;
    for (i = 0; i < run->nregions; i++)
        for (k = 0; k < (size_t)PQntuples(run->regions[i].wm); k++)
            if ((rc = add_origin(run, PQgetvalue(run->regions[i].wm, (int)k, 0), e)) != AZC_OK)
                return rc;
    qsort(run->origins, run->norigins, sizeof *run->origins, origin_cmp);
    for (o = 0; o < run->norigins; o++) {
        vf_origin *og = &run->origins[o];

        og->w = -1;
        for (i = 0; i < run->nregions; i++) {
            long long a = region_applied(&run->regions[i], og->name);

            if (og->w < 0 || a < og->w)
                og->w = a;
            /* The contract's collection rule as region i applies it. */
            og->bound[i] = a;
            for (j = 0; j < run->nregions; j++) {
                long long p;

                if (j == i)
                    continue;
                p = peer_applied(&run->regions[i], run->regions[j].name, og->name);
                if (p < og->bound[i])
                    og->bound[i] = p;
            }
        }
        og->diffs = json_array();
        og->ref = EVP_MD_CTX_new();
        if (og->diffs == NULL || og->ref == NULL ||
            EVP_DigestInit_ex(og->ref, EVP_sha256(), NULL) != 1)
            return azc_err_set(e, AZC_ENOMEM, "out of memory");
        for (i = 0; i < run->nregions; i++) {
            og->ctx[i] = EVP_MD_CTX_new();
            if (og->ctx[i] == NULL || EVP_DigestInit_ex(og->ctx[i], EVP_sha256(), NULL) != 1)
                return azc_err_set(e, AZC_ENOMEM, "out of memory");
        }
    }
    return AZC_OK;
}

static void free_origins(vf_run *run)
{
    size_t o, i;

    if (run->origins == NULL)
        return;
    for (o = 0; o < run->norigins; o++) {
        json_decref(run->origins[o].diffs);
        EVP_MD_CTX_free(run->origins[o].ref);
        for (i = 0; i < run->nregions; i++)
            EVP_MD_CTX_free(run->origins[o].ctx[i]);
    }
    free(run->origins);
    run->origins = NULL;
}

static int find_origin(const vf_run *run, const char *name)
{
    size_t lo = 0, hi = run->norigins;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(run->origins[mid].name, name);

        if (c == 0)
            return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- the merge -------------------------------------------------------- */

/* The current row of r, fetching the next batch when needed: 1 there is
 * one, 0 the stream is done, AZC_EUNAVAIL with r->reason on failure. */
static int current_row(vf_region *r, azc_err *e)
{
    if (r->done)
        return 0;
    if (r->batch != NULL && r->pos < PQntuples(r->batch))
        return 1;
    PQclear(r->batch);
    r->batch = NULL;
    r->pos = 0;
    if (azc_pg_query(r->conn, SQL_FETCH, 0, NULL, &r->batch, e) != AZC_OK) {
        snprintf(r->reason, sizeof r->reason, "%s", e->msg);
        return azc_err_set(e, AZC_EUNAVAIL, "region %s: %s", r->name, r->reason);
    }
    if (PQnfields(r->batch) > VF_MAX_COLS) {
        snprintf(r->reason, sizeof r->reason, "unexpected columns");
        return azc_err_set(e, AZC_EUNAVAIL, "region %s: unexpected columns", r->name);
    }
    if (PQntuples(r->batch) == 0) {
        r->done = 1;
        return 0;
    }
    return 1;
}

static int key_cmp(const vf_region *a, const vf_region *b, int nkey)
{
    int c, i;

    for (i = 0; i < nkey; i++)
        if ((c = strcmp(PQgetvalue(a->batch, a->pos, i), PQgetvalue(b->batch, b->pos, i))) != 0)
            return c;
    return 0;
}

/* A row's version, parsed once per key. */
typedef struct vf_row {
    int present, settled, origin; /* origin: index in run->origins, -1 unknown */
    long long hlc;
    const char *origin_name;
    int deleted;
} vf_row;

static int rows_equal(const vf_region *a, const vf_region *b)
{
    int c, n = PQnfields(a->batch);

    for (c = 0; c < n; c++) {
        if (PQgetisnull(a->batch, a->pos, c) != PQgetisnull(b->batch, b->pos, c) ||
            strcmp(PQgetvalue(a->batch, a->pos, c), PQgetvalue(b->batch, b->pos, c)) != 0)
            return 0;
    }
    return 1;
}

/* (hlc, origin) of a greater than that of b: the last-writer-wins order. */
static int newer(const vf_row *a, const vf_row *b)
{
    if (a->hlc != b->hlc)
        return a->hlc > b->hlc;
    return strcmp(a->origin_name, b->origin_name) > 0;
}

/* Feeds one row into a digest: the kind, then every column as
 * "<length>:<bytes>" ("-" for NULL), so no two rows hash alike by
 * shifting bytes between columns. */
static int digest_row(EVP_MD_CTX *ctx, const char *kind, const vf_region *r, azc_err *e)
{
    char len[24];
    int c, n = PQnfields(r->batch), ok = 1;

    ok &= EVP_DigestUpdate(ctx, kind, strlen(kind) + 1) == 1;
    for (c = 0; c < n && ok; c++) {
        if (PQgetisnull(r->batch, r->pos, c)) {
            ok &= EVP_DigestUpdate(ctx, "-", 1) == 1;
            continue;
        }
        snprintf(len, sizeof len, "%d:", PQgetlength(r->batch, r->pos, c));
        ok &= EVP_DigestUpdate(ctx, len, strlen(len)) == 1;
        ok &= EVP_DigestUpdate(ctx, PQgetvalue(r->batch, r->pos, c),
                               (size_t)PQgetlength(r->batch, r->pos, c)) == 1;
    }
    ok &= EVP_DigestUpdate(ctx, "\n", 1) == 1;
    return ok ? AZC_OK : azc_err_set(e, AZC_ERROR, "sha256 update failed");
}

/* The row as JSON: hlc and origin_seq as numbers, deleted as a boolean. */
static json_t *row_json(const vf_region *r, const vf_row *v)
{
    json_t *o = json_object();
    long long n;
    int c;

    if (o == NULL)
        return NULL;
    for (c = 0; c < PQnfields(r->batch); c++) {
        const char *name = PQfname(r->batch, c), *val = PQgetvalue(r->batch, r->pos, c);
        json_t *j;

        if ((strcmp(name, "hlc") == 0 || strcmp(name, "origin_seq") == 0) &&
            parse_ll(val, &n) == AZC_OK)
            j = json_integer(n);
        else if (strcmp(name, "deleted") == 0)
            j = json_boolean(strcmp(val, "t") == 0);
        else
            j = json_string(val);
        if (json_object_set_new(o, name, j) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    if (json_object_set_new(o, "above_watermark", json_boolean(!v->settled)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

enum { VF_MATCH, VF_EXCUSED, VF_DIFFER };

static int record_diff(vf_run *run, const vf_table *t, vf_origin *og, const vf_row *rows,
                       const int *verdict, const vf_region *win, azc_err *e)
{
    json_t *d, *key, *versions, *differ, *j;
    size_t i;
    int c, bad = 0;

    og->ndiff++;
    if (json_array_size(og->diffs) >= VF_MAX_DIFFS)
        return AZC_OK;
    d = json_object();
    key = json_object();
    versions = json_object();
    differ = json_array();
    bad |= d == NULL || key == NULL || versions == NULL || differ == NULL;
    for (c = 0; !bad && c < t->nkey; c++)
        bad |= json_object_set_new(key, PQfname(win->batch, c),
                                   json_string(PQgetvalue(win->batch, win->pos, c))) != 0;
    for (i = 0; !bad && i < run->nregions; i++) {
        j = rows[i].present ? row_json(&run->regions[i], &rows[i]) : json_null();
        bad |= j == NULL || json_object_set_new(versions, run->regions[i].name, j) != 0;
        if (!bad && verdict[i] == VF_DIFFER)
            bad |= json_array_append_new(differ, json_string(run->regions[i].name)) != 0;
    }
    if (!bad)
        bad |= json_object_set_new(d, "kind", json_string(t->kind)) != 0 ||
               json_object_set(d, "key", key) != 0 ||
               json_object_set(d, "differing_regions", differ) != 0 ||
               json_object_set(d, "versions", versions) != 0 ||
               json_array_append(og->diffs, d) != 0;
    json_decref(d);
    json_decref(key);
    json_decref(versions);
    json_decref(differ);
    return bad ? azc_err_set(e, AZC_ENOMEM, "out of memory") : AZC_OK;
}

/* Judges one key; `present[i]` says region i's current row has it. */
static int judge_key(vf_run *run, const vf_table *t, const int *present, azc_err *e)
{
    vf_row rows[VF_MAX_REGIONS];
    int verdict[VF_MAX_REGIONS];
    int win = -1, digestible = 1, differs = 0, rc;
    size_t i;
    vf_origin *og;

    for (i = 0; i < run->nregions; i++) {
        vf_region *r = &run->regions[i];
        vf_row *v = &rows[i];

        memset(v, 0, sizeof *v);
        v->origin = -1;
        if (!present[i])
            continue;
        v->present = 1;
        v->origin_name = PQgetvalue(r->batch, r->pos, t->nkey + 1);
        v->deleted = strcmp(PQgetvalue(r->batch, r->pos, t->nkey + 3), "t") == 0;
        if (parse_ll(PQgetvalue(r->batch, r->pos, t->nkey), &v->hlc) != AZC_OK)
            return azc_err_set(e, AZC_ERROR, "region %s: unreadable hlc", r->name);
        v->origin = find_origin(run, v->origin_name);
        v->settled = v->origin >= 0 && v->hlc <= run->origins[v->origin].w;
        if (v->settled && (win < 0 || newer(v, &rows[win])))
            win = (int)i;
    }
    if (win < 0)
        return AZC_OK; /* nothing at or below the watermark: not comparable yet */
    og = &run->origins[rows[win].origin];
    for (i = 0; i < run->nregions; i++) {
        const vf_row *v = &rows[i];

        if (v->present && rows_equal(&run->regions[i], &run->regions[win]))
            verdict[i] = VF_MATCH;
        else if (v->present && !v->settled && newer(v, &rows[win]))
            verdict[i] = VF_EXCUSED;
        else if (!v->present && rows[win].deleted && rows[win].hlc <= og->bound[i])
            verdict[i] = VF_EXCUSED;
        else
            verdict[i] = VF_DIFFER;
        digestible &= verdict[i] != VF_EXCUSED;
        differs |= verdict[i] == VF_DIFFER;
    }
    if (digestible) {
        if ((rc = digest_row(og->ref, t->kind, &run->regions[win], e)) != AZC_OK)
            return rc;
        for (i = 0; i < run->nregions; i++) {
            if (!rows[i].present || !rows[i].settled)
                continue;
            if ((rc = digest_row(run->origins[rows[i].origin].ctx[i], t->kind, &run->regions[i],
                                 e)) != AZC_OK)
                return rc;
            run->origins[rows[i].origin].rows[i]++;
        }
    }
    run->compared++;
    if (!differs)
        return AZC_OK;
    for (i = 0; i < run->nregions; i++) {
        if (verdict[i] != VF_DIFFER)
            continue;
        og->flagged[i] = 1;
        /* Its own settled row of another origin is wrong there too. */
        if (rows[i].present && rows[i].settled)
            run->origins[rows[i].origin].flagged[i] = 1;
    }
    return record_diff(run, t, og, rows, verdict, &run->regions[win], e);
}

static int compare_table(vf_run *run, const vf_table *t, azc_err *e)
{
    int present[VF_MAX_REGIONS];
    int has[VF_MAX_REGIONS];
    size_t i;
    int rc;

    for (i = 0; i < run->nregions; i++) {
        vf_region *r = &run->regions[i];

        r->done = 0;
        r->pos = 0;
        PQclear(r->batch);
        r->batch = NULL;
        if (azc_pg_query(r->conn, t->declare, 0, NULL, NULL, e) != AZC_OK) {
            snprintf(r->reason, sizeof r->reason, "%s", e->msg);
            return azc_err_set(e, AZC_EUNAVAIL, "region %s: %s", r->name, r->reason);
        }
    }
    for (;;) {
        int min = -1;

        for (i = 0; i < run->nregions; i++) {
            if ((rc = current_row(&run->regions[i], e)) < 0)
                return rc;
            has[i] = rc;
            if (has[i] && (min < 0 || key_cmp(&run->regions[i], &run->regions[min], t->nkey) < 0))
                min = (int)i;
        }
        if (min < 0)
            break;
        for (i = 0; i < run->nregions; i++)
            present[i] = has[i] && key_cmp(&run->regions[i], &run->regions[min], t->nkey) == 0;
        if ((rc = judge_key(run, t, present, e)) != AZC_OK)
            return rc;
        for (i = 0; i < run->nregions; i++)
            if (present[i])
                run->regions[i].pos++;
    }
    for (i = 0; i < run->nregions; i++) {
        vf_region *r = &run->regions[i];

        PQclear(r->batch);
        r->batch = NULL;
        if (azc_pg_query(r->conn, SQL_CLOSE, 0, NULL, NULL, e) != AZC_OK) {
            snprintf(r->reason, sizeof r->reason, "%s", e->msg);
            return azc_err_set(e, AZC_EUNAVAIL, "region %s: %s", r->name, r->reason);
        }
    }
    return AZC_OK;
}

/* ---- output ----------------------------------------------------------- */

/* Writes one JSON line and takes `line`. */
static int emit(vf_run *run, json_t *line, azc_err *e)
{
    char *s = line != NULL ? json_dumps(line, JSON_COMPACT) : NULL;
    int rc = AZC_OK;

    json_decref(line);
    if (s == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (fprintf(run->out, "%s\n", s) < 0)
        rc = azc_err_set(e, AZC_ERROR, "cannot write the report: %s", strerror(errno));
    free(s);
    return rc;
}

static int finish_hex(EVP_MD_CTX *ctx, char hex[65], azc_err *e)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0, i;

    if (EVP_DigestFinal_ex(ctx, md, &n) != 1 || n != 32)
        return azc_err_set(e, AZC_ERROR, "sha256 failed");
    for (i = 0; i < n; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 0xf];
    }
    hex[64] = '\0';
    return AZC_OK;
}

/* The per region and origin lines, the difference lines; *bad counts the
 * (region, origin) pairs that disagree, *keys the differing keys. */
static int report(vf_run *run, long long *bad, long long *keys, azc_err *e)
{
    char ref[65], hex[65];
    size_t o, i;
    int rc;

    *bad = *keys = 0;
    for (o = 0; o < run->norigins; o++) {
        vf_origin *og = &run->origins[o];

        if ((rc = finish_hex(og->ref, ref, e)) != AZC_OK)
            return rc;
        for (i = 0; i < run->nregions; i++) {
            int agrees;

            if ((rc = finish_hex(og->ctx[i], hex, e)) != AZC_OK)
                return rc;
            agrees = !og->flagged[i] && strcmp(hex, ref) == 0;
            *bad += !agrees;
            rc = emit(run,
                      json_pack("{s:s, s:s, s:I, s:I, s:s, s:b}", "region", run->regions[i].name,
                                "origin", og->name, "watermark", (json_int_t)og->w, "rows",
                                (json_int_t)og->rows[i], "digest", hex, "agrees", agrees),
                      e);
            if (rc != AZC_OK)
                return rc;
        }
        if (og->ndiff > 0) {
            *keys += og->ndiff;
            rc = emit(run,
                      json_pack("{s:s, s:I, s:I, s:O}", "origin", og->name, "watermark",
                                (json_int_t)og->w, "differing_keys", (json_int_t)og->ndiff,
                                "differences", og->diffs),
                      e);
            if (rc != AZC_OK)
                return rc;
        }
    }
    return AZC_OK;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int report_unreachable(vf_run *run, azc_err *e)
{
    json_t *list = json_array();
    size_t i, first = run->nregions;
    int rc = AZC_OK;

    if (list == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    for (i = 0; i < run->nregions && rc == AZC_OK; i++) {
        if (run->regions[i].reason[0] == '\0')
            continue;
        if (first == run->nregions)
            first = i;
        if (json_array_append_new(list, json_string(run->regions[i].name)) != 0) {
            rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
            break;
        }
        rc = emit(run,
                  json_pack("{s:s, s:b, s:s}", "region", run->regions[i].name, "reachable", 0,
                            "error", run->regions[i].reason),
                  e);
    }
    if (rc == AZC_OK)
        rc = emit(run, json_pack("{s:b, s:b, s:o}", "summary", 1, "agrees", 0, "unreachable", list),
                  e);
    else
        json_decref(list);
    if (rc != AZC_OK)
        return rc;
    return azc_err_set(e, AZC_EUNAVAIL, "region %s cannot be read: %s", run->regions[first].name,
                       run->regions[first].reason);
}

int rp_verify_run(const azc_config *cfg, azc_log *log, FILE *out, azc_err *e)
{
    vf_run *run = calloc(1, sizeof *run);
    long long start = now_ms(), bad = 0, keys = 0;
    int status = RP_VERIFY_DISAGREE, rc, unreachable = 0;
    size_t i, t;
    azc_err local;

    if (e == NULL)
        e = &local;
    azc_err_clear(e);
    if (run == NULL) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return RP_VERIFY_DISAGREE;
    }
    run->log = log;
    run->out = out;
    if ((rc = read_config(run, cfg, e)) != AZC_OK) {
        status = rc == AZC_EINVAL ? RP_VERIFY_BAD_CONFIG : RP_VERIFY_DISAGREE;
        goto done;
    }
    for (i = 0; i < run->nregions; i++) {
        open_region(run, &run->regions[i]);
        unreachable |= run->regions[i].reason[0] != '\0';
    }
    if (unreachable) {
        status = report_unreachable(run, e) == AZC_EUNAVAIL ? RP_VERIFY_UNREACHABLE
                                                             : RP_VERIFY_DISAGREE;
        goto done;
    }
    if ((rc = build_origins(run, e)) != AZC_OK)
        goto done;
    azc_logf(log, AZC_LOG_INFO, "verify: comparing %zu regions, %zu origins", run->nregions,
             run->norigins);
    for (t = 0; t < VF_NTABLES; t++) {
        if ((rc = compare_table(run, &TABLES[t], e)) != AZC_OK) {
            if (rc == AZC_EUNAVAIL) {
                azc_err err2;

                azc_err_clear(&err2);
                status = report_unreachable(run, &err2) == AZC_EUNAVAIL ? RP_VERIFY_UNREACHABLE
                                                                         : RP_VERIFY_DISAGREE;
                *e = err2;
            }
            goto done;
        }
    }
    if ((rc = report(run, &bad, &keys, e)) != AZC_OK)
        goto done;
    rc = emit(run,
              json_pack("{s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "summary", 1, "agrees",
                        bad == 0, "regions", (json_int_t)run->nregions, "origins",
                        (json_int_t)run->norigins, "keys_compared", (json_int_t)run->compared,
                        "disagreeing", (json_int_t)bad, "differing_keys", (json_int_t)keys,
                        "elapsed_ms", (json_int_t)(now_ms() - start)),
              e);
    if (rc != AZC_OK)
        goto done;
    if (fflush(out) != 0) {
        azc_err_set(e, AZC_ERROR, "cannot write the report: %s", strerror(errno));
        goto done;
    }
    azc_logf(log, AZC_LOG_INFO, "verify: %lld keys compared, %lld differ, %lld ms", run->compared,
             keys, now_ms() - start);
    status = RP_VERIFY_AGREE;
    if (bad != 0) {
        azc_err_set(e, AZC_ECONFLICT, "regions disagree: %lld differing keys, %lld (region, "
                    "origin) pairs disagree", keys, bad);
        status = RP_VERIFY_DISAGREE;
    }
done:
    fflush(out);
    free_origins(run);
    for (i = 0; i < run->nregions; i++)
        close_region(&run->regions[i]);
    free(run);
    if (e != NULL && e->msg[0] != '\0')
        azc_logf(log, AZC_LOG_ERROR, "verify: %s", e->msg);
    return status;
}

int rp_verify_main(const azc_config *cfg, azc_log *log, azc_err *e)
{
    return rp_verify_run(cfg, log, stdout, e);
}
