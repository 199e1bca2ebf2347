/*
 * Identity topic consumer: the thread, Kafka, the batch transaction and
 * the stored position and watermarks; what each message means is
 * order.c's. See consumer.h and docs/authz.md.
 *
 * Why explicit assignment and no consumer group: the position that counts
 * is the one stored in PostgreSQL with the effects of the messages before
 * it, so the consumer seeks there itself; a group would add a rebalance
 * delay and a second, misleading source of truth.
 *
 * Why a halted consumer keeps reading but stores no position: after a gap
 * or a divergence nothing of the origin's current epoch can be applied
 * safely, but the repair (a newer epoch's resync.begin) arrives on the
 * same topic; and a restart must find the message that stopped it again,
 * not resume past it.
 */
#include "authz/consumer_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>

#include "authz/status.h"
#include "common/event.h"
#include "common/hlc.h"
#include "common/pg.h"
#include "common/text.h"

static const char SQL_LOAD_POSITION[] =
    "SELECT next_offset FROM authz.consumer_position WHERE topic = $1 AND partition = 0";
static const char SQL_LOAD_WATERMARK[] =
    "SELECT w.applied_seq, w.applied_hlc, w.known_hlc, w.epoch,"
    "       (SELECT event_id FROM authz.applied_events a"
    "         WHERE a.origin = w.origin AND a.seq = w.applied_seq)"
    "  FROM authz.watermarks w WHERE w.origin = $1";
static const char SQL_STORE_POSITION[] =
    "INSERT INTO authz.consumer_position (topic, partition, next_offset) VALUES ($1, 0, $2)"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset";
/* updated_at marks when the origin was last heard from (silence
 * detection elsewhere relies on it). */
static const char SQL_STORE_WATERMARK[] =
    "INSERT INTO authz.watermarks AS w (origin, applied_seq, applied_hlc, known_hlc, epoch,"
    "                                   updated_at)"
    " VALUES ($1, $2, $3, $4, $5, now())"
    " ON CONFLICT (origin) DO UPDATE SET applied_seq = EXCLUDED.applied_seq,"
    "   applied_hlc = greatest(w.applied_hlc, EXCLUDED.applied_hlc),"
    "   known_hlc = greatest(w.known_hlc, EXCLUDED.known_hlc), epoch = EXCLUDED.epoch,"
    "   updated_at = now()";
/* No explicit NOTIFY: the row's trigger (sql/authz/006) announces it at
 * COMMIT with its values, for the feed workers to pass on from memory. */
/* Bounded: one batch never deletes more than $3 ids. */
static const char SQL_APPLIED_IDS_PRUNE[] =
    "DELETE FROM authz.applied_events WHERE origin = $1 AND seq IN"
    " (SELECT seq FROM authz.applied_events WHERE origin = $1 AND seq <= $2"
    "   ORDER BY seq LIMIT $3)";

#define POLL_MS 100
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 2000

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* Publishes c->st to the status; state is RUNNING or STOPPED (error may be
 * NULL: then c->st.stop_error). */
static void set_status(az_consumer *c, az_consumer_state state, const char *error)
{
    az_shared *sh = c->sh;
    az_consumer_status *s = &sh->status;
    const cstate *st = &c->st;

    pthread_mutex_lock(&sh->status_lock);
    s->state = state;
    azc_text_fmt(s->error, sizeof s->error, "%s", error != NULL ? error : st->stop_error);
    s->next_offset = st->next_offset;
    s->applied_seq = st->applied_seq;
    s->epoch = st->epoch;
    s->resync_epoch = st->rs.epoch;
    s->resync_staged = st->rs.staged;
    s->diverged = st->diverged;
    s->div_seq = st->div_seq;
    snprintf(s->div_applied_id, sizeof s->div_applied_id, "%s", st->div_applied);
    snprintf(s->div_received_id, sizeof s->div_received_id, "%s", st->div_received);
    s->div_offset = st->div_offset;
    pthread_mutex_unlock(&sh->status_lock);
    if (azc_metric_set(sh->m_stopped, NULL, state == AZ_CONSUMER_STOPPED ? 1 : 0) != AZC_OK)
        azc_logf(sh->log, AZC_LOG_WARN, "cannot set authz_consumer_stopped");
}

static void publish(az_consumer *c)
{
    set_status(c, c->st.stop_error[0] != '\0' ? AZ_CONSUMER_STOPPED : AZ_CONSUMER_RUNNING, NULL);
}

/* ---- start-up ---------------------------------------------------------- */

static int load_state(az_consumer *c, azc_err *e)
{
    const char *topic = c->sh->set.topic, *origin = c->sh->set.region;
    PGresult *res = NULL;
    int rc;

    memset(&c->st, 0, sizeof c->st);
    c->st.next_offset = -1;
    c->st.epoch = 1;
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
        c->st.epoch = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        if (!PQgetisnull(res, 0, 4))
            snprintf(c->st.applied_id, sizeof c->st.applied_id, "%s", PQgetvalue(res, 0, 4));
    }
    PQclear(res);
    return az_resync_load(c->pg, origin, &c->st.rs, e);
}

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    az_consumer *c = opaque;
    az_shared *sh = c->sh;

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[200];

        rd_kafka_fatal_error(rk, fatal, sizeof fatal);
        azc_logf(sh->log, AZC_LOG_ERROR, "consumer: kafka fatal error: %s", fatal);
        azc_text_fmt(c->kafka_fatal_msg, sizeof c->kafka_fatal_msg, "kafka fatal error: %s", fatal);
        c->kafka_fatal = 1;
        return;
    }
    /* Transient (broker down, ...): librdkafka retries by itself; the
     * stall check reports it if it lasts. */
    azc_logf(sh->log, AZC_LOG_WARN, "consumer: kafka: %s", reason);
    pthread_mutex_lock(&sh->status_lock);
    azc_text_fmt(sh->status.kafka_error, sizeof sh->status.kafka_error, "%s", reason);
    pthread_mutex_unlock(&sh->status_lock);
}

/* librdkafka's own log lines go to the JSON log, not raw to stderr. May
 * run on librdkafka's threads: the logger is thread-safe. */
static void on_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    az_consumer *c = rd_kafka_opaque(rk);

    azc_logf(c->sh->log, level <= 3 ? AZC_LOG_ERROR : level <= 4 ? AZC_LOG_WARN : AZC_LOG_DEBUG,
             "consumer: kafka %s: %s", fac, buf);
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
    rd_kafka_resp_err_t err;
    size_t i;

    if (conf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "kafka configuration: out of memory");
    if (azc_kafka_conn_apply(c->sh->set.kafka, conf, e) != AZC_OK) {
        rd_kafka_conf_destroy(conf);
        return AZC_EINVAL;
    }
    for (i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
            goto bad;
    }
    rd_kafka_conf_set_error_cb(conf, on_kafka_error);
    rd_kafka_conf_set_log_cb(conf, on_kafka_log);
    rd_kafka_conf_set_opaque(conf, c);
    /* On success rd_kafka_new owns conf; on failure it is still ours. */
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (c->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return azc_err_set(e, AZC_ERROR, "kafka consumer: %s", errstr);
    }
    /* Errors are served by rd_kafka_consumer_poll, on the consumer thread. */
    if ((err = rd_kafka_poll_set_consumer(c->rk)) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return azc_err_set(e, AZC_ERROR, "kafka consumer queue: %s", rd_kafka_err2str(err));
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

    if (l == NULL)
        return azc_err_set(e, AZC_ENOMEM, "kafka assign: out of memory");
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
static int prune_ids(az_consumer *c, uint64_t applied, azc_err *e)
{
    char through[24], limit[24];
    const char *p[3] = { c->sh->set.region, through, limit };
    uint64_t keep = (uint64_t)c->sh->set.applied_ids_retain;

    if (c->st.applied_seq <= keep)
        return AZC_OK;
    snprintf(through, sizeof through, "%" PRIu64, c->st.applied_seq - keep);
    /* Enough to keep up with what the batch added, and to catch up. */
    snprintf(limit, sizeof limit, "%" PRIu64, 1000 + 2 * applied);
    return azc_pg_query(c->pg, SQL_APPLIED_IDS_PRUNE, 3, p, NULL, e);
}

static int store_state(az_consumer *c, const cstate *before, uint64_t applied, azc_err *e)
{
    char off[24], seq[24], ah[24], kh[24], ep[24];
    const char *pp[2] = { c->sh->set.topic, off };
    const char *pw[5] = { c->sh->set.region, seq, ah, kh, ep };
    int rc;

    if (c->st.next_offset != before->next_offset) {
        snprintf(off, sizeof off, "%" PRId64, c->st.next_offset);
        if ((rc = azc_pg_query(c->pg, SQL_STORE_POSITION, 2, pp, NULL, e)) != AZC_OK)
            return rc;
    }
    if (c->st.applied_seq != before->applied_seq || c->st.applied_hlc != before->applied_hlc ||
        c->st.known_hlc != before->known_hlc || c->st.epoch != before->epoch) {
        snprintf(seq, sizeof seq, "%" PRIu64, c->st.applied_seq);
        snprintf(ah, sizeof ah, "%" PRIu64, c->st.applied_hlc);
        snprintf(kh, sizeof kh, "%" PRIu64, c->st.known_hlc);
        snprintf(ep, sizeof ep, "%" PRIu64, c->st.epoch);
        if ((rc = azc_pg_query(c->pg, SQL_STORE_WATERMARK, 5, pw, NULL, e)) != AZC_OK)
            return rc;
    }
    if (applied > 0)
        return prune_ids(c, applied, e);
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
    if (bs->resyncs > 0)
        bad |= azc_metric_inc(sh->m_resyncs, NULL, (double)bs->resyncs) != AZC_OK;
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
    sh->status.rollback_since_ms = 0;
    sh->status.rollback_error[0] = '\0';
    pthread_mutex_unlock(&sh->status_lock);
}

/* Logs and counts what the committed batch changed in the stop state. */
static void report_transitions(az_consumer *c, const cstate *before, const batch_stats *bs)
{
    az_shared *sh = c->sh;

    if (c->st.diverged && (!before->diverged || c->st.div_offset != before->div_offset)) {
        json_t *f = json_pack("{s:s, s:{s:I, s:s, s:s, s:I}}", "error", c->st.stop_error,
                              "divergence", "seq", (json_int_t)c->st.div_seq, "applied_id",
                              c->st.div_applied, "received_id", c->st.div_received,
                              "kafka_offset", (json_int_t)c->st.div_offset);
        azc_log_write(sh->log, AZC_LOG_ERROR, NULL, f,
                      "consumer: diverged from the origin; waiting for a resync");
        json_decref(f);
        if (azc_metric_inc(sh->m_divergences, NULL, 1) != AZC_OK)
            azc_logf(sh->log, AZC_LOG_WARN, "cannot count a divergence");
    } else if (c->st.halted && !before->halted) {
        json_t *f = json_pack("{s:s}", "error", c->st.stop_error);
        azc_log_write(sh->log, AZC_LOG_ERROR, NULL, f,
                      "consumer: stopped; restart to retry from the stored position, or resync "
                      "the origin");
        json_decref(f);
    }
    if (bs->resyncs > 0) {
        json_t *f = json_pack("{s:I, s:I, s:I}", "epoch", (json_int_t)c->st.epoch, "applied_seq",
                              (json_int_t)c->st.applied_seq, "events", (json_int_t)bs->applied);
        azc_log_write(sh->log, AZC_LOG_INFO, NULL, f, "consumer: resync applied");
        json_decref(f);
    }
}

static void note_rollback(az_consumer *c, const azc_err *e)
{
    az_shared *sh = c->sh;

    pthread_mutex_lock(&sh->status_lock);
    if (sh->status.rollback_since_ms == 0)
        sh->status.rollback_since_ms = az_mono_ms();
    azc_text_fmt(sh->status.rollback_error, sizeof sh->status.rollback_error, "%s", e->msg);
    pthread_mutex_unlock(&sh->status_lock);
    if (azc_metric_inc(sh->m_rollbacks, NULL, 1) != AZC_OK)
        azc_logf(sh->log, AZC_LOG_WARN, "cannot count a rollback");
}

/* Applies msgs[0..n) in one transaction. Returns what stopped it. */
static batch_result apply_batch(az_consumer *c, rd_kafka_message_t **msgs, size_t n)
{
    cstate before = c->st;
    batch_stats bs;
    batch_result br = BATCH_OK;
    double t0 = now_s();
    azc_err e;
    size_t i;

    memset(&bs, 0, sizeof bs);
    c->dead_letter_failed = 0;
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
        br = az__consumer_message(c, m, &bs, &e);
    }
    if (br == BATCH_DB)
        goto db_failed;
    if (store_state(c, &before, bs.applied, &e) != AZC_OK || azc_pg_commit(c->pg, &e) != AZC_OK)
        goto db_failed;
    count(c, &bs, now_s() - t0);
    report_transitions(c, &before, &bs);
    publish(c);
    c->backoff_ms = 0;
    return BATCH_OK;

db_failed:
    azc_pg_rollback(c->pg);
    c->st = before;
    azc_logf(c->sh->log, AZC_LOG_WARN, "consumer: batch rolled back: %s", e.msg);
    if (c->dead_letter_failed) {
        char why[AZC_ERRMSG_MAX + 32]; /* set_status cuts it to fit */
        size_t len = strlen(e.msg);

        /* libpq's messages end in a newline. */
        while (len > 0 && (e.msg[len - 1] == '\n' || e.msg[len - 1] == ' '))
            e.msg[--len] = '\0';
        azc_text_fmt(why, sizeof why, "%s; restart to retry", e.msg);
        azc_logf(c->sh->log, AZC_LOG_ERROR, "consumer: stopped: %s", why);
        set_status(c, AZ_CONSUMER_STOPPED, why);
        return BATCH_STOP;
    }
    note_rollback(c, &e);
    c->need_seek = 1;
    return BATCH_DB;
}

/* ---- thread ------------------------------------------------------------ */

static void note_message(az_consumer *c)
{
    az_shared *sh = c->sh;

    pthread_mutex_lock(&sh->status_lock);
    sh->status.last_message_ms = az_mono_ms();
    sh->status.kafka_error[0] = '\0';
    pthread_mutex_unlock(&sh->status_lock);
}

static void *consumer_main(void *arg)
{
    az_consumer *c = arg;
    rd_kafka_message_t **msgs = calloc((size_t)c->sh->set.batch, sizeof *msgs);
    az_consumer_status cs;
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
    /* The silence check counts from here until the first message. */
    note_message(c);
    set_status(c, AZ_CONSUMER_RUNNING, NULL);
    azc_logf(c->sh->log, AZC_LOG_INFO,
             "consumer: reading %s from offset %" PRId64 " (epoch %" PRIu64 ", applied seq %"
             PRIu64 "%s)", c->sh->set.topic, c->st.next_offset, c->st.epoch, c->st.applied_seq,
             c->st.rs.epoch != 0 ? ", resync in progress" : "");
    while (!atomic_load(&c->stop)) {
        batch_result br;
        int got = 0;

        /* Keeps authz_consumer_stalled current between scrapes. */
        az_consumer_status_get(c->sh, &cs);
        if (c->need_seek) {
            /* After a failed batch: do not hammer a sick database. */
            c->backoff_ms = c->backoff_ms == 0 ? BACKOFF_MIN_MS : c->backoff_ms * 2;
            if (c->backoff_ms > BACKOFF_MAX_MS)
                c->backoff_ms = BACKOFF_MAX_MS;
            sleep_ms(c->backoff_ms);
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
        if (c->kafka_fatal) {
            if (msgs[0] != NULL)
                rd_kafka_message_destroy(msgs[0]);
            set_status(c, AZ_CONSUMER_STOPPED, c->kafka_fatal_msg);
            break;
        }
        if (msgs[0] == NULL)
            continue;
        n = 1;
        while (n < (size_t)c->sh->set.batch && (msgs[n] = rd_kafka_consumer_poll(c->rk, 0)) != NULL)
            n++;
        for (i = 0; i < n; i++)
            got |= msgs[i]->err == RD_KAFKA_RESP_ERR_NO_ERROR;
        if (got)
            note_message(c);
        br = apply_batch(c, msgs, n);
        for (i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        if (br == BATCH_STOP)
            break;
    }
    /* Stopped for good: stay stopped (and not ready) until shutdown. */
    while (!atomic_load(&c->stop))
        sleep_ms(POLL_MS);
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
        if (c->rk != NULL)
            rd_kafka_destroy(c->rk);
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
