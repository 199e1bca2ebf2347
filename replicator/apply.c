/*
 * One peer answer -> one local transaction (DESIGN section 5).
 *
 * Every row is checked in C first (JSON types, members, the kind), then
 * upserted with the same last-writer-wins guard as authz/apply.c:
 * "WHERE (t.hlc, t.origin) < (new hlc, new origin)", so the order in
 * which regions' rows arrive never matters and a row applied twice is a
 * no-op. Rows of this region's own origin are skipped: its consumer is
 * their only writer here.
 *
 * Consecutive rows of one kind go to PostgreSQL as one statement (a
 * "run"): each column is one array parameter, unnested into rows
 * (SQL_BULK_*), so a snapshot or a burst of 1,000 policies is parsed,
 * planned and executed once instead of 1,000 times; a run of one row uses
 * the one-row statement. Runs, not one statement per kind: a feed answer
 * may end inside a transaction of the peer, and its rows enter the local
 * feed (and every follower of it) in the order they are written here, so
 * that order must stay the batch's order, or a reader cut between two
 * rows could see a state that never existed (a new member of a team
 * whose grant was revoked just before, still granted). For the same
 * reason a run inserts its rows in batch order. ON CONFLICT DO UPDATE may
 * not touch one row twice in a statement, so a run first keeps, of
 * several versions of one key, the one last-writer-wins would keep: the
 * greatest (hlc, origin), and of equal ones the first (which a row by row
 * apply keeps too: the second is not newer). Keys are compared as uuids,
 * so two spellings of one uuid are one key. The versions a run drops
 * count as older in the result.
 *
 * Bad rows go to authz.replication_dead_letters with their raw JSON and
 * the reason; the others still apply. A row is checked as strictly as the
 * gateway filters check it (subjects, region names, resource patterns,
 * permissions: common/policy.h), since a row they refuse makes every
 * filter of the region refuse the snapshot that holds it: one bad row
 * from a peer would take the region's gateways down. A row that passes
 * the C checks but fails in PostgreSQL (a uuid that is not one, a CHECK)
 * would abort the transaction, so the batch first runs without
 * savepoints, its run statements pipelined (libpq pipeline mode: a few
 * round trips per batch), and, only when a statement fails for a row's
 * data, is rolled back and run again row by row with a savepoint around
 * each row: the bad row
 * becomes a dead letter with PostgreSQL's reason, the rest applies.
 *
 * The peer's cursor is stored, and its watermarks adopted, in the same
 * transaction: a crash between two answers neither loses nor repeats one.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pg.h"
#include "common/policy.h"
#include "common/revision.h"
#include "replicator/apply.h"

const char *const rp_kind_names[RP_NKINDS] = { "user", "membership", "policy" };

/* The last-writer-wins upsert of each table, shared by the one-row and
 * the run statements so that the two can never disagree. */
#define UPSERT_USER \
    " ON CONFLICT (user_id) DO UPDATE SET subject = EXCLUDED.subject, hlc = EXCLUDED.hlc," \
    "   origin = EXCLUDED.origin, origin_seq = EXCLUDED.origin_seq, deleted = EXCLUDED.deleted" \
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)"
#define UPSERT_MEMBERSHIP \
    " ON CONFLICT (team_id, user_id) DO UPDATE SET hlc = EXCLUDED.hlc," \
    "   origin = EXCLUDED.origin, origin_seq = EXCLUDED.origin_seq, deleted = EXCLUDED.deleted" \
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)"
#define UPSERT_POLICY \
    " ON CONFLICT (assignment_id) DO UPDATE SET principal_type = EXCLUDED.principal_type," \
    "   principal_id = EXCLUDED.principal_id, role_id = EXCLUDED.role_id," \
    "   region = EXCLUDED.region, resource = EXCLUDED.resource," \
    "   permissions = EXCLUDED.permissions, hlc = EXCLUDED.hlc, origin = EXCLUDED.origin," \
    "   origin_seq = EXCLUDED.origin_seq, deleted = EXCLUDED.deleted" \
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)"

static const char SQL_USER[] =
    "INSERT INTO authz.users AS t (user_id, subject, hlc, origin, origin_seq, deleted)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    UPSERT_USER;
static const char SQL_MEMBERSHIP[] =
    "INSERT INTO authz.memberships AS t (team_id, user_id, hlc, origin, origin_seq, deleted)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    UPSERT_MEMBERSHIP;
static const char SQL_POLICY[] =
    "INSERT INTO authz.policies AS t (assignment_id, principal_type, principal_id, role_id,"
    "                                 region, resource, permissions, hlc, origin, origin_seq,"
    "                                 deleted)"
    " VALUES ($1, $2, $3, $4, $5, $6, ARRAY(SELECT jsonb_array_elements_text($7::jsonb)),"
    "         $8, $9, $10, $11)"
    UPSERT_POLICY;
/*
 * The same upserts for a run of rows: parameter i is the array of column
 * i's values (array_literal). DISTINCT ON keeps, per key, the first in
 * its ORDER BY: the greatest (hlc, origin), of equal ones the earliest in
 * the run (ord); the outer ORDER BY then inserts the rows in run order.
 * origin is ordered with the same collation as the LWW guard's
 * comparison (the database's default), so both agree on the newer one.
 */
static const char SQL_BULK_USER[] =
    "INSERT INTO authz.users AS t (user_id, subject, hlc, origin, origin_seq, deleted)"
    " SELECT d.user_id, d.subject, d.hlc, d.origin, d.origin_seq, d.deleted"
    "   FROM (SELECT DISTINCT ON (r.user_id) r.*"
    "           FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],"
    "                       $6::boolean[])"
    "                WITH ORDINALITY AS r (user_id, subject, hlc, origin, origin_seq, deleted,"
    "                                      ord)"
    "          ORDER BY r.user_id, r.hlc DESC, r.origin DESC, r.ord) d"
    "  ORDER BY d.ord"
    UPSERT_USER;
static const char SQL_BULK_MEMBERSHIP[] =
    "INSERT INTO authz.memberships AS t (team_id, user_id, hlc, origin, origin_seq, deleted)"
    " SELECT d.team_id, d.user_id, d.hlc, d.origin, d.origin_seq, d.deleted"
    "   FROM (SELECT DISTINCT ON (r.team_id, r.user_id) r.*"
    "           FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::bigint[],"
    "                       $6::boolean[])"
    "                WITH ORDINALITY AS r (team_id, user_id, hlc, origin, origin_seq, deleted,"
    "                                      ord)"
    "          ORDER BY r.team_id, r.user_id, r.hlc DESC, r.origin DESC, r.ord) d"
    "  ORDER BY d.ord"
    UPSERT_MEMBERSHIP;
static const char SQL_BULK_POLICY[] =
    "INSERT INTO authz.policies AS t (assignment_id, principal_type, principal_id, role_id,"
    "                                 region, resource, permissions, hlc, origin, origin_seq,"
    "                                 deleted)"
    " SELECT d.assignment_id, d.principal_type, d.principal_id, d.role_id, d.region,"
    "        d.resource, ARRAY(SELECT jsonb_array_elements_text(d.permissions)), d.hlc,"
    "        d.origin, d.origin_seq, d.deleted"
    "   FROM (SELECT DISTINCT ON (r.assignment_id) r.*"
    "           FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[],"
    "                       $6::text[], $7::jsonb[], $8::bigint[], $9::text[], $10::bigint[],"
    "                       $11::boolean[])"
    "                WITH ORDINALITY AS r (assignment_id, principal_type, principal_id, role_id,"
    "                                      region, resource, permissions, hlc, origin,"
    "                                      origin_seq, deleted, ord)"
    "          ORDER BY r.assignment_id, r.hlc DESC, r.origin DESC, r.ord) d"
    "  ORDER BY d.ord"
    UPSERT_POLICY;
static const char SQL_DEAD[] =
    "INSERT INTO authz.replication_dead_letters (peer, feed_seq, raw, reason)"
    " VALUES ($1, $2, $3, $4)";
static const char SQL_CURSOR_FEED[] =
    "INSERT INTO authz.replication_cursors (peer, cursor) VALUES ($1, $2)"
    " ON CONFLICT (peer) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()";
static const char SQL_CURSOR_SNAPSHOT[] =
    "INSERT INTO authz.replication_cursors (peer, cursor, resynced_at) VALUES ($1, $2, now())"
    " ON CONFLICT (peer) DO UPDATE SET cursor = EXCLUDED.cursor, resynced_at = now(),"
    "   updated_at = now()";
static const char SQL_CURSOR_LOAD[] =
    "SELECT cursor FROM authz.replication_cursors WHERE peer = $1";
static const char SQL_PEER_WATERMARK[] =
    "INSERT INTO authz.peer_watermarks (peer, origin, applied_hlc, known_hlc)"
    " VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (peer, origin) DO UPDATE SET applied_hlc = EXCLUDED.applied_hlc,"
    "   known_hlc = EXCLUDED.known_hlc, updated_at = now()";
/* Never lowers a watermark; updated_at moves only when known_hlc rises,
 * since authz-server reads a stale updated_at as a silent origin. The
 * WHERE keeps an unchanged row untouched (and out of the result count). */
static const char SQL_ADOPT_WATERMARK[] =
    "INSERT INTO authz.watermarks AS t (origin, applied_hlc, known_hlc, source)"
    " VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (origin) DO UPDATE SET"
    "   applied_hlc = greatest(t.applied_hlc, EXCLUDED.applied_hlc),"
    "   known_hlc = greatest(t.known_hlc, EXCLUDED.known_hlc),"
    "   updated_at = CASE WHEN EXCLUDED.known_hlc > t.known_hlc THEN now() ELSE t.updated_at END,"
    "   source = EXCLUDED.source"
    " WHERE EXCLUDED.applied_hlc > t.applied_hlc OR EXCLUDED.known_hlc > t.known_hlc";
/* No explicit NOTIFY: a raised row announces itself at COMMIT with its
 * values (sql/authz/006), and the local feed's followers with
 * watermarks=1 get them from memory, so the raise travels on to the other
 * regions without a feed read per worker. */
static const char SQL_SAVEPOINT[] = "SAVEPOINT rp_row";
static const char SQL_RELEASE[] = "RELEASE SAVEPOINT rp_row";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO SAVEPOINT rp_row";

#define MAX_PARAMS 11
#define RP_WHY_LEN 512
#define NUM_LEN 24

/* One row to apply. */
typedef struct item {
    int kind;                 /* RP_KIND_*, or -1 when the element is bad */
    json_t *row;              /* borrowed */
    json_t *raw;              /* borrowed: what a dead letter records */
    long long seq;            /* the peer's feed seq; -1 from a snapshot or unknown */
    const char *bad;          /* why the element cannot be applied (static text) */
    int own;                  /* a row of this region's origin */
    int nparams;
    const char *params[MAX_PARAMS];
    char nums[3][NUM_LEN];    /* hlc, origin_seq, deleted */
    char *perms;              /* policies: the permissions array as JSON */
} item;

/* A string member without NUL bytes (PostgreSQL text cannot hold one). */
static const char *str_member(json_t *row, const char *name)
{
    json_t *v = json_object_get(row, name);
    const char *s;

    if (!json_is_string(v))
        return NULL;
    s = json_string_value(v);
    return strlen(s) == json_string_length(v) ? s : NULL;
}

/* Checks a row of `kind` and fills it->params. NULL or the reason. */
static const char *row_prepare(item *it)
{
    json_t *row = it->row, *hlc, *oseq, *del, *perms;
    const char *origin;
    size_t i;
    int n = 0;

    if (!json_is_object(row))
        return "row is not an object";
    hlc = json_object_get(row, "hlc");
    oseq = json_object_get(row, "origin_seq");
    del = json_object_get(row, "deleted");
    origin = str_member(row, "origin");
    if (!json_is_integer(hlc) || json_integer_value(hlc) < 0)
        return "hlc is not a non-negative integer";
    if (!json_is_integer(oseq) || json_integer_value(oseq) < 0)
        return "origin_seq is not a non-negative integer";
    if (!json_is_boolean(del))
        return "deleted is not a boolean";
    if (origin == NULL || !azc_region_valid(origin))
        return "origin is not a region name";
    snprintf(it->nums[0], NUM_LEN, "%lld", (long long)json_integer_value(hlc));
    snprintf(it->nums[1], NUM_LEN, "%lld", (long long)json_integer_value(oseq));
    snprintf(it->nums[2], NUM_LEN, "%s", json_is_true(del) ? "true" : "false");
    switch (it->kind) {
    case RP_KIND_USER:
        if ((it->params[n++] = str_member(row, "user_id")) == NULL)
            return "user_id is not a string";
        if ((it->params[n++] = str_member(row, "subject")) == NULL)
            return "subject is not a string";
        if (!azc_subject_valid(it->params[n - 1]))
            return "subject is not a valid subject";
        break;
    case RP_KIND_MEMBERSHIP:
        if ((it->params[n++] = str_member(row, "team_id")) == NULL)
            return "team_id is not a string";
        if ((it->params[n++] = str_member(row, "user_id")) == NULL)
            return "user_id is not a string";
        break;
    case RP_KIND_POLICY:
        if ((it->params[n++] = str_member(row, "assignment_id")) == NULL)
            return "assignment_id is not a string";
        if ((it->params[n++] = str_member(row, "principal_type")) == NULL)
            return "principal_type is not a string";
        if ((it->params[n++] = str_member(row, "principal_id")) == NULL)
            return "principal_id is not a string";
        if ((it->params[n++] = str_member(row, "role_id")) == NULL)
            return "role_id is not a string";
        if ((it->params[n++] = str_member(row, "region")) == NULL)
            return "region is not a string";
        if (strcmp(it->params[n - 1], "*") != 0 && !azc_region_valid(it->params[n - 1]))
            return "region is not a region name or \"*\"";
        if ((it->params[n++] = str_member(row, "resource")) == NULL)
            return "resource is not a string";
        if (!azc_resource_valid(it->params[n - 1]))
            return "resource is not a resource pattern";
        perms = json_object_get(row, "permissions");
        if (!json_is_array(perms))
            return "permissions is not an array";
        for (i = 0; i < json_array_size(perms); i++) {
            json_t *p = json_array_get(perms, i);

            if (!json_is_string(p) || strlen(json_string_value(p)) != json_string_length(p))
                return "permissions holds a non-string";
            if (!azc_permission_valid(json_string_value(p)))
                return "permissions holds an invalid permission";
        }
        if ((it->perms = json_dumps(perms, JSON_COMPACT)) == NULL)
            return "permissions cannot be encoded";
        it->params[n++] = it->perms;
        break;
    default:
        return "unknown kind";
    }
    it->params[n++] = it->nums[0];
    it->params[n++] = origin;
    it->params[n++] = it->nums[1];
    it->params[n++] = it->nums[2];
    it->nparams = n;
    return NULL;
}

static void item_check(item *it, const rp_apply_ctx *ctx)
{
    if (it->bad == NULL)
        it->bad = row_prepare(it);
    if (it->bad == NULL)
        it->own = strcmp(json_string_value(json_object_get(it->row, "origin")), ctx->region) == 0;
}

static int kind_parse(const char *s)
{
    int k;

    for (k = 0; s != NULL && k < RP_NKINDS; k++)
        if (strcmp(s, rp_kind_names[k]) == 0)
            return k;
    return -1;
}

/* Parses a cursor: a decimal string (or an integer), >= 0. */
static int cursor_parse(json_t *v, long long *out)
{
    const char *s;
    char *end;
    long long n;

    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out >= 0 ? 0 : -1;
    }
    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || n < 0)
        return -1;
    *out = n;
    return 0;
}

static int dead_letter(PGconn *c, const rp_apply_ctx *ctx, const item *it, const char *reason,
                       azc_err *e)
{
    char seq[NUM_LEN];
    char *raw = json_dumps(it->raw, JSON_COMPACT | JSON_ENCODE_ANY);
    const char *p[4];
    int rc;

    if (raw == NULL)
        return azc_err_set(e, AZC_ENOMEM, "cannot encode a dead letter");
    snprintf(seq, sizeof seq, "%lld", it->seq);
    p[0] = ctx->peer;
    p[1] = it->seq >= 0 ? seq : NULL;
    p[2] = raw;
    p[3] = reason;
    rc = azc_pg_query(c, SQL_DEAD, 4, p, NULL, e);
    free(raw);
    return rc;
}

/* A row statement's failure that belongs to the row (bad data: class 22,
 * integrity: class 23) rather than to the database. */
static int row_error(const PGresult *r)
{
    const char *st = azc_pg_sqlstate(r);

    return strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0;
}

static const char *const SQL_KIND[RP_NKINDS] = { SQL_USER, SQL_MEMBERSHIP, SQL_POLICY };
static const char *const SQL_BULK_KIND[RP_NKINDS] = { SQL_BULK_USER, SQL_BULK_MEMBERSHIP,
                                                      SQL_BULK_POLICY };
/* Both prepared once per session for the pipelined path: a batch then
 * costs no parse or plan per statement. */
#define NPREPARED (2 * RP_NKINDS)
static const char *const PREPARED_NAME[NPREPARED] = {
    "rp_user", "rp_membership", "rp_policy", "rp_bulk_user", "rp_bulk_membership",
    "rp_bulk_policy"
};
#define PREPARED_ROW(kind) PREPARED_NAME[(kind)]
#define PREPARED_BULK(kind) PREPARED_NAME[RP_NKINDS + (kind)]
static const char SQL_PREPARED[] =
    "SELECT name FROM pg_prepared_statements"
    " WHERE name IN ('rp_user', 'rp_membership', 'rp_policy', 'rp_bulk_user',"
    "                'rp_bulk_membership', 'rp_bulk_policy')";

/* Prepares whichever of PREPARED_NAME this session lacks (a new or
 * reconnected session lacks them all). Outside a transaction: a prepared
 * statement outlives a rolled-back one. */
static int ensure_prepared(PGconn *c, azc_err *e)
{
    PGresult *r = NULL;
    int have[NPREPARED] = { 0 }, i, k, rc;

    if ((rc = azc_pg_query(c, SQL_PREPARED, 0, NULL, &r, e)) != AZC_OK)
        return rc;
    for (i = 0; i < PQntuples(r); i++) {
        for (k = 0; k < NPREPARED; k++)
            have[k] |= strcmp(PQgetvalue(r, i, 0), PREPARED_NAME[k]) == 0;
    }
    PQclear(r);
    for (k = 0; k < NPREPARED; k++) {
        if (have[k])
            continue;
        r = PQprepare(c, PREPARED_NAME[k],
                      k < RP_NKINDS ? SQL_KIND[k] : SQL_BULK_KIND[k - RP_NKINDS], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = azc_err_set(e, PQstatus(c) == CONNECTION_OK ? AZC_ERROR : AZC_EUNAVAIL,
                             "postgres: prepare %s: %s", PREPARED_NAME[k], PQerrorMessage(c));
            PQclear(r);
            return rc;
        }
        PQclear(r);
    }
    return AZC_OK;
}

/*
 * Runs one row statement. 1 applied, 0 older (skipped by the LWW guard),
 * AZC_ECONFLICT a row error (message in `why`), other codes: the database.
 */
static int row_apply(PGconn *c, const item *it, char *why, size_t whylen, azc_err *e)
{
    PGresult *r = PQexecParams(c, SQL_KIND[it->kind], it->nparams, NULL, it->params, NULL,
                               NULL, 0);
    ExecStatusType st = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int rc;

    if (st == PGRES_COMMAND_OK) {
        rc = strcmp(PQcmdTuples(r), "0") != 0;
        PQclear(r);
        return rc;
    }
    if (r != NULL && row_error(r)) {
        const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

        snprintf(why, whylen, "postgres %s: %s", azc_pg_sqlstate(r), m != NULL ? m : "");
        PQclear(r);
        return AZC_ECONFLICT;
    }
    PQclear(r);
    if (PQstatus(c) != CONNECTION_OK)
        return azc_err_set(e, AZC_EUNAVAIL, "postgres: connection lost: %s", PQerrorMessage(c));
    return azc_err_set(e, AZC_ERROR, "postgres: %s", PQerrorMessage(c));
}

static int adopt_watermarks(PGconn *c, const rp_apply_ctx *ctx, json_t *wm,
                            rp_apply_result *res, azc_err *e)
{
    const char *origin;
    json_t *v;
    int rc;

    json_object_foreach(wm, origin, v) {
        json_t *ja = json_object_get(v, "applied"), *jk = json_object_get(v, "known");
        char a[NUM_LEN], k[NUM_LEN];
        const char *p[4];
        PGresult *r = NULL;

        if (!json_is_integer(ja) || !json_is_integer(jk) || json_integer_value(ja) < 0 ||
            json_integer_value(jk) < 0 || origin[0] == '\0') {
            azc_logf(ctx->log, AZC_LOG_WARN, "peer %s: ignoring a malformed watermark for %s",
                     ctx->peer, origin);
            continue;
        }
        snprintf(a, sizeof a, "%lld", (long long)json_integer_value(ja));
        snprintf(k, sizeof k, "%lld", (long long)json_integer_value(jk));
        p[0] = ctx->peer;
        p[1] = origin;
        p[2] = a;
        p[3] = k;
        if ((rc = azc_pg_query(c, SQL_PEER_WATERMARK, 4, p, NULL, e)) != AZC_OK)
            return rc;
        if (strcmp(origin, ctx->region) == 0)
            continue;
        p[0] = origin;
        p[1] = a;
        p[2] = k;
        p[3] = ctx->peer;
        if ((rc = azc_pg_query(c, SQL_ADOPT_WATERMARK, 4, p, &r, e)) != AZC_OK)
            return rc;
        if (strcmp(PQcmdTuples(r), "0") != 0)
            res->watermarks_raised = 1;
        PQclear(r);
    }
    return AZC_OK;
}

/* Statements in flight before their results are read: keeps the results
 * the server writes well inside the socket buffers, so neither side ever
 * blocks on a full buffer while the other waits. */
#define PIPELINE_CHUNK 256

/* Most rows in one run statement: bounds its array parameters (a policy
 * row is about 300 bytes of them, 1.5 MB for a full run) and its sort,
 * for a snapshot of any size. A feed answer (replication.limit, at most
 * 10,000 rows) takes one or two per run. */
#define BULK_CHUNK 5000

/* A statement in the pipeline: `n` rows of `kind`. */
typedef struct sent_stmt {
    int kind;
    long long n;
} sent_stmt;

/*
 * Column `col` of rows[0..n) as one PostgreSQL array literal, newly
 * allocated (the caller frees it), NULL when out of memory. Every element
 * is double-quoted with a backslash before '"' and '\', the array input
 * syntax, so any text (commas, braces, quotes, the word NULL) comes back
 * as it was sent.
 */
static char *array_literal(const item *const *rows, size_t n, int col)
{
    size_t i, size = 3, len;
    const char *p;
    char *buf, *o;

    for (i = 0; i < n; i++) {
        len = strlen(rows[i]->params[col]);
        if (len > (SIZE_MAX - size - 3) / 2)
            return NULL;
        size += 2 * len + 3;        /* every byte escaped, two quotes, a comma */
    }
    if ((buf = malloc(size)) == NULL)
        return NULL;
    o = buf;
    *o++ = '{';
    for (i = 0; i < n; i++) {
        if (i > 0)
            *o++ = ',';
        *o++ = '"';
        for (p = rows[i]->params[col]; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                *o++ = '\\';
            *o++ = *p;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return buf;
}

/* Sends the statement for run[0..n) (all of one kind): the one-row
 * statement for one row, else the run statement with one array per
 * column. libpq copies the parameters into its output buffer at once. */
static int run_send(PGconn *c, const item *const *run, size_t n, azc_err *e)
{
    char *arrays[MAX_PARAMS] = { NULL };
    const char *params[MAX_PARAMS];
    int ncols = run[0]->nparams, col, rc = AZC_OK;

    if (n == 1) {
        if (PQsendQueryPrepared(c, PREPARED_ROW(run[0]->kind), ncols, run[0]->params, NULL,
                                NULL, 0) != 1)
            return azc_err_set(e, AZC_EUNAVAIL, "postgres: %s", PQerrorMessage(c));
        return AZC_OK;
    }
    for (col = 0; col < ncols; col++) {
        if ((arrays[col] = array_literal(run, n, col)) == NULL) {
            rc = azc_err_set(e, AZC_ENOMEM, "out of memory for a run of %zu rows", n);
            goto done;
        }
        params[col] = arrays[col];
    }
    if (PQsendQueryPrepared(c, PREPARED_BULK(run[0]->kind), ncols, params, NULL, NULL, 0) != 1)
        rc = azc_err_set(e, AZC_EUNAVAIL, "postgres: %s", PQerrorMessage(c));
done:
    for (col = 0; col < ncols; col++)
        free(arrays[col]);
    return rc;
}

/* Ends the statements sent (a sync) and reads their results in order.
 * Sets *row_failed when one failed for a row's own data. */
static int pipeline_flush(PGconn *c, const sent_stmt *sent, size_t nsent, rp_apply_result *res,
                          int *row_failed, azc_err *e)
{
    PGresult *r;
    size_t k;
    int rc = AZC_OK;

    if (PQpipelineSync(c) != 1)
        return azc_err_set(e, AZC_EUNAVAIL, "postgres: %s", PQerrorMessage(c));
    for (k = 0; k < nsent; k++) {
        ExecStatusType st;

        if ((r = PQgetResult(c)) == NULL)
            return azc_err_set(e, AZC_EUNAVAIL, "postgres: %s", PQerrorMessage(c));
        st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK) {
            /* Rows inserted or replaced; the others were not newer than
             * the local row or than another version of their key. */
            long long applied = strtoll(PQcmdTuples(r), NULL, 10);

            res->applied[sent[k].kind] += applied;
            res->older += sent[k].n - applied;
        } else if (st != PGRES_PIPELINE_ABORTED) {
            if (row_error(r))
                *row_failed = 1;
            else if (rc == AZC_OK)
                rc = azc_err_set(e, AZC_ERROR, "postgres: %s", PQresultErrorMessage(r));
        }
        PQclear(r);
        while ((r = PQgetResult(c)) != NULL)   /* the end of this statement */
            PQclear(r);
    }
    /* The sync's own result. */
    if ((r = PQgetResult(c)) == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        return rc != AZC_OK ? rc
                            : azc_err_set(e, AZC_EUNAVAIL, "postgres: pipeline out of step: %s",
                                          PQerrorMessage(c));
    }
    PQclear(r);
    return rc;
}

/*
 * The good rows of items[0..n) without savepoints, one statement per run
 * (consecutive rows of one kind, bad and own-origin rows in between not
 * counting: they write nothing here), in libpq's pipeline mode: the
 * statements go out back to back and their results come back together,
 * so a batch costs a few round trips. AZC_OK, AZC_ECONFLICT (a row's own
 * error: the caller rolls back and runs the batch again with a savepoint
 * per row), or a database failure.
 */
static int rows_pipelined(PGconn *c, item *items, size_t n, rp_apply_result *res, azc_err *e)
{
    sent_stmt sent[PIPELINE_CHUNK];
    const item **run;
    size_t i, m, nsent = 0;
    int rc = AZC_OK, row_failed = 0;

    if (n == 0)
        return AZC_OK;
    if ((run = malloc((n < BULK_CHUNK ? n : BULK_CHUNK) * sizeof *run)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory for a batch of %zu rows", n);
    if (PQenterPipelineMode(c) != 1) {
        free(run);
        return azc_err_set(e, AZC_ERROR, "postgres: cannot enter pipeline mode: %s",
                           PQerrorMessage(c));
    }
    i = 0;
    while (rc == AZC_OK && !row_failed) {
        m = 0;
        for (; i < n && m < BULK_CHUNK; i++) {
            item *it = &items[i];

            if (it->bad != NULL || it->own)
                continue;
            if (m > 0 && it->kind != run[0]->kind)
                break;
            run[m++] = it;
        }
        if (m == 0)
            break;
        if ((rc = run_send(c, run, m, e)) != AZC_OK)
            break;
        sent[nsent].kind = run[0]->kind;
        sent[nsent].n = (long long)m;
        if (++nsent == PIPELINE_CHUNK) {
            rc = pipeline_flush(c, sent, nsent, res, &row_failed, e);
            nsent = 0;
        }
    }
    if (rc == AZC_OK && !row_failed && nsent > 0)
        rc = pipeline_flush(c, sent, nsent, res, &row_failed, e);
    free(run);
    if (PQexitPipelineMode(c) != 1) {
        /* Results still owed (a send failed half way): the connection
         * cannot run a plain statement again; close its socket so the
         * follower sees it down and reconnects. */
        if (rc == AZC_OK)
            rc = azc_err_set(e, AZC_EUNAVAIL, "postgres: cannot leave pipeline mode: %s",
                             PQerrorMessage(c));
        shutdown(PQsocket(c), SHUT_RDWR);
        (void)PQconsumeInput(c);
    }
    if (rc == AZC_OK && row_failed)
        rc = AZC_ECONFLICT;
    return rc;
}

/*
 * One attempt at the transaction. With savepoints == 0 a row error rolls
 * everything back and sets *retry. Rolls back on any failure.
 */
static int run_tx(PGconn *c, const rp_apply_ctx *ctx, item *items, size_t n, long long cursor,
                  int snapshot, json_t *wm, int savepoints, int *retry, rp_apply_result *res,
                  azc_err *e)
{
    char cur[NUM_LEN], why[RP_WHY_LEN];
    const char *p[2];
    size_t i;
    int rc;

    memset(res, 0, sizeof *res);
    *retry = 0;
    if (!savepoints && (rc = ensure_prepared(c, e)) != AZC_OK)
        return rc;
    if ((rc = azc_pg_begin(c, e)) != AZC_OK)
        return rc;
    if (!savepoints) {
        /* The common case: every row good, sent as one pipeline. */
        rc = rows_pipelined(c, items, n, res, e);
        if (rc == AZC_ECONFLICT) {
            azc_pg_rollback(c);
            *retry = 1;
            return rc;
        }
        if (rc != AZC_OK)
            goto fail;
    }
    for (i = 0; i < n; i++) {
        item *it = &items[i];

        if (it->bad != NULL) {
            if ((rc = dead_letter(c, ctx, it, it->bad, e)) != AZC_OK)
                goto fail;
            res->dead++;
            continue;
        }
        if (it->own) {
            res->own_origin++;
            continue;
        }
        if (!savepoints)
            continue;           /* applied by the pipeline above */
        if ((rc = azc_pg_query(c, SQL_SAVEPOINT, 0, NULL, NULL, e)) != AZC_OK)
            goto fail;
        rc = row_apply(c, it, why, sizeof why, e);
        if (rc == AZC_ECONFLICT) {
            if ((rc = azc_pg_query(c, SQL_ROLLBACK_TO, 0, NULL, NULL, e)) != AZC_OK ||
                (rc = dead_letter(c, ctx, it, why, e)) != AZC_OK)
                goto fail;
            res->dead++;
            continue;
        }
        if (rc < 0)
            goto fail;
        if (rc == 1)
            res->applied[it->kind]++;
        else
            res->older++;
        if ((rc = azc_pg_query(c, SQL_RELEASE, 0, NULL, NULL, e)) != AZC_OK)
            goto fail;
    }
    snprintf(cur, sizeof cur, "%lld", cursor);
    p[0] = ctx->peer;
    p[1] = cur;
    if ((rc = azc_pg_query(c, snapshot ? SQL_CURSOR_SNAPSHOT : SQL_CURSOR_FEED, 2, p, NULL,
                           e)) != AZC_OK)
        goto fail;
    if (json_is_object(wm) && (rc = adopt_watermarks(c, ctx, wm, res, e)) != AZC_OK)
        goto fail;
    if ((rc = azc_pg_commit(c, e)) != AZC_OK)
        goto fail;
    res->cursor = cursor;
    return AZC_OK;
fail:
    azc_pg_rollback(c);
    return rc;
}

static int apply_items(PGconn *c, const rp_apply_ctx *ctx, item *items, size_t n,
                       long long cursor, int snapshot, json_t *wm, rp_apply_result *res,
                       azc_err *e)
{
    int retry, rc;
    size_t i;

    for (i = 0; i < n; i++)
        item_check(&items[i], ctx);
    rc = run_tx(c, ctx, items, n, cursor, snapshot, wm, 0, &retry, res, e);
    if (rc != AZC_OK && retry)
        rc = run_tx(c, ctx, items, n, cursor, snapshot, wm, 1, &retry, res, e);
    for (i = 0; i < n; i++)
        free(items[i].perms);
    return rc;
}

int rp_apply_feed(PGconn *c, const rp_apply_ctx *ctx, json_t *body, long long after,
                  rp_apply_result *res, azc_err *e)
{
    json_t *changes = json_object_get(body, "changes"), *more = json_object_get(body, "more");
    json_t *wm = json_object_get(body, "watermarks"), *ch;
    long long cursor;
    item *items;
    size_t i, n;
    int rc;

    if (!json_is_object(body) || !json_is_array(changes))
        return azc_err_set(e, AZC_EINVAL, "feed answer has no changes array");
    if (cursor_parse(json_object_get(body, "cursor"), &cursor) != 0)
        return azc_err_set(e, AZC_EINVAL, "feed answer has no valid cursor");
    if (!json_is_boolean(more))
        return azc_err_set(e, AZC_EINVAL, "feed answer has no boolean more");
    if (cursor < after)
        return azc_err_set(e, AZC_EINVAL, "feed answer moves the cursor back from %lld to %lld",
                           after, cursor);
    if (wm != NULL && !json_is_object(wm))
        return azc_err_set(e, AZC_EINVAL, "feed answer watermarks is not an object");
    n = json_array_size(changes);
    if ((items = calloc(n ? n : 1, sizeof *items)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    json_array_foreach(changes, i, ch) {
        item *it = &items[i];
        json_t *seq = json_object_get(ch, "seq");

        it->raw = ch;
        it->seq = json_is_integer(seq) ? json_integer_value(seq) : -1;
        it->kind = -1;
        if (!json_is_object(ch)) {
            it->bad = "change is not an object";
            continue;
        }
        if (!json_is_integer(seq)) {
            it->bad = "seq is not an integer";
            continue;
        }
        if (!json_is_string(json_object_get(ch, "kind"))) {
            it->bad = "kind is not a string";
            continue;
        }
        if ((it->kind = kind_parse(json_string_value(json_object_get(ch, "kind")))) < 0) {
            it->bad = "unknown kind";
            continue;
        }
        it->row = json_object_get(ch, "row");
        if (it->row == NULL)
            it->bad = "change has no row";
    }
    rc = apply_items(c, ctx, items, n, cursor, 0, json_is_false(more) ? wm : NULL, res, e);
    free(items);
    return rc;
}

int rp_apply_snapshot(PGconn *c, const rp_apply_ctx *ctx, json_t *body, rp_apply_result *res,
                      azc_err *e)
{
    json_t *wm = json_object_get(body, "watermarks");
    json_t *arrays[RP_NKINDS];
    static const char *const keys[RP_NKINDS] = { "users", "memberships", "policies" };
    long long cursor;
    item *items;
    size_t i, n = 0, k;
    int rc;

    if (!json_is_object(body))
        return azc_err_set(e, AZC_EINVAL, "snapshot is not a JSON object");
    if (cursor_parse(json_object_get(body, "cursor"), &cursor) != 0)
        return azc_err_set(e, AZC_EINVAL, "snapshot has no valid cursor");
    if (wm != NULL && !json_is_object(wm))
        return azc_err_set(e, AZC_EINVAL, "snapshot watermarks is not an object");
    for (k = 0; k < RP_NKINDS; k++) {
        arrays[k] = json_object_get(body, keys[k]);
        if (!json_is_array(arrays[k]))
            return azc_err_set(e, AZC_EINVAL, "snapshot has no %s array", keys[k]);
        n += json_array_size(arrays[k]);
    }
    if ((items = calloc(n ? n : 1, sizeof *items)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    n = 0;
    for (k = 0; k < RP_NKINDS; k++) {
        json_t *row;

        json_array_foreach(arrays[k], i, row) {
            items[n].kind = (int)k;
            items[n].row = row;
            items[n].raw = row;
            items[n].seq = -1;
            n++;
        }
    }
    rc = apply_items(c, ctx, items, n, cursor, 1, wm, res, e);
    free(items);
    return rc;
}

int rp_cursor_load(PGconn *c, const char *peer, long long *cursor, azc_err *e)
{
    PGresult *r = NULL;
    int rc;

    if ((rc = azc_pg_query(c, SQL_CURSOR_LOAD, 1, &peer, &r, e)) != AZC_OK)
        return rc;
    *cursor = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return AZC_OK;
}
