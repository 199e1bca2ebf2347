/*
 * Outbox writer; see outbox.h for the ordering argument.
 *
 * HLCs come from the database clock, floored by the last HLC issued: every
 * identity process of the region shares one sequence and one clock that
 * survives restarts and clock steps backwards. Event i of a batch gets
 * base + i, base = max(last_hlc + 1, now_ms << 16).
 */
#include "identity/outbox.h"

#include <inttypes.h>
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
    " RETURNING last_seq - $1::bigint + 1, last_hlc - $1::bigint + 1";
static const char SQL_INSERT[] =
    "INSERT INTO identity.outbox (seq, hlc, event_id, type, payload)"
    " VALUES ($1::bigint, $2::bigint, $3::uuid, $4, $5)";
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

int id_outbox_append(PGconn *c, const char *origin, const id_events *l, azc_revision *rev,
                     azc_err *e)
{
    char key[24], count[24], seq_s[24], hlc_s[24];
    const char *p_lock[1], *p_assign[1], *p_ins[5];
    PGresult *r = NULL;
    uint64_t seq, hlc;
    size_t i;
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
    PQclear(r);
    for (i = 0; i < l->n; i++) {
        azc_event ev;
        char *text = NULL;
        size_t len;

        memset(&ev, 0, sizeof ev);
        ev.version = AZC_EVENT_VERSION;
    ev.epoch = 1;
        if (azc_uuid_new(ev.id) != AZC_OK)
            return azc_err_set(e, AZC_ERROR, "outbox: random generator failed");
        ev.type = l->items[i].type;
        snprintf(ev.origin, sizeof ev.origin, "%s", origin);
        ev.seq = seq + i;
        ev.hlc = hlc + i;
        ev.data = l->items[i].data;   /* borrowed: not cleared below */
        if ((rc = azc_event_encode(&ev, &text, &len, e)) != AZC_OK)
            return rc;
        snprintf(seq_s, sizeof seq_s, "%" PRIu64, ev.seq);
        snprintf(hlc_s, sizeof hlc_s, "%" PRIu64, ev.hlc);
        p_ins[0] = seq_s;
        p_ins[1] = hlc_s;
        p_ins[2] = ev.id;
        p_ins[3] = azc_event_type_name(ev.type);
        p_ins[4] = text;
        rc = azc_pg_query(c, SQL_INSERT, 5, p_ins, NULL, e);
        free(text);
        if (rc != AZC_OK)
            return rc;
    }
    if ((rc = azc_pg_query(c, SQL_NOTIFY, 0, NULL, NULL, e)) != AZC_OK)
        return rc;
    snprintf(rev->origin, sizeof rev->origin, "%s", origin);
    rev->hlc = hlc + l->n - 1;
    return AZC_OK;
}
