/*
 * Outbox writer; see outbox.h for the ordering argument.
 *
 * HLCs come from the database clock, floored by the last HLC issued: every
 * identity process of the region shares one sequence and one clock that
 * survives restarts and clock steps backwards. Event i of a batch gets
 * base + i, base = max(last_hlc + 1, now_ms << 16). Events carry the
 * origin's current epoch (outbox_state.epoch, raised by a resync).
 */
#include "identity/outbox.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pg.h"
#include "common/uuid.h"

static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock($1::bigint)";
static const char SQL_ASSIGN[] =
    "UPDATE identity.outbox_state"
    "   SET last_seq = last_seq + $1::bigint,"
    "       last_hlc = greatest(last_hlc + 1,"
    "                           (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16))"
    "                  + $1::bigint - 1"
    " RETURNING last_seq - $1::bigint + 1, last_hlc - $1::bigint + 1, epoch";
/* One statement for the whole batch: the rows travel as one JSON array
 * (built with jansson, so no hand quoting), and the lock is held for one
 * round trip however many events a request causes. */
static const char SQL_INSERT[] =
    "INSERT INTO identity.outbox (seq, hlc, event_id, type, payload)"
    " SELECT r.seq, r.hlc, r.id, r.type, r.payload"
    "   FROM json_to_recordset($1::json)"
    "        AS r(seq bigint, hlc bigint, id uuid, type text, payload text)";
static const char SQL_NOTIFY[] = "SELECT pg_notify('" ID_OUTBOX_CHANNEL "', '')";

struct pending {
    azc_event_type type;
    json_t *data;
};

struct id_events {
    struct pending *items;
    size_t n, cap;
};

id_events *id_events_new(void)
{
    return calloc(1, sizeof(id_events));
}

void id_events_free(id_events *l)
{
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < l->n; i++)
        json_decref(l->items[i].data);
    free(l->items);
    free(l);
}

size_t id_events_count(const id_events *l)
{
    return l != NULL ? l->n : 0;
}

int id_events_add(id_events *l, azc_event_type type, json_t *data)
{
    if (!json_is_object(data)) {
        json_decref(data);
        return AZC_EINVAL;
    }
    if (l->n == ID_OUTBOX_MAX_EVENTS) {
        json_decref(data);
        return AZC_ETOOBIG;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct pending *p = realloc(l->items, cap * sizeof *p);
        if (p == NULL) {
            json_decref(data);
            return AZC_ENOMEM;
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n].type = type;
    l->items[l->n].data = data;
    l->n++;
    return AZC_OK;
}

/* One row of the INSERT's array; steals nothing. */
static int add_row(json_t *rows, const azc_event *ev, const char *text, azc_err *e)
{
    json_t *row = json_pack("{s:I, s:I, s:s, s:s, s:s}", "seq", (json_int_t)ev->seq, "hlc",
                            (json_int_t)ev->hlc, "id", ev->id, "type",
                            azc_event_type_name(ev->type), "payload", text);

    if (row == NULL || json_array_append_new(rows, row) != 0)
        return azc_err_set(e, AZC_ENOMEM, "outbox: out of memory");
    return AZC_OK;
}

int id_outbox_insert(PGconn *c, const char *origin, uint64_t epoch, uint64_t seq0, uint64_t hlc0,
                     const id_events *l, size_t from, size_t n, azc_err *e)
{
    json_t *rows;
    char *param = NULL;
    const char *p[1];
    size_t i;
    int rc = AZC_OK;

    if (l == NULL || n == 0 || from > l->n || n > l->n - from || epoch < 1)
        return azc_err_set(e, AZC_EINVAL, "outbox: bad batch");
    if ((rows = json_array()) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "outbox: out of memory");
    for (i = 0; i < n && rc == AZC_OK; i++) {
        azc_event ev;
        char *text = NULL;
        size_t len;

        memset(&ev, 0, sizeof ev);
        ev.version = AZC_EVENT_VERSION;
        ev.epoch = epoch;
        if (azc_uuid_new(ev.id) != AZC_OK) {
            rc = azc_err_set(e, AZC_ERROR, "outbox: random generator failed");
            break;
        }
        ev.type = l->items[from + i].type;
        snprintf(ev.origin, sizeof ev.origin, "%s", origin);
        ev.seq = seq0 + i;
        ev.hlc = hlc0 + i;
        ev.data = l->items[from + i].data;   /* borrowed: not cleared below */
        if ((rc = azc_event_encode(&ev, &text, &len, e)) != AZC_OK)
            break;
        rc = add_row(rows, &ev, text, e);
        free(text);
    }
    if (rc == AZC_OK && (param = json_dumps(rows, JSON_COMPACT)) == NULL)
        rc = azc_err_set(e, AZC_ENOMEM, "outbox: out of memory");
    json_decref(rows);
    if (rc != AZC_OK)
        return rc;
    p[0] = param;
    rc = azc_pg_query(c, SQL_INSERT, 1, p, NULL, e);
    free(param);
    return rc;
}

int id_outbox_append(PGconn *c, const char *origin, const id_events *l, azc_revision *rev,
                     azc_err *e)
{
    char key[24], count[24];
    const char *p_lock[1], *p_assign[1];
    PGresult *r = NULL;
    uint64_t seq, hlc, epoch;
    int rc;

    if (l == NULL || l->n == 0)
        return azc_err_set(e, AZC_EINVAL, "outbox: nothing to append");
    snprintf(key, sizeof key, "%lld", (long long)ID_OUTBOX_LOCK_KEY);
    snprintf(count, sizeof count, "%zu", l->n);
    p_lock[0] = key;
    if ((rc = azc_pg_query(c, SQL_LOCK, 1, p_lock, NULL, e)) != AZC_OK)
        return rc;
    p_assign[0] = count;
    if ((rc = azc_pg_query(c, SQL_ASSIGN, 1, p_assign, &r, e)) != AZC_OK)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return azc_err_set(e, AZC_ERROR, "outbox: identity.outbox_state has no row");
    }
    seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    hlc = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    epoch = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
    PQclear(r);
    if ((rc = id_outbox_insert(c, origin, epoch, seq, hlc, l, 0, l->n, e)) != AZC_OK ||
        (rc = id_outbox_notify(c, e)) != AZC_OK)
        return rc;
    snprintf(rev->origin, sizeof rev->origin, "%s", origin);
    rev->hlc = hlc + l->n - 1;
    return AZC_OK;
}

int id_outbox_notify(PGconn *c, azc_err *e)
{
    return azc_pg_query(c, SQL_NOTIFY, 0, NULL, NULL, e);
}
