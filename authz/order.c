/*
 * The rules for one message of the origin's history, applied inside the
 * consumer's batch transaction (docs/authz.md, "Consumer"): in-order
 * events are applied and their ids kept; a resend of the same event is a
 * duplicate; a different event at an applied seq, a heartbeat below it or
 * naming another event there, is a divergence; a gap stops; a newer epoch
 * must start with resync.begin and is staged until its resync.end, which
 * replaces the origin's rows at once.
 *
 * Why a savepoint per event: an event that cannot be applied to the
 * current state is dead-lettered without undoing the rest of its batch.
 */
#include "authz/consumer_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/apply.h"
#include "common/hlc.h"
#include "common/pg.h"
#include "common/text.h"

static const char SQL_DEAD_LETTER[] =
    "INSERT INTO authz.dead_letters (topic, partition, kafka_offset, raw, reason)"
    " VALUES ($1, $2, $3, $4, $5)";
static const char SQL_APPLIED_ID[] =
    "INSERT INTO authz.applied_events (origin, seq, event_id) VALUES ($1, $2, $3)"
    " ON CONFLICT (origin, seq) DO UPDATE SET event_id = EXCLUDED.event_id";
static const char SQL_APPLIED_ID_GET[] =
    "SELECT event_id FROM authz.applied_events WHERE origin = $1 AND seq = $2";
static const char SQL_SAVEPOINT[] = "SAVEPOINT ev";
static const char SQL_ROLLBACK_SAVEPOINT[] = "ROLLBACK TO SAVEPOINT ev";
static const char SQL_RELEASE_SAVEPOINT[] = "RELEASE SAVEPOINT ev";

static int dead_letter(az_consumer *c, const rd_kafka_message_t *m, const char *reason, azc_err *e)
{
    char part[16], off[24];
    const char *p[5];
    int lens[5] = { 0, 0, 0, (int)m->len, 0 };
    int fmts[5] = { 0, 0, 0, 1, 0 };
    PGresult *res;
    int rc = AZC_OK;

    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    p[0] = c->sh->set.topic;
    p[1] = part;
    p[2] = off;
    p[3] = m->payload != NULL ? (const char *)m->payload : "";
    p[4] = reason;
    /* The raw bytes go in binary format: they may hold anything. */
    res = PQexecParams(c->pg, SQL_DEAD_LETTER, 5, NULL, p, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        /* A lost connection is retried like any batch; a refused INSERT
         * would be refused again forever: that stops the consumer. */
        if (PQstatus(c->pg) == CONNECTION_OK)
            c->dead_letter_failed = 1;
        rc = azc_err_set(e, PQstatus(c->pg) == CONNECTION_OK ? AZC_ERROR : AZC_EUNAVAIL,
                         "cannot store the dead letter of offset %" PRId64 " (%s): %s",
                         m->offset, reason, PQerrorMessage(c->pg));
    }
    PQclear(res);
    if (rc == AZC_OK) {
        json_t *f = json_pack("{s:I, s:s}", "offset", (json_int_t)m->offset, "reason", reason);
        azc_log_write(c->sh->log, AZC_LOG_WARN, NULL, f, "consumer: message dead-lettered");
        json_decref(f);
        if (azc_metric_inc(c->sh->m_dead, NULL, 1) != AZC_OK)
            azc_logf(c->sh->log, AZC_LOG_WARN, "cannot count a dead letter");
    }
    return rc;
}

static int exec0(az_consumer *c, const char *sql, azc_err *e)
{
    return azc_pg_query(c->pg, sql, 0, NULL, NULL, e);
}

/* Stops applying: see cstate.halted. */
static void halt(az_consumer *c, const azc_event *ev, const char *fmt, ...) AZC_PRINTF(3, 4);
static void halt(az_consumer *c, const azc_event *ev, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    azc_text_vfmt(c->st.stop_error, sizeof c->st.stop_error, fmt, ap);
    va_end(ap);
    c->st.halted = 1;
    c->st.halt_epoch = az__max_u64(az__max_u64(c->st.epoch, c->st.rs.epoch), ev != NULL ? ev->epoch : 0);
}

static void diverge(az_consumer *c, const rd_kafka_message_t *m, const azc_event *ev, uint64_t seq,
                    const char *applied_id, const char *received_id, const char *why)
{
    halt(c, ev, "diverged at seq %" PRIu64 " of %s (offset %" PRId64 "): %s", seq, ev->origin,
         m->offset, why);
    c->st.diverged = 1;
    c->st.div_seq = seq;
    snprintf(c->st.div_applied, sizeof c->st.div_applied, "%s", applied_id);
    snprintf(c->st.div_received, sizeof c->st.div_received, "%s", received_id);
    c->st.div_offset = m->offset;
}

/* The id of the applied event at seq ("" when not retained). */
static int applied_id_get(az_consumer *c, uint64_t seq, char *id, azc_err *e)
{
    char s[24];
    const char *p[2] = { c->sh->set.region, s };
    PGresult *res = NULL;
    int rc;

    id[0] = '\0';
    if (seq == c->st.applied_seq && c->st.applied_id[0] != '\0') {
        snprintf(id, AZC_UUID_LEN, "%s", c->st.applied_id);
        return AZC_OK;
    }
    snprintf(s, sizeof s, "%" PRIu64, seq);
    if ((rc = azc_pg_query(c->pg, SQL_APPLIED_ID_GET, 2, p, &res, e)) != AZC_OK)
        return rc;
    if (PQntuples(res) == 1)
        snprintf(id, AZC_UUID_LEN, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return AZC_OK;
}

/* Applies one decoded, in-order event under a savepoint. *dead is set when
 * it could not be applied and was dead-lettered instead. */
static int apply_one(az_consumer *c, const rd_kafka_message_t *m, const azc_event *ev, int *dead,
                     azc_err *e)
{
    char seq[24];
    const char *p[3] = { ev->origin, seq, ev->id };
    azc_err ae;
    int rc;

    *dead = 0;
    if ((rc = exec0(c, SQL_SAVEPOINT, e)) != AZC_OK)
        return rc;
    rc = az_event_apply(c->pg, ev, &ae);
    if (rc == AZC_OK) {
        snprintf(seq, sizeof seq, "%" PRIu64, ev->seq);
        if ((rc = azc_pg_query(c->pg, SQL_APPLIED_ID, 3, p, NULL, e)) != AZC_OK)
            return rc;
        return exec0(c, SQL_RELEASE_SAVEPOINT, e);
    }
    if (rc != AZC_EINVAL && rc != AZC_ECONFLICT) {
        *e = ae;
        return rc;
    }
    if ((rc = exec0(c, SQL_ROLLBACK_SAVEPOINT, e)) != AZC_OK)
        return rc;
    *dead = 1;
    return dead_letter(c, m, ae.msg, e);
}

/* A seq at or below the applied one: a resend of the same event, or a
 * divergence. Heartbeats are not handled here. */
static int check_duplicate(az_consumer *c, const rd_kafka_message_t *m, const azc_event *ev,
                           batch_stats *bs, azc_err *e)
{
    char id[AZC_UUID_LEN];
    int rc;

    if ((rc = applied_id_get(c, ev->seq, id, e)) != AZC_OK)
        return rc;
    if (strcmp(id, ev->id) == 0)
        bs->duplicates++;
    else if (id[0] == '\0')
        diverge(c, m, ev, ev->seq, "", ev->id,
                "an event at an applied seq whose applied id is not retained: cannot verify");
    else
        diverge(c, m, ev, ev->seq, id, ev->id, "a different event at an applied seq");
    return AZC_OK;
}

static int heartbeat(az_consumer *c, const rd_kafka_message_t *m, const azc_event *ev,
                     char *why, size_t why_len, azc_err *e)
{
    const char *last = json_string_value(json_object_get(ev->data, "last_id"));
    char id[AZC_UUID_LEN];
    int rc;

    if (ev->seq > c->st.applied_seq) {
        halt(c, ev, "gap in the events of %s at offset %" PRId64 ": heartbeat seq %" PRIu64
             " after %" PRIu64, ev->origin, m->offset, ev->seq, c->st.applied_seq);
        return AZC_OK;
    }
    if (ev->seq < c->st.applied_seq) {
        if ((rc = applied_id_get(c, ev->seq, id, e)) != AZC_OK)
            return rc;
        snprintf(why, why_len, "a heartbeat at seq %" PRIu64 " below the applied seq %" PRIu64
                 ": the origin forgot events", ev->seq, c->st.applied_seq);
        diverge(c, m, ev, ev->seq, id, last != NULL ? last : "", why);
        return AZC_OK;
    }
    /* Unverifiable (id not retained) is accepted: a heartbeat repeats the
     * watermark of an event that was itself checked when applied. */
    if (last != NULL && c->st.applied_id[0] != '\0' && strcmp(last, c->st.applied_id) != 0) {
        diverge(c, m, ev, ev->seq, c->st.applied_id, last,
                "a heartbeat names another event at the applied seq");
        return AZC_OK;
    }
    c->st.applied_hlc = az__max_u64(c->st.applied_hlc, ev->hlc);
    c->st.known_hlc = az__max_u64(c->st.known_hlc, ev->hlc);
    return AZC_OK;
}

/* An event of the epoch being staged (c->st.rs.epoch == ev->epoch). */
static int resync_event(az_consumer *c, const rd_kafka_message_t *m, const azc_event *ev,
                        batch_stats *bs, azc_err *e)
{
    az_resync *rs = &c->st.rs;
    char id[AZC_UUID_LEN];
    azc_err de;
    int rc;

    if (ev->type == AZC_EV_HEARTBEAT)
        return AZC_OK;      /* the origin's state is not applied yet */
    if (ev->seq <= rs->last_seq) {
        if ((rc = az_resync_staged_id(c->pg, ev->origin, ev->seq, id, e)) != AZC_OK)
            return rc;
        if (strcmp(id, ev->id) == 0)
            bs->duplicates++;
        else
            diverge(c, m, ev, ev->seq, id, ev->id, "a different event at a staged seq of a resync");
        return AZC_OK;
    }
    if (ev->seq != rs->last_seq + 1) {
        halt(c, ev, "gap in the resync of epoch %" PRIu64 " of %s at offset %" PRId64 ": seq %"
             PRIu64 " after %" PRIu64, ev->epoch, ev->origin, m->offset, ev->seq, rs->last_seq);
        return AZC_OK;
    }
    if (ev->type != AZC_EV_RESYNC_END && az_resync_kind(ev->type) < 0) {
        halt(c, ev, "a %s event inside the resync of epoch %" PRIu64 " (seq %" PRIu64
             ", offset %" PRId64 ")", azc_event_type_name(ev->type), ev->epoch, ev->seq,
             m->offset);
        return AZC_OK;
    }
    if (az_event_data_check(ev, &de) != AZC_OK) {
        halt(c, ev, "resync of epoch %" PRIu64 ": %s at seq %" PRIu64 ": %s", ev->epoch,
             azc_event_type_name(ev->type), ev->seq, de.msg);
        return AZC_OK;
    }
    if (ev->type != AZC_EV_RESYNC_END)
        return az_resync_stage(c->pg, ev, m->payload, m->len, rs, e);

    /* The end: all of it in this transaction, or nothing. */
    if ((rc = exec0(c, SQL_SAVEPOINT, e)) != AZC_OK)
        return rc;
    rc = az_resync_finish(c->pg, ev, rs, &de);
    if (rc == AZC_EINVAL) {
        if ((rc = exec0(c, SQL_ROLLBACK_SAVEPOINT, e)) != AZC_OK)
            return rc;
        halt(c, ev, "%s", de.msg);
        return AZC_OK;
    }
    if (rc != AZC_OK) {
        *e = de;
        return rc;
    }
    if ((rc = exec0(c, SQL_RELEASE_SAVEPOINT, e)) != AZC_OK)
        return rc;
    c->st.epoch = ev->epoch;
    c->st.applied_seq = ev->seq;
    c->st.applied_hlc = az__max_u64(c->st.applied_hlc, ev->hlc);
    c->st.known_hlc = az__max_u64(c->st.known_hlc, ev->hlc);
    snprintf(c->st.applied_id, sizeof c->st.applied_id, "%s", ev->id);
    bs->applied += rs->staged;
    bs->resyncs++;
    memset(rs, 0, sizeof *rs);
    /* The origin's state is now the resync's: whatever had diverged is
     * replaced. */
    c->st.stop_error[0] = '\0';
    c->st.diverged = 0;
    return AZC_OK;
}

/* An event of the current epoch, no resync being staged. */
static int current_event(az_consumer *c, const rd_kafka_message_t *m, const azc_event *ev,
                         batch_stats *bs, azc_err *e)
{
    char why[160];
    azc_err de;
    int dead = 0, rc;

    if (ev->type == AZC_EV_HEARTBEAT) {
        if (az_event_data_check(ev, &de) != AZC_OK)
            return dead_letter(c, m, de.msg, e);
        return heartbeat(c, m, ev, why, sizeof why, e);
    }
    if (ev->seq <= c->st.applied_seq)
        return check_duplicate(c, m, ev, bs, e);
    if (ev->seq > c->st.applied_seq + 1) {
        halt(c, ev, "gap in the events of %s at offset %" PRId64 ": seq %" PRIu64 " after %"
             PRIu64, ev->origin, m->offset, ev->seq, c->st.applied_seq);
        return AZC_OK;
    }
    if (ev->type == AZC_EV_RESYNC_BEGIN || ev->type == AZC_EV_RESYNC_END) {
        halt(c, ev, "%s in the current epoch %" PRIu64 " of %s (seq %" PRIu64 ", offset %" PRId64
             "): a resync must start a new epoch", azc_event_type_name(ev->type), ev->epoch,
             ev->origin, ev->seq, m->offset);
        return AZC_OK;
    }
    if (az_event_data_check(ev, &de) != AZC_OK)
        return dead_letter(c, m, de.msg, e);
    if ((rc = apply_one(c, m, ev, &dead, e)) != AZC_OK || dead)
        return rc;
    c->st.applied_seq = ev->seq;
    c->st.applied_hlc = az__max_u64(c->st.applied_hlc, ev->hlc);
    c->st.known_hlc = az__max_u64(c->st.known_hlc, ev->hlc);
    snprintf(c->st.applied_id, sizeof c->st.applied_id, "%s", ev->id);
    bs->applied++;
    bs->by_type[ev->type]++;
    if (bs->nages < sizeof bs->ages / sizeof bs->ages[0])
        bs->ages[bs->nages++] = AZC_HLC_MS(ev->hlc);
    return AZC_OK;
}

batch_result az__consumer_message(az_consumer *c, const rd_kafka_message_t *m, batch_stats *bs,
                                  azc_err *e)
{
    azc_event ev;
    azc_err de;
    uint64_t cur;
    int rc = AZC_OK, decoded;

    decoded = azc_event_decode(m->payload != NULL ? m->payload : "", m->len, &ev, &de) == AZC_OK;
    if (c->st.halted) {
        /* Only the repair gets through; nothing else is stored, not even
         * a dead letter (a restart reads these messages again). */
        if (!decoded || strcmp(ev.origin, c->sh->set.region) != 0 ||
            ev.type != AZC_EV_RESYNC_BEGIN || ev.epoch <= c->st.halt_epoch) {
            azc_event_clear(&ev);
            return BATCH_OK;
        }
        c->st.halted = 0;
        azc_logf(c->sh->log, AZC_LOG_INFO,
                 "consumer: resync of epoch %" PRIu64 " starts at offset %" PRId64
                 "; staying stopped until it is applied", ev.epoch, m->offset);
    }
    if (!decoded) {
        rc = dead_letter(c, m, de.msg, e);
        goto done;
    }
    if (strcmp(ev.origin, c->sh->set.region) != 0) {
        char why[128];
        snprintf(why, sizeof why, "origin \"%s\" is not this region's", ev.origin);
        rc = dead_letter(c, m, why, e);
        goto done;
    }
    cur = az__max_u64(c->st.epoch, c->st.rs.epoch);
    if (ev.epoch < cur) {
        /* Superseded by a resync: never applied. Heartbeats of an old
         * epoch promise nothing about the new one and are skipped. */
        if (ev.type != AZC_EV_HEARTBEAT) {
            char why[160];
            snprintf(why, sizeof why,
                     "event of epoch %" PRIu64 ", older than the current epoch %" PRIu64
                     ": not applied", ev.epoch, cur);
            rc = dead_letter(c, m, why, e);
        }
    } else if (ev.epoch > cur) {
        if (ev.type == AZC_EV_RESYNC_BEGIN && az_event_data_check(&ev, &de) == AZC_OK) {
            rc = az_resync_start(c->pg, &ev, m->payload, m->len, &c->st.rs, e);
        } else {
            halt(c, &ev, "a %s event of epoch %" PRIu64 " (seq %" PRIu64 ", offset %" PRId64
                 ") before its resync.begin", azc_event_type_name(ev.type), ev.epoch, ev.seq,
                 m->offset);
        }
    } else if (c->st.rs.epoch != 0) {
        rc = resync_event(c, m, &ev, bs, e);
    } else {
        rc = current_event(c, m, &ev, bs, e);
    }
done:
    azc_event_clear(&ev);
    if (rc != AZC_OK)
        return BATCH_DB;
    if (!c->st.halted)
        c->st.next_offset = m->offset + 1;
    return BATCH_OK;
}
