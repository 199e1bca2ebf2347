/*
 * Identity topic consumer; see consumer.h and docs/authz.md.
 *
 * Why explicit assignment and no consumer group: the position that counts
 * is the one stored in PostgreSQL with the effects of the messages before
 * it, so the consumer seeks there itself; a group would add a rebalance
 * delay and a second, misleading source of truth.
 *
 * Why a savepoint per event: an event that cannot be applied to the
 * current state is dead-lettered without undoing the rest of its batch.
 */
#include "authz/consumer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>

#include "authz/apply.h"
#include "common/event.h"
#include "common/hlc.h"
#include "common/pg.h"

static const char SQL_LOAD_POSITION[] =
    "SELECT next_offset FROM authz.consumer_position WHERE topic = $1 AND partition = 0";
static const char SQL_LOAD_WATERMARK[] =
    "SELECT applied_seq, applied_hlc, known_hlc FROM authz.watermarks WHERE origin = $1";
static const char SQL_STORE_POSITION[] =
    "INSERT INTO authz.consumer_position (topic, partition, next_offset) VALUES ($1, 0, $2)"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset";
static const char SQL_STORE_WATERMARK[] =
    "INSERT INTO authz.watermarks AS w (origin, applied_seq, applied_hlc, known_hlc, updated_at)"
    " VALUES ($1, $2, $3, $4, now())"
    " ON CONFLICT (origin) DO UPDATE SET applied_seq = EXCLUDED.applied_seq,"
    "   applied_hlc = greatest(w.applied_hlc, EXCLUDED.applied_hlc),"
    "   known_hlc = greatest(w.known_hlc, EXCLUDED.known_hlc), updated_at = now()";
static const char SQL_NOTIFY_WATERMARKS[] = "SELECT pg_notify('authz_watermarks', '')";
static const char SQL_DEAD_LETTER[] =
    "INSERT INTO authz.dead_letters (topic, partition, kafka_offset, raw, reason)"
    " VALUES ($1, $2, $3, $4, $5)";
static const char SQL_SAVEPOINT[] = "SAVEPOINT ev";
static const char SQL_ROLLBACK_SAVEPOINT[] = "ROLLBACK TO SAVEPOINT ev";
static const char SQL_RELEASE_SAVEPOINT[] = "RELEASE SAVEPOINT ev";

#define POLL_MS 100

/* The part of the state a transaction changes: copied before a batch and
 * restored when it rolls back. */
typedef struct cstate {
    int64_t next_offset;     /* -1: none stored yet */
    uint64_t applied_seq, applied_hlc, known_hlc;
} cstate;

struct az_consumer {
    az_shared *sh;
    pthread_t thread;
    int started;
    atomic_int stop;

    /* Owned by the consumer thread. */
    PGconn *pg;
    rd_kafka_t *rk;
    cstate st;
    int need_seek;
};

typedef enum { BATCH_OK, BATCH_GAP, BATCH_DB } batch_result;

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_status(az_consumer *c, az_consumer_state state, const char *error)
{
    az_shared *sh = c->sh;

    pthread_mutex_lock(&sh->status_lock);
    sh->status.state = state;
    snprintf(sh->status.error, sizeof sh->status.error, "%s", error != NULL ? error : "");
    sh->status.next_offset = c->st.next_offset;
    sh->status.applied_seq = c->st.applied_seq;
    pthread_mutex_unlock(&sh->status_lock);
    if (azc_metric_set(sh->m_stopped, NULL, state == AZ_CONSUMER_STOPPED ? 1 : 0) != AZC_OK)
        azc_logf(sh->log, AZC_LOG_WARN, "cannot set authz_consumer_stopped");
}

/* ---- start-up ---------------------------------------------------------- */

static int load_state(az_consumer *c, azc_err *e)
{
    const char *topic = c->sh->set.topic, *origin = c->sh->set.region;
    PGresult *res = NULL;
    int rc;

    memset(&c->st, 0, sizeof c->st);
    c->st.next_offset = -1;
    if ((rc = azc_pg_query(c->pg, SQL_LOAD_POSITION, 1, &topic, &res, e)) != AZC_OK)
        return rc;
    if (PQntuples(res) == 1)
        c->st.next_offset = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if ((rc = azc_pg_query(c->pg, SQL_LOAD_WATERMARK, 1, &origin, &res, e)) != AZC_OK)
        return rc;
    if (PQntuples(res) == 1) {
        c->st.applied_seq = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        c->st.applied_hlc = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        c->st.known_hlc = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
    }
    PQclear(res);
    return AZC_OK;
}

static int kafka_new(az_consumer *c, azc_err *e)
{
    static const char *const settings[][2] = {
        { "enable.auto.commit", "false" },
        { "enable.auto.offset.store", "false" },
        { "enable.partition.eof", "false" },
        /* The stored position may be gone (retention): start at the
         * oldest message; the seq check then stops on the gap. */
        { "auto.offset.reset", "earliest" },
        { "fetch.wait.max.ms", "10" },
        { "fetch.error.backoff.ms", "50" },
        { "socket.nagle.disable", "true" },
        { "client.id", "authz-server" },
        /* librdkafka 2.0 wants a group even for assign(); nothing is ever
         * committed to it. */
        { "group.id", "authz-server" },
    };
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    size_t i;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", c->sh->set.bootstrap, errstr,
                          sizeof errstr) != RD_KAFKA_CONF_OK)
        goto bad;
    for (i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
            goto bad;
    }
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (c->rk == NULL)
        return azc_err_set(e, AZC_ERROR, "kafka consumer: %s", errstr);
    return AZC_OK;
bad:
    rd_kafka_conf_destroy(conf);
    return azc_err_set(e, AZC_EINVAL, "kafka configuration: %s", errstr);
}

/* (Re)assigns the partition at the stored position. */
static int seek_stored(az_consumer *c, azc_err *e)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err;

    rd_kafka_topic_partition_list_add(l, c->sh->set.topic, 0)->offset =
        c->st.next_offset >= 0 ? c->st.next_offset : RD_KAFKA_OFFSET_BEGINNING;
    err = rd_kafka_assign(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return azc_err_set(e, AZC_ERROR, "kafka assign: %s", rd_kafka_err2str(err));
    c->need_seek = 0;
    return AZC_OK;
}

/* Connects (again) to PostgreSQL and reloads the state, retrying until it
 * works or the consumer is told to stop. */
static int connect_db(az_consumer *c)
{
    azc_err e;

    for (;;) {
        if (atomic_load(&c->stop))
            return AZC_ERROR;
        PQfinish(c->pg);
        c->pg = NULL;
        if (azc_pg_connect(c->sh->set.pg_url, "authz-consumer", 2000, c->sh->log, &c->pg, &e) ==
                AZC_OK &&
            load_state(c, &e) == AZC_OK)
            return AZC_OK;
        azc_logf(c->sh->log, AZC_LOG_WARN, "consumer: database not available: %s", e.msg);
    }
}

/* ---- one batch --------------------------------------------------------- */

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
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = azc_err_set(e, PQstatus(c->pg) == CONNECTION_OK ? AZC_ERROR : AZC_EUNAVAIL,
                         "dead letter: %s", PQerrorMessage(c->pg));
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

/* Applies one decoded, in-order event under a savepoint. *dead is set when
 * it could not be applied and was dead-lettered instead. */
static int apply_one(az_consumer *c, const rd_kafka_message_t *m, const azc_event *ev, int *dead,
                     azc_err *e)
{
    azc_err ae;
    int rc;

    *dead = 0;
    if ((rc = exec0(c, SQL_SAVEPOINT, e)) != AZC_OK)
        return rc;
    rc = az_event_apply(c->pg, ev, &ae);
    if (rc == AZC_OK)
        return exec0(c, SQL_RELEASE_SAVEPOINT, e);
    if (rc != AZC_EINVAL && rc != AZC_ECONFLICT) {
        *e = ae;
        return rc;
    }
    if ((rc = exec0(c, SQL_ROLLBACK_SAVEPOINT, e)) != AZC_OK)
        return rc;
    *dead = 1;
    return dead_letter(c, m, ae.msg, e);
}

typedef struct batch_stats {
    uint64_t applied, duplicates;
    uint64_t by_type[AZC_EV__COUNT];
    uint64_t ages[64];
    size_t nages;
} batch_stats;

/* Handles one message inside the batch transaction; updates c->st. */
static batch_result one_message(az_consumer *c, const rd_kafka_message_t *m, batch_stats *bs,
                                char *gap, size_t gap_len, azc_err *e)
{
    azc_event ev;
    azc_err de;
    int dead = 0, rc;
    batch_result br = BATCH_OK;

    if (azc_event_decode(m->payload != NULL ? m->payload : "", m->len, &ev, &de) != AZC_OK) {
        rc = dead_letter(c, m, de.msg, e);
        goto done;
    }
    if (strcmp(ev.origin, c->sh->set.region) != 0) {
        char why[128];
        snprintf(why, sizeof why, "origin \"%s\" is not this region's", ev.origin);
        rc = dead_letter(c, m, why, e);
        goto done;
    }
    if (ev.seq > c->st.applied_seq + (ev.type == AZC_EV_HEARTBEAT ? 0 : 1)) {
        snprintf(gap, gap_len, "gap in the events of %s at offset %" PRId64 ": seq %" PRIu64
                 " after %" PRIu64, ev.origin, m->offset, ev.seq, c->st.applied_seq);
        azc_event_clear(&ev);
        return BATCH_GAP;
    }
    if (ev.type == AZC_EV_HEARTBEAT) {
        /* A resent old heartbeat (seq below ours) promises nothing new. */
        if (ev.seq == c->st.applied_seq) {
            c->st.applied_hlc = max_u64(c->st.applied_hlc, ev.hlc);
            c->st.known_hlc = max_u64(c->st.known_hlc, ev.hlc);
        }
        rc = AZC_OK;
        goto done;
    }
    if (ev.seq <= c->st.applied_seq) {
        bs->duplicates++;
        rc = AZC_OK;
        goto done;
    }
    if (az_event_data_check(&ev, &de) != AZC_OK) {
        rc = dead_letter(c, m, de.msg, e);
        goto done;
    }
    if ((rc = apply_one(c, m, &ev, &dead, e)) != AZC_OK || dead)
        goto done;
    c->st.applied_seq = ev.seq;
    c->st.applied_hlc = max_u64(c->st.applied_hlc, ev.hlc);
    c->st.known_hlc = max_u64(c->st.known_hlc, ev.hlc);
    bs->applied++;
    bs->by_type[ev.type]++;
    if (bs->nages < sizeof bs->ages / sizeof bs->ages[0])
        bs->ages[bs->nages++] = AZC_HLC_MS(ev.hlc);
done:
    azc_event_clear(&ev);
    if (rc != AZC_OK)
        return BATCH_DB;
    c->st.next_offset = m->offset + 1;
    return br;
}

static int store_state(az_consumer *c, const cstate *before, azc_err *e)
{
    char off[24], seq[24], ah[24], kh[24];
    const char *pp[2] = { c->sh->set.topic, off };
    const char *pw[4] = { c->sh->set.region, seq, ah, kh };
    int rc;

    if (c->st.next_offset != before->next_offset) {
        snprintf(off, sizeof off, "%" PRId64, c->st.next_offset);
        if ((rc = azc_pg_query(c->pg, SQL_STORE_POSITION, 2, pp, NULL, e)) != AZC_OK)
            return rc;
    }
    if (c->st.applied_seq != before->applied_seq || c->st.applied_hlc != before->applied_hlc ||
        c->st.known_hlc != before->known_hlc) {
        snprintf(seq, sizeof seq, "%" PRIu64, c->st.applied_seq);
        snprintf(ah, sizeof ah, "%" PRIu64, c->st.applied_hlc);
        snprintf(kh, sizeof kh, "%" PRIu64, c->st.known_hlc);
        if ((rc = azc_pg_query(c->pg, SQL_STORE_WATERMARK, 4, pw, NULL, e)) != AZC_OK ||
            (rc = exec0(c, SQL_NOTIFY_WATERMARKS, e)) != AZC_OK)
            return rc;
    }
    return AZC_OK;
}

static void count(az_consumer *c, const batch_stats *bs, double seconds)
{
    az_shared *sh = c->sh;
    uint64_t now = azc_wall_ms();
    size_t i;
    int bad = 0;

    for (i = 0; i < AZC_EV__COUNT; i++) {
        if (bs->by_type[i] > 0)
            bad |= azc_metric_inc(sh->m_applied,
                                  (const char *const[]){ azc_event_type_name((azc_event_type)i),
                                                         NULL },
                                  (double)bs->by_type[i]) != AZC_OK;
    }
    if (bs->duplicates > 0)
        bad |= azc_metric_inc(sh->m_duplicates, NULL, (double)bs->duplicates) != AZC_OK;
    for (i = 0; i < bs->nages; i++)
        bad |= azc_metric_observe(sh->m_age, NULL,
                                  now > bs->ages[i] ? (double)(now - bs->ages[i]) / 1000.0 : 0) !=
               AZC_OK;
    bad |= azc_metric_observe(sh->m_batch, NULL, seconds) != AZC_OK;
    bad |= azc_metric_set(sh->m_lag, (const char *const[]){ sh->set.region, NULL },
                          (double)(AZC_HLC_MS(c->st.known_hlc) - AZC_HLC_MS(c->st.applied_hlc)) /
                              1000.0) != AZC_OK;
    if (bad)
        azc_logf(sh->log, AZC_LOG_WARN, "consumer: a metric update failed");
    pthread_mutex_lock(&sh->status_lock);
    sh->status.events_applied += bs->applied;
    sh->status.duplicates += bs->duplicates;
    sh->status.next_offset = c->st.next_offset;
    sh->status.applied_seq = c->st.applied_seq;
    pthread_mutex_unlock(&sh->status_lock);
}

/* Applies msgs[0..n) in one transaction. Returns what stopped it. */
static batch_result apply_batch(az_consumer *c, rd_kafka_message_t **msgs, size_t n)
{
    cstate before = c->st;
    batch_stats bs;
    char gap[256] = "";
    batch_result br = BATCH_OK;
    double t0 = now_s();
    azc_err e;
    size_t i;

    memset(&bs, 0, sizeof bs);
    if (azc_pg_begin(c->pg, &e) != AZC_OK)
        goto db_failed;
    for (i = 0; i < n && br == BATCH_OK; i++) {
        const rd_kafka_message_t *m = msgs[i];

        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            azc_logf(c->sh->log, AZC_LOG_WARN, "consumer: kafka: %s", rd_kafka_message_errstr(m));
            continue;
        }
        /* Left over from before a seek: already applied. */
        if (c->st.next_offset >= 0 && m->offset < c->st.next_offset)
            continue;
        br = one_message(c, m, &bs, gap, sizeof gap, &e);
    }
    if (br == BATCH_DB)
        goto db_failed;
    if (store_state(c, &before, &e) != AZC_OK || azc_pg_commit(c->pg, &e) != AZC_OK)
        goto db_failed;
    count(c, &bs, now_s() - t0);
    if (br == BATCH_GAP) {
        json_t *f = json_pack("{s:s}", "error", gap);
        azc_log_write(c->sh->log, AZC_LOG_ERROR, NULL, f,
                      "consumer: stopped on a gap; restart to retry from the stored position");
        json_decref(f);
        set_status(c, AZ_CONSUMER_STOPPED, gap);
    }
    return br;

db_failed:
    azc_pg_rollback(c->pg);
    c->st = before;
    azc_logf(c->sh->log, AZC_LOG_WARN, "consumer: batch rolled back: %s", e.msg);
    c->need_seek = 1;
    return BATCH_DB;
}

/* ---- thread ------------------------------------------------------------ */

static void *consumer_main(void *arg)
{
    az_consumer *c = arg;
    rd_kafka_message_t **msgs = calloc((size_t)c->sh->set.batch, sizeof *msgs);
    azc_err e;
    size_t n, i;

    if (msgs == NULL) {
        set_status(c, AZ_CONSUMER_STOPPED, "out of memory");
        return NULL;
    }
    if (connect_db(c) != AZC_OK)
        goto out;
    if (seek_stored(c, &e) != AZC_OK) {
        set_status(c, AZ_CONSUMER_STOPPED, e.msg);
        goto out;
    }
    set_status(c, AZ_CONSUMER_RUNNING, NULL);
    azc_logf(c->sh->log, AZC_LOG_INFO,
             "consumer: reading %s from offset %" PRId64 " (applied seq %" PRIu64 ")",
             c->sh->set.topic, c->st.next_offset, c->st.applied_seq);
    while (!atomic_load(&c->stop)) {
        batch_result br;

        if (c->need_seek) {
            /* After a failed batch: do not hammer a sick database. */
            struct timespec ts = { 0, 200 * 1000000L };
            nanosleep(&ts, NULL);
            if (PQstatus(c->pg) != CONNECTION_OK && connect_db(c) != AZC_OK)
                break;
            if (load_state(c, &e) != AZC_OK) {
                PQfinish(c->pg);
                c->pg = NULL;
                if (connect_db(c) != AZC_OK)
                    break;
            }
            if (seek_stored(c, &e) != AZC_OK) {
                azc_logf(c->sh->log, AZC_LOG_WARN, "consumer: %s", e.msg);
                continue;
            }
        }
        msgs[0] = rd_kafka_consumer_poll(c->rk, POLL_MS);
        if (msgs[0] == NULL)
            continue;
        n = 1;
        while (n < (size_t)c->sh->set.batch && (msgs[n] = rd_kafka_consumer_poll(c->rk, 0)) != NULL)
            n++;
        br = apply_batch(c, msgs, n);
        for (i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        if (br == BATCH_GAP)
            break;
    }
    /* Stopped on a gap: stay stopped (and not ready) until shutdown. */
    while (!atomic_load(&c->stop)) {
        struct timespec ts = { 0, POLL_MS * 1000000L };
        nanosleep(&ts, NULL);
    }
out:
    free(msgs);
    return NULL;
}

az_consumer *az_consumer_new(az_shared *sh, azc_err *e)
{
    az_consumer *c = calloc(1, sizeof *c);

    if (c == NULL) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    c->sh = sh;
    c->st.next_offset = -1;
    atomic_init(&c->stop, 0);
    if (kafka_new(c, e) != AZC_OK) {
        free(c);
        return NULL;
    }
    return c;
}

int az_consumer_start(az_consumer *c, azc_err *e)
{
    if (pthread_create(&c->thread, NULL, consumer_main, c) != 0)
        return azc_err_set(e, AZC_ERROR, "cannot start the consumer thread");
    c->started = 1;
    return AZC_OK;
}

void az_consumer_free(az_consumer *c)
{
    if (c == NULL)
        return;
    atomic_store(&c->stop, 1);
    if (c->started)
        pthread_join(c->thread, NULL);
    if (c->rk != NULL) {
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    PQfinish(c->pg);
    free(c);
}
