/*
 * Resync; see resync.h for what it is for.
 *
 * Why READ COMMITTED and the lock first: every writer takes the outbox lock
 * as the last statement before its commit. Once the resync holds it, no
 * change can commit, and each statement below (a fresh snapshot each at
 * READ COMMITTED) sees every change whose seq is below the new epoch and
 * none of the changes that will get seqs after it. A REPEATABLE READ
 * snapshot would be taken while waiting for the lock and miss commits
 * made meanwhile.
 *
 * The new epoch is one above both the outbox's and the topic's (they are
 * equal unless the database was restored to before an earlier resync), and
 * its seqs and HLCs start above both sides, so no consumer can take one of
 * its events for one it has already applied.
 */
#include "identity/resync.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "common/event.h"
#include "common/pg.h"
#include "identity/outbox.h"
#include "identity/tail.h"

/* Events per INSERT: bounded statements however large the state is. */
#define RESYNC_CHUNK 5000

static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock($1::bigint)";
static const char SQL_USERS[] = "SELECT id, subject FROM identity.users ORDER BY id";
static const char SQL_ROLES[] =
    "SELECT id, name, array_to_json(permissions)::text FROM identity.roles ORDER BY id";
static const char SQL_TEAMS[] = "SELECT id FROM identity.teams ORDER BY id";
static const char SQL_MEMBERS[] =
    "SELECT team_id, user_id FROM identity.team_members ORDER BY team_id, user_id";
static const char SQL_ASSIGNMENTS[] =
    "SELECT id, principal_type, principal_id, role_id, region, resource"
    "  FROM identity.role_assignments ORDER BY id";
/* $1 tail epoch, $2 tail seq, $3 tail hlc (0 for an empty topic), $4 events. */
static const char SQL_EPOCH[] =
    "UPDATE identity.outbox_state"
    "   SET epoch = greatest(epoch, $1::bigint) + 1,"
    "       epoch_start_seq = greatest(last_seq, $2::bigint) + 1,"
    "       last_seq = greatest(last_seq, $2::bigint) + $4::bigint,"
    "       last_hlc = greatest(last_hlc + 1, $3::bigint + 1,"
    "                           (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16))"
    "                  + $4::bigint - 1"
    " RETURNING epoch, epoch_start_seq, last_seq, last_hlc - $4::bigint + 1";
static const char SQL_SUPERSEDE[] =
    "UPDATE identity.outbox SET superseded = true"
    " WHERE published_at IS NULL AND NOT superseded AND seq < $1::bigint";

enum { ST_USERS, ST_ROLES, ST_TEAMS, ST_MEMBERS, ST_ASSIGNMENTS, ST__COUNT };

static const char *const STATE_SQL[ST__COUNT] = { SQL_USERS, SQL_ROLES, SQL_TEAMS, SQL_MEMBERS,
                                                  SQL_ASSIGNMENTS };
static const azc_event_type STATE_TYPE[ST__COUNT] = {
    AZC_EV_USER_CREATED, AZC_EV_ROLE_CREATED, AZC_EV_TEAM_CREATED, AZC_EV_TEAM_MEMBER_ADDED,
    AZC_EV_ASSIGNMENT_CREATED
};

typedef struct state {
    PGresult *res[ST__COUNT];
    size_t n[ST__COUNT];
    size_t total;              /* state events */
} state;

static void state_clear(state *st)
{
    int i;

    for (i = 0; i < ST__COUNT; i++)
        PQclear(st->res[i]);
    memset(st, 0, sizeof *st);
}

static int state_read(PGconn *c, state *st, azc_err *e)
{
    int i, rc;

    for (i = 0; i < ST__COUNT; i++) {
        if ((rc = azc_pg_query(c, STATE_SQL[i], 0, NULL, &st->res[i], e)) != AZC_OK)
            return rc;
        st->n[i] = (size_t)PQntuples(st->res[i]);
        st->total += st->n[i];
    }
    return AZC_OK;
}

/* The data of row `row` of kind `kind`, in the ordinary shapes of
 * docs/events.md. New reference; NULL when out of memory or bad. */
static json_t *state_data(const state *st, int kind, int row)
{
    PGresult *r = st->res[kind];
    json_t *perms;

    switch (kind) {
    case ST_USERS:
        return json_pack("{s:s, s:s}", "id", PQgetvalue(r, row, 0), "subject",
                         PQgetvalue(r, row, 1));
    case ST_ROLES:
        perms = json_loads(PQgetvalue(r, row, 2), 0, NULL);
        if (!json_is_array(perms)) {
            json_decref(perms);
            return NULL;
        }
        return json_pack("{s:s, s:s, s:o}", "id", PQgetvalue(r, row, 0), "name",
                         PQgetvalue(r, row, 1), "permissions", perms);
    case ST_TEAMS:
        return json_pack("{s:s}", "id", PQgetvalue(r, row, 0));
    case ST_MEMBERS:
        return json_pack("{s:s, s:s}", "team_id", PQgetvalue(r, row, 0), "user_id",
                         PQgetvalue(r, row, 1));
    default:
        return json_pack("{s:s, s:{s:s, s:s}, s:s, s:s, s:s}", "id", PQgetvalue(r, row, 0),
                         "principal", "type", PQgetvalue(r, row, 1), "id", PQgetvalue(r, row, 2),
                         "role_id", PQgetvalue(r, row, 3), "region", PQgetvalue(r, row, 4),
                         "resource", PQgetvalue(r, row, 5));
    }
}

/* Event k of the epoch's first 2 + total: begin, the state, end. */
static int add_event(id_events *l, const state *st, size_t k, azc_err *e)
{
    azc_event_type type;
    json_t *data;
    int kind, rc;

    if (k == 0) {
        type = AZC_EV_RESYNC_BEGIN;
        data = json_object();
    } else if (k == st->total + 1) {
        type = AZC_EV_RESYNC_END;
        data = json_pack("{s:I, s:I, s:I, s:I, s:I}", "users", (json_int_t)st->n[ST_USERS],
                         "roles", (json_int_t)st->n[ST_ROLES], "teams",
                         (json_int_t)st->n[ST_TEAMS], "memberships",
                         (json_int_t)st->n[ST_MEMBERS], "assignments",
                         (json_int_t)st->n[ST_ASSIGNMENTS]);
    } else {
        size_t i = k - 1;

        for (kind = 0; i >= st->n[kind]; kind++)
            i -= st->n[kind];
        type = STATE_TYPE[kind];
        data = state_data(st, kind, (int)i);
    }
    if (data == NULL)
        return azc_err_set(e, AZC_ENOMEM, "resync: cannot build the data of event %zu", k);
    if ((rc = id_events_add(l, type, data)) != AZC_OK)
        return azc_err_set(e, rc, "resync: cannot queue event %zu", k);
    return AZC_OK;
}

/* Inserts the epoch's events in chunks from seq0 and hlc0. */
static int insert_all(PGconn *c, const char *origin, uint64_t epoch, uint64_t seq0,
                      uint64_t hlc0, const state *st, azc_err *e)
{
    size_t n = st->total + 2, k = 0;
    int rc = AZC_OK;

    while (k < n && rc == AZC_OK) {
        size_t m = n - k < RESYNC_CHUNK ? n - k : RESYNC_CHUNK, j;
        id_events *l = id_events_new();

        if (l == NULL)
            return azc_err_set(e, AZC_ENOMEM, "out of memory");
        for (j = 0; j < m && rc == AZC_OK; j++)
            rc = add_event(l, st, k + j, e);
        if (rc == AZC_OK)
            rc = id_outbox_insert(c, origin, epoch, seq0 + k, hlc0 + k, l, 0, m, e);
        id_events_free(l);
        k += m;
    }
    return rc;
}

static int resync_tx(PGconn *c, const id_resync_config *cfg, const id_tail *t,
                     id_resync_result *out, azc_err *e)
{
    char key[24], p_epoch[24], p_seq[24], p_hlc[24], p_n[24], p_start[24];
    const char *lock_p[1] = { key };
    const char *epoch_p[4] = { p_epoch, p_seq, p_hlc, p_n };
    const char *sup_p[1] = { p_start };
    PGresult *r = NULL;
    state st;
    uint64_t hlc0;
    int rc;

    memset(&st, 0, sizeof st);
    snprintf(key, sizeof key, "%lld", (long long)ID_OUTBOX_LOCK_KEY);
    if ((rc = azc_pg_query(c, SQL_LOCK, 1, lock_p, NULL, e)) != AZC_OK ||
        (rc = state_read(c, &st, e)) != AZC_OK)
        goto out;
    snprintf(p_epoch, sizeof p_epoch, "%" PRIu64, t->empty ? 0 : t->epoch);
    snprintf(p_seq, sizeof p_seq, "%" PRIu64, t->empty ? 0 : t->seq);
    snprintf(p_hlc, sizeof p_hlc, "%" PRIu64, t->empty ? 0 : t->hlc);
    snprintf(p_n, sizeof p_n, "%zu", st.total + 2);
    if ((rc = azc_pg_query(c, SQL_EPOCH, 4, epoch_p, &r, e)) != AZC_OK)
        goto out;
    if (PQntuples(r) != 1) {
        rc = azc_err_set(e, AZC_ERROR, "resync: identity.outbox_state has no row");
        goto out;
    }
    out->epoch = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    out->first_seq = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    out->last_seq = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
    hlc0 = strtoull(PQgetvalue(r, 0, 3), NULL, 10);
    PQclear(r);
    r = NULL;
    snprintf(p_start, sizeof p_start, "%" PRIu64, out->first_seq);
    if ((rc = azc_pg_query(c, SQL_SUPERSEDE, 1, sup_p, &r, e)) != AZC_OK)
        goto out;
    out->superseded = strtoull(PQcmdTuples(r), NULL, 10);
    if ((rc = insert_all(c, cfg->origin, out->epoch, out->first_seq, hlc0, &st, e)) != AZC_OK ||
        (rc = id_outbox_notify(c, e)) != AZC_OK)
        goto out;
    out->users = st.n[ST_USERS];
    out->roles = st.n[ST_ROLES];
    out->teams = st.n[ST_TEAMS];
    out->memberships = st.n[ST_MEMBERS];
    out->assignments = st.n[ST_ASSIGNMENTS];
out:
    PQclear(r);
    state_clear(&st);
    return rc;
}

int id_resync_run(const id_resync_config *cfg, id_resync_result *out, azc_err *e)
{
    int timeout = cfg->kafka_timeout_ms > 0 ? cfg->kafka_timeout_ms : 10000;
    PGconn *c = NULL;
    id_tail t;
    int rc;

    memset(out, 0, sizeof *out);
    /* Kafka first: if its tail cannot be read, nothing is written. */
    if ((rc = id_tail_read(cfg->kafka, cfg->topic, timeout, cfg->log, &t, e)) != AZC_OK)
        return rc;
    if (t.undecodable)
        return azc_err_set(e, AZC_ECONFLICT, "the last message of topic %s (offset %" PRId64
                           ") is not an identity event, so its seq is unknown: %s", cfg->topic,
                           t.offset, t.error);
    if (t.empty)
        azc_logf(cfg->log, AZC_LOG_INFO, "resync: topic %s is empty", cfg->topic);
    else
        azc_logf(cfg->log, AZC_LOG_INFO, "resync: topic %s ends at epoch %" PRIu64 " seq %" PRIu64
                 " hlc %" PRIu64, cfg->topic, t.epoch, t.seq, t.hlc);
    if ((rc = azc_pg_connect(cfg->pg_url, "authz-identity-resync", 10000, cfg->log, &c, e)) !=
        AZC_OK)
        return rc;
    if ((rc = azc_pg_begin(c, e)) == AZC_OK) {
        rc = resync_tx(c, cfg, &t, out, e);
        if (rc == AZC_OK)
            rc = azc_pg_commit(c, e);
        else
            azc_pg_rollback(c);
    }
    PQfinish(c);
    return rc;
}
