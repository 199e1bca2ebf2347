/*
 * Reading the topic's tail and comparing it with the outbox; see tail.h.
 *
 * The tail message is enough: within an epoch seqs and HLCs increase with
 * the offset, and a resync starts above every seq and HLC before it, so
 * the last message carries the topic's highest seq, HLC and epoch.
 */
#include "identity/tail.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "common/pg.h"

static const char SQL_ORIGIN[] =
    "SELECT epoch, epoch_start_seq, last_seq, last_hlc FROM identity.outbox_state";
static const char SQL_ROW_ID[] = "SELECT event_id FROM identity.outbox WHERE seq = $1::bigint";

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One read's librdkafka context: where its lines go, and the last error
 * it reported, so that a read that times out says why (a refused SASL
 * login, a certificate that does not verify) rather than only "in time". */
typedef struct tail_ctx {
    azc_log *lg;
    pthread_mutex_t lock;
    char last_error[120];
} tail_ctx;

/*
 * librdkafka's own lines go to the JSON log, not raw to stderr. They come
 * from its threads while id_tail_read blocks in a call that serves no
 * error callback, so its errors (level 3 and below) are kept from here.
 */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    tail_ctx *t = rd_kafka_opaque(rk);

    if (t->lg != NULL)
        azc_logf(t->lg, level <= 3 ? AZC_LOG_WARN : AZC_LOG_DEBUG, "tail: kafka %s: %s", fac,
                 buf);
    if (level <= 3) {
        /* "[thrd:NAME]: " only repeats the broker the line names next. */
        const char *text = buf;

        if (strncmp(text, "[thrd:", 6) == 0 && strstr(text, "]: ") != NULL)
            text = strstr(text, "]: ") + 3;
        pthread_mutex_lock(&t->lock);
        snprintf(t->last_error, sizeof t->last_error, "%s", text);
        pthread_mutex_unlock(&t->lock);
    }
}

/* " (last error: ...)" when librdkafka reported one, else "". */
static void why_suffix(tail_ctx *t, char *buf, size_t len)
{
    pthread_mutex_lock(&t->lock);
    if (t->last_error[0] != '\0')
        snprintf(buf, len, " (last error: %s)", t->last_error);
    else
        buf[0] = '\0';
    pthread_mutex_unlock(&t->lock);
}

static int kafka_status(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return AZC_ENOTFOUND;
    default:
        return AZC_EUNAVAIL;
    }
}

static int open_consumer(const azc_kafka_conn *kafka, tail_ctx *t, rd_kafka_t **out, azc_err *e)
{
    static const char *const settings[][2] = {
        /* Needed by the consumer API; nothing is ever committed. */
        { "group.id", "authz-identity-tail" },
        { "enable.auto.commit", "false" },
        { "enable.auto.offset.store", "false" },
        { "enable.partition.eof", "true" },
        { "auto.offset.reset", "error" },
        { "fetch.wait.max.ms", "10" },
        { "reconnect.backoff.max.ms", "500" },
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_t *rk;
    size_t i;

    if (conf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (azc_kafka_conn_apply(kafka, conf, e) != AZC_OK) {
        rd_kafka_conf_destroy(conf);
        return AZC_EINVAL;
    }
    for (i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            return azc_err_set(e, AZC_ERROR, "kafka %s: %s", settings[i][0], err);
        }
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_opaque(conf, t);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return azc_err_set(e, AZC_ERROR, "kafka consumer: %s", err);
    }
    *out = rk;
    return AZC_OK;
}

/* Fills t from the envelope at buf; a bad one marks t undecodable. */
static void parse_tail(const void *buf, size_t len, id_tail *t)
{
    azc_event ev;
    azc_err de;

    azc_err_clear(&de);
    if (azc_event_decode(buf, len, &ev, &de) != AZC_OK) {
        t->undecodable = 1;
        snprintf(t->error, sizeof t->error, "%s", de.msg);
        return;
    }
    t->type = ev.type;
    t->epoch = ev.epoch;
    t->seq = ev.seq;
    t->hlc = ev.hlc;
    if (ev.type != AZC_EV_HEARTBEAT) {
        snprintf(t->id, sizeof t->id, "%s", ev.id);
    } else {
        json_t *last = json_object_get(ev.data, "last_id");

        if (last != NULL && !(json_is_string(last) && azc_uuid_valid(json_string_value(last)))) {
            t->undecodable = 1;
            snprintf(t->error, sizeof t->error, "heartbeat data.last_id is not a uuid");
        } else if (last != NULL) {
            snprintf(t->id, sizeof t->id, "%s", json_string_value(last));
        }
    }
    azc_event_clear(&ev);
}

int id_tail_read(const azc_kafka_conn *kafka, const char *topic, int timeout_ms, azc_log *lg,
                 id_tail *out, azc_err *e)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_resp_err_t err;
    int64_t lo = 0, hi = 0, deadline = mono_ms() + timeout_ms;
    const char *bootstrap = azc_kafka_conn_bootstrap(kafka);
    rd_kafka_t *rk = NULL;
    tail_ctx t = { .lg = lg };
    char why[160];
    int rc;

    memset(out, 0, sizeof *out);
    if (pthread_mutex_init(&t.lock, NULL) != 0)
        return azc_err_set(e, AZC_ERROR, "tail: cannot create a mutex");
    if ((rc = open_consumer(kafka, &t, &rk, e)) != AZC_OK) {
        pthread_mutex_destroy(&t.lock);
        return rc;
    }
    err = rd_kafka_query_watermark_offsets(rk, topic, 0, &lo, &hi, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        why_suffix(&t, why, sizeof why);
        rc = azc_err_set(e, kafka_status(err), "cannot read the end of topic %s at %s: %s%s",
                         topic, bootstrap, rd_kafka_err2str(err), why);
        goto out;
    }
    if (hi <= lo) {
        out->empty = 1;
        goto out;
    }
    parts = rd_kafka_topic_partition_list_new(1);
    if (parts == NULL) {
        rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
        goto out;
    }
    rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = hi - 1;
    if ((err = rd_kafka_assign(rk, parts)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = azc_err_set(e, AZC_ERROR, "kafka assign %s: %s", topic, rd_kafka_err2str(err));
        goto out;
    }
    for (;;) {
        int64_t left = deadline - mono_ms();
        rd_kafka_message_t *m;

        if (left <= 0) {
            why_suffix(&t, why, sizeof why);
            rc = azc_err_set(e, AZC_EUNAVAIL, "cannot read the last message of topic %s at %s"
                             " (offset %" PRId64 ") in time%s", topic, bootstrap, hi - 1, why);
            break;
        }
        m = rd_kafka_consumer_poll(rk, (int)left);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->offset == hi - 1) {
            out->offset = m->offset;
            parse_tail(m->payload, m->len, out);
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* EOF before the message: it was removed (retention) meanwhile. */
            rc = azc_err_set(e, AZC_EUNAVAIL, "reading offset %" PRId64 " of topic %s: %s",
                             hi - 1, topic, rd_kafka_err2str(m->err));
            rd_kafka_message_destroy(m);
            break;
        }
        rd_kafka_message_destroy(m);
    }
out:
    if (parts != NULL)
        rd_kafka_topic_partition_list_destroy(parts);
    /* No group was joined and nothing committed: closing is quick. */
    if (rd_kafka_consumer_close(rk) != RD_KAFKA_RESP_ERR_NO_ERROR && lg != NULL)
        azc_logf(lg, AZC_LOG_DEBUG, "tail: kafka consumer close failed");
    rd_kafka_destroy(rk);
    pthread_mutex_destroy(&t.lock);
    return rc;
}

int id_origin_read(PGconn *c, id_origin *o, azc_err *e)
{
    PGresult *r = NULL;
    int rc;

    if ((rc = azc_pg_query(c, SQL_ORIGIN, 0, NULL, &r, e)) != AZC_OK)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return azc_err_set(e, AZC_ERROR, "identity.outbox_state has no row");
    }
    o->epoch = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    o->epoch_start_seq = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    o->last_seq = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
    o->last_hlc = strtoull(PQgetvalue(r, 0, 3), NULL, 10);
    PQclear(r);
    return AZC_OK;
}

int id_tail_check(PGconn *c, const id_tail *t, id_origin *o, azc_err *why)
{
    char seq_s[24];
    const char *p[1] = { seq_s };
    PGresult *r = NULL;
    int rc;

    if ((rc = id_origin_read(c, o, why)) != AZC_OK)
        return rc;
    if (t->empty)
        return AZC_OK;
    if (t->undecodable)
        return azc_err_set(why, AZC_ECONFLICT, "the topic's last message (offset %" PRId64
                           ") is not an event of this origin: %s", t->offset, t->error);
    if (t->epoch > o->epoch)
        return azc_err_set(why, AZC_ECONFLICT, "the topic is at epoch %" PRIu64 " (seq %" PRIu64
                           ", event %s) but the outbox only at epoch %" PRIu64, t->epoch, t->seq,
                           t->id[0] ? t->id : "-", o->epoch);
    if (t->epoch < o->epoch) {
        if (t->seq >= o->epoch_start_seq)
            return azc_err_set(why, AZC_ECONFLICT, "the topic holds seq %" PRIu64 " of epoch %"
                               PRIu64 " but the outbox's epoch %" PRIu64 " starts at seq %" PRIu64,
                               t->seq, t->epoch, o->epoch, o->epoch_start_seq);
        return AZC_OK;
    }
    if (t->seq > o->last_seq)
        return azc_err_set(why, AZC_ECONFLICT, "the topic holds seq %" PRIu64 " (event %s) but the"
                           " outbox ends at seq %" PRIu64 " (epoch %" PRIu64 ")", t->seq,
                           t->id[0] ? t->id : "-", o->last_seq, o->epoch);
    if (t->seq == 0 || t->id[0] == '\0')
        return AZC_OK;   /* a heartbeat naming no event: the seq is all there is */
    snprintf(seq_s, sizeof seq_s, "%" PRIu64, t->seq);
    if ((rc = azc_pg_query(c, SQL_ROW_ID, 1, p, &r, why)) != AZC_OK)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return azc_err_set(why, AZC_ECONFLICT, "the topic holds seq %" PRIu64 " (event %s) but the"
                           " outbox has no row at that seq", t->seq, t->id);
    }
    if (strcmp(PQgetvalue(r, 0, 0), t->id) != 0) {
        rc = azc_err_set(why, AZC_ECONFLICT, "seq %" PRIu64 " is event %s in the topic but event"
                         " %s in the outbox", t->seq, t->id, PQgetvalue(r, 0, 0));
        PQclear(r);
        return rc;
    }
    PQclear(r);
    return AZC_OK;
}
