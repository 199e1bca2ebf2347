/*
 * Outbox relay; see relay.h for what it guarantees.
 *
 * Why no message timeout: librdkafka's idempotent producer keeps order and
 * has no gaps as long as no message fails for good. A message that times
 * out (message.timeout.ms) fails for good while later ones may still be
 * delivered, which is a gap. So messages never time out
 * (message.timeout.ms=0): while the broker is down they wait, the relay
 * stops reading more once max_in_flight are pending, and the API keeps
 * accepting writes into the outbox. A permanent failure (e.g. the topic is
 * gone) rebuilds the producer and resends from the first unacknowledged
 * row: duplicates, never a silent skip.
 *
 * Heartbeats carry an HLC taken under the outbox lock and the last seq
 * assigned, so "heartbeat (seq N, hlc H)" promises that every change up to
 * seq N has been sent before it and every later change has an HLC above H.
 * The relay only emits one after producing everything up to N. It also
 * names the event at seq N (data.last_id), so the tail check below can
 * tell "the topic ends where the outbox says" from "the topic ends at a
 * seq the outbox reused for another event".
 *
 * Tail check (tail.h): before a session produces anything, and again after
 * every producer rebuild and after losing every broker, the relay reads the topic's last message and
 * compares it with the outbox. If Kafka holds events the database does not
 * (commits lost at the origin), publishing on would hand their seqs to new
 * events that consumers drop as duplicates; so the relay publishes nothing,
 * says so (log, /readyz, identity_relay_diverged), re-checks about once a
 * second and on NOTIFY, and resumes once `authz-identity resync` has
 * started a new epoch above the tail. When Kafka cannot be read the relay
 * waits too: unverified is not the same as agreed.
 *
 * The loop waits in poll(2) on three descriptors: the PostgreSQL socket
 * (NOTIFY of a new outbox row), a pipe librdkafka writes when a delivery
 * report is queued, and a stop pipe. No periodic polling of the table.
 */
#define _GNU_SOURCE   /* pipe2 */
#include "identity/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>

#include "common/event.h"
#include "common/hlc.h"
#include "common/pg.h"
#include "common/uuid.h"
#include "identity/outbox.h"
#include "identity/tail.h"

/* A different key from the outbox lock: held for the relay's lifetime. */
#define RELAY_LEADER_KEY "7018141740238694741"   /* "identity-relay" hashed once */

static const char SQL_TRY_LEAD[] = "SELECT pg_try_advisory_lock($1::bigint)";
static const char SQL_LISTEN[] = "LISTEN " ID_OUTBOX_CHANNEL;
/* Superseded rows (older epoch, never published, replaced by a resync's
 * state) are never sent. */
static const char SQL_START[] =
    "SELECT coalesce((SELECT min(seq) - 1 FROM identity.outbox"
    "                  WHERE published_at IS NULL AND NOT superseded),"
    "                (SELECT last_seq FROM identity.outbox_state))";
static const char SQL_FETCH[] =
    "SELECT seq, payload FROM identity.outbox WHERE seq > $1::bigint AND NOT superseded"
    " ORDER BY seq LIMIT $2::int";
static const char SQL_MARK[] =
    "UPDATE identity.outbox SET published_at = now()"
    " WHERE seq > $1::bigint AND seq <= $2::bigint AND published_at IS NULL AND NOT superseded";
static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock($1::bigint)";
static const char SQL_HEARTBEAT[] =
    "UPDATE identity.outbox_state"
    "   SET last_hlc = greatest(last_hlc + 1,"
    "                           (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16))"
    " RETURNING last_seq, last_hlc, epoch,"
    "           (SELECT event_id FROM identity.outbox o WHERE o.seq = last_seq)";

/* How long one read of the topic's tail may take, and how often a diverged
 * (or unverified) relay looks again. */
#define TAIL_TIMEOUT_MS 3000
#define TAIL_RECHECK_MS 1000
/* NOTIFY wakes a diverged relay early, but a burst of writes must not turn
 * into a burst of Kafka consumers. */
#define TAIL_MIN_GAP_MS 200

struct id_relay {
    char *pg_url, *topic, *origin;
    const azc_kafka_conn *kafka; /* borrowed (id_relay_config) */
    int heartbeat_ms, max_in_flight;
    azc_log *log;
    azc_metric *m_published, *m_heartbeats, *m_errors, *m_pending, *m_diverged, *m_checks;

    pthread_t thread;
    int started;
    int stop_pipe[2];
    atomic_int active;
    pthread_mutex_t lock;       /* guards diverged and why */
    int lock_ready;
    int diverged;
    char why[AZC_ERRMSG_MAX];

    /* Owned by the relay thread only. */
    PGconn *pg;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    int dr_pipe[2];
    uint64_t produced;    /* highest seq handed to the producer */
    uint64_t acked;       /* highest seq with a successful delivery report */
    uint64_t marked;      /* highest seq marked published in the table */
    int hb_in_flight;
    int failed;           /* a delivery failed: rebuild the producer */
    int recheck;          /* every broker was down: check the tail again */
};

static void count(azc_metric *m, double v)
{
    if (m != NULL && azc_metric_inc(m, NULL, v) != AZC_OK)
        return;
}

static void set_pending(id_relay *r)
{
    if (r->m_pending != NULL &&
        azc_metric_set(r->m_pending, NULL, (double)(r->produced - r->acked)) != AZC_OK)
        return;
}

id_relay *id_relay_new(const id_relay_config *cfg, azc_err *e)
{
    id_relay *r = calloc(1, sizeof *r);

    if (r == NULL) {
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    r->stop_pipe[0] = r->stop_pipe[1] = r->dr_pipe[0] = r->dr_pipe[1] = -1;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        azc_err_set(e, AZC_ERROR, "relay: cannot create a mutex");
        return NULL;
    }
    r->lock_ready = 1;
    r->pg_url = strdup(cfg->pg_url);
    r->kafka = cfg->kafka;
    r->topic = strdup(cfg->topic);
    r->origin = strdup(cfg->origin);
    if (r->pg_url == NULL || r->topic == NULL || r->origin == NULL) {
        id_relay_free(r);
        azc_err_set(e, AZC_ENOMEM, "out of memory");
        return NULL;
    }
    r->heartbeat_ms = cfg->heartbeat_ms > 0 ? cfg->heartbeat_ms : 200;
    r->max_in_flight = cfg->max_in_flight > 0 ? cfg->max_in_flight : 1000;
    r->log = cfg->log;
    if (cfg->metrics != NULL) {
        r->m_published = azc_metrics_counter(cfg->metrics, "identity_relay_published_total",
                                             "Outbox events acknowledged by Kafka.", NULL);
        r->m_heartbeats = azc_metrics_counter(cfg->metrics, "identity_relay_heartbeats_total",
                                              "Heartbeat events acknowledged by Kafka.", NULL);
        r->m_errors = azc_metrics_counter(cfg->metrics, "identity_relay_errors_total",
                                          "Relay failures (database, Kafka delivery).", NULL);
        r->m_pending = azc_metrics_gauge(cfg->metrics, "identity_relay_in_flight",
                                         "Events handed to Kafka and not yet acknowledged.", NULL);
        r->m_diverged = azc_metrics_gauge(cfg->metrics, "identity_relay_diverged",
                                          "1 while the topic holds events the outbox does not "
                                          "and the relay publishes nothing.", NULL);
        r->m_checks = azc_metrics_counter(cfg->metrics, "identity_relay_tail_checks_total",
                                          "Comparisons of the topic's tail with the outbox.", NULL);
        if (r->m_diverged != NULL && azc_metric_set(r->m_diverged, NULL, 0) != AZC_OK)
            r->m_diverged = NULL;
    }
    if (pipe2(r->stop_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        azc_err_set(e, AZC_ERROR, "relay: pipe: %s", strerror(errno));
        id_relay_free(r);
        return NULL;
    }
    return r;
}

int id_relay_active(id_relay *r)
{
    return r != NULL && atomic_load(&r->active);
}

int id_relay_diverged(id_relay *r, char *why, size_t size)
{
    int d;

    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->lock);
    d = r->diverged;
    if (d && why != NULL && size > 0)
        snprintf(why, size, "%s", r->why);
    pthread_mutex_unlock(&r->lock);
    return d;
}

/* Records the outcome of a tail check; `why` NULL means they agree.
 * Returns 1 when the state or the reason changed (worth a log line). */
static int set_diverged(id_relay *r, const char *why)
{
    int changed;

    pthread_mutex_lock(&r->lock);
    changed = (why != NULL) != r->diverged || (why != NULL && strcmp(why, r->why) != 0);
    r->diverged = why != NULL;
    snprintf(r->why, sizeof r->why, "%s", why != NULL ? why : "");
    pthread_mutex_unlock(&r->lock);
    if (r->m_diverged != NULL && azc_metric_set(r->m_diverged, NULL, why != NULL) != AZC_OK)
        azc_logf(r->log, AZC_LOG_DEBUG, "relay: cannot set identity_relay_diverged");
    return changed;
}

static int stopping(id_relay *r)
{
    struct pollfd p = { r->stop_pipe[0], POLLIN, 0 };

    return poll(&p, 1, 0) > 0;
}

/* Sleeps up to ms, returning early (1) when asked to stop. */
static int wait_stop(id_relay *r, int ms)
{
    struct pollfd p = { r->stop_pipe[0], POLLIN, 0 };

    return poll(&p, 1, ms) > 0;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    id_relay *r = opaque;
    uint64_t seq = (uint64_t)(uintptr_t)m->_private;
    (void)rk;

    if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
        return;                /* our own purge while rebuilding: resent later */
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        azc_logf(r->log, AZC_LOG_ERROR, "relay: delivery of seq %" PRIu64 " failed: %s", seq,
                 rd_kafka_err2str(m->err));
        count(r->m_errors, 1);
        r->failed = 1;
        return;
    }
    if (seq == 0) {            /* heartbeat */
        r->hb_in_flight = 0;
        count(r->m_heartbeats, 1);
        return;
    }
    /* The idempotent producer reports in order; anything else would be a
     * bug worth a loud line, and acked only ever moves forward. */
    if (seq <= r->acked && !r->failed)
        azc_logf(r->log, AZC_LOG_ERROR, "relay: delivery report for seq %" PRIu64
                 " after %" PRIu64 "", seq, r->acked);
    if (seq > r->acked)
        r->acked = seq;
    count(r->m_published, 1);
}

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    id_relay *r = opaque;
    char fatal[256];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof fatal);
        azc_logf(r->log, AZC_LOG_ERROR, "relay: kafka fatal error: %s", fatal);
        r->failed = 1;
        count(r->m_errors, 1);
        return;
    }
    /* Transient (broker down, ...): librdkafka retries by itself. After
     * losing every broker the topic may have changed under us (another
     * history written meanwhile): check its tail before going on. */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        r->recheck = 1;
    azc_logf(r->log, AZC_LOG_WARN, "relay: kafka: %s", reason);
}

/* librdkafka's own log lines go to the JSON log, not raw to stderr. */
static void on_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    id_relay *r = rd_kafka_opaque(rk);

    azc_logf(r->log, level <= 3 ? AZC_LOG_ERROR : level <= 4 ? AZC_LOG_WARN : AZC_LOG_DEBUG,
             "relay: kafka %s: %s", fac, buf);
}

static void close_producer(id_relay *r)
{
    if (r->rk != NULL) {
        rd_kafka_queue_t *q = rd_kafka_queue_get_main(r->rk);
        rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
        rd_kafka_queue_destroy(q);
        /* Drop what is still queued: it is resent from the table. */
        rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(r->rk, 0);
    }
    if (r->rkt != NULL)
        rd_kafka_topic_destroy(r->rkt);
    if (r->rk != NULL)
        rd_kafka_destroy(r->rk);
    r->rk = NULL;
    r->rkt = NULL;
    if (r->dr_pipe[0] >= 0)
        close(r->dr_pipe[0]);
    if (r->dr_pipe[1] >= 0)
        close(r->dr_pipe[1]);
    r->dr_pipe[0] = r->dr_pipe[1] = -1;
}

static int open_producer(id_relay *r, azc_err *e)
{
    static const char *const settings[][2] = {
        { "enable.idempotence", "true" },
        { "acks", "all" },
        { "linger.ms", "0" },
        { "message.timeout.ms", "0" },        /* never: see the file comment */
        { "socket.nagle.disable", "true" },
        { "reconnect.backoff.ms", "50" },
        { "reconnect.backoff.max.ms", "1000" },
    };
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_queue_t *q;
    size_t i;

    if (conf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (azc_kafka_conn_apply(r->kafka, conf, e) != AZC_OK) {
        rd_kafka_conf_destroy(conf);
        return azc_err_set(e, AZC_EINVAL, "relay: %s", e->msg);
    }
    for (i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            return azc_err_set(e, AZC_ERROR, "relay: kafka %s: %s", settings[i][0], err);
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_kafka_error);
    rd_kafka_conf_set_log_cb(conf, on_kafka_log);
    rd_kafka_conf_set_opaque(conf, r);
    r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (r->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return azc_err_set(e, AZC_ERROR, "relay: kafka producer: %s", err);
    }
    r->rkt = rd_kafka_topic_new(r->rk, r->topic, NULL);
    if (r->rkt == NULL) {
        close_producer(r);
        return azc_err_set(e, AZC_ERROR, "relay: kafka topic %s: %s", r->topic,
                           rd_kafka_err2str(rd_kafka_last_error()));
    }
    if (pipe2(r->dr_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        close_producer(r);
        return azc_err_set(e, AZC_ERROR, "relay: pipe: %s", strerror(errno));
    }
    q = rd_kafka_queue_get_main(r->rk);
    rd_kafka_queue_io_event_enable(q, r->dr_pipe[1], "1", 1);
    rd_kafka_queue_destroy(q);
    r->failed = 0;
    r->recheck = 0;
    r->hb_in_flight = 0;
    return AZC_OK;
}

static int produce(id_relay *r, const char *payload, size_t len, uint64_t seq, azc_err *e)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            r->rk, RD_KAFKA_V_RKT(r->rkt), RD_KAFKA_V_PARTITION(0),
            RD_KAFKA_V_KEY(r->origin, strlen(r->origin)),
            RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)seq), RD_KAFKA_V_END);

        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return AZC_OK;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return azc_err_set(e, AZC_ERROR, "relay: produce seq %" PRIu64 ": %s", seq,
                               rd_kafka_err2str(err));
        rd_kafka_poll(r->rk, 10);
        if (stopping(r))
            return azc_err_set(e, AZC_EUNAVAIL, "relay: stopping");
    }
}

/* Marks every acknowledged row published, in one statement. */
static int mark(id_relay *r, azc_err *e)
{
    char from[24], to[24];
    const char *p[2] = { from, to };
    int rc;

    if (r->acked <= r->marked)
        return AZC_OK;
    snprintf(from, sizeof from, "%" PRIu64, r->marked);
    snprintf(to, sizeof to, "%" PRIu64, r->acked);
    rc = azc_pg_query(r->pg, SQL_MARK, 2, p, NULL, e);
    if (rc == AZC_OK)
        r->marked = r->acked;
    return rc;
}

/* The one place seqs may jump: to the first seq of the current epoch,
 * which a resync put above the topic's tail. Anything else is a gap. */
static int epoch_jump(id_relay *r, uint64_t seq, azc_err *e)
{
    id_origin o;
    int rc;

    if ((rc = id_origin_read(r->pg, &o, e)) != AZC_OK)
        return rc;
    if (seq != o.epoch_start_seq || seq <= r->produced)
        return azc_err_set(e, AZC_ERROR, "relay: outbox gap: expected seq %" PRIu64
                           ", found %" PRIu64, r->produced + 1, seq);
    azc_logf(r->log, AZC_LOG_INFO, "relay: epoch %" PRIu64 " starts at seq %" PRIu64
             " (after seq %" PRIu64 ")", o.epoch, seq, r->produced);
    return AZC_OK;
}

/* Produces committed rows after r->produced, up to the in-flight cap. */
static int fill(id_relay *r, int *did, azc_err *e)
{
    char after[24], limit[16];
    const char *p[2] = { after, limit };
    PGresult *res = NULL;
    int room = r->max_in_flight - (int)(r->produced - r->acked), i, n, rc;

    *did = 0;
    if (room <= 0)
        return AZC_OK;
    snprintf(after, sizeof after, "%" PRIu64, r->produced);
    snprintf(limit, sizeof limit, "%d", room);
    if ((rc = azc_pg_query(r->pg, SQL_FETCH, 2, p, &res, e)) != AZC_OK)
        return rc;
    n = PQntuples(res);
    for (i = 0; i < n; i++) {
        uint64_t seq = strtoull(PQgetvalue(res, i, 0), NULL, 10);

        if (seq != r->produced + 1 && (rc = epoch_jump(r, seq, e)) != AZC_OK) {
            PQclear(res);
            return rc;
        }
        if ((rc = produce(r, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), seq, e)) !=
            AZC_OK) {
            PQclear(res);
            return rc;
        }
        r->produced = seq;
    }
    PQclear(res);
    *did = n;
    set_pending(r);
    return AZC_OK;
}

/* Takes a heartbeat HLC under the outbox lock and produces it, unless
 * committed rows are still unsent (then those go first). */
static int heartbeat(id_relay *r, int *sent, azc_err *e)
{
    char key[24];
    const char *p[1] = { key };
    PGresult *res = NULL;
    azc_event ev;
    uint64_t last_seq;
    char last_id[AZC_UUID_LEN] = "";
    char *text = NULL;
    size_t len;
    int rc;

    *sent = 0;
    snprintf(key, sizeof key, "%lld", (long long)ID_OUTBOX_LOCK_KEY);
    if ((rc = azc_pg_begin(r->pg, e)) != AZC_OK)
        return rc;
    if ((rc = azc_pg_query(r->pg, SQL_LOCK, 1, p, NULL, e)) != AZC_OK ||
        (rc = azc_pg_query(r->pg, SQL_HEARTBEAT, 0, NULL, &res, e)) != AZC_OK) {
        azc_pg_rollback(r->pg);
        return rc;
    }
    if ((rc = azc_pg_commit(r->pg, e)) != AZC_OK) {
        PQclear(res);
        return rc;
    }
    memset(&ev, 0, sizeof ev);
    last_seq = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    ev.hlc = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    ev.epoch = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
    if (!PQgetisnull(res, 0, 3))
        snprintf(last_id, sizeof last_id, "%s", PQgetvalue(res, 0, 3));
    PQclear(res);
    if (last_seq > r->produced)
        return AZC_OK;         /* rows committed meanwhile: send them first */
    ev.version = AZC_EVENT_VERSION;
    if (azc_uuid_new(ev.id) != AZC_OK)
        return azc_err_set(e, AZC_ERROR, "relay: random generator failed");
    ev.type = AZC_EV_HEARTBEAT;
    snprintf(ev.origin, sizeof ev.origin, "%s", r->origin);
    ev.seq = last_seq;
    /* Omitted when there is no such row (seq 0, or a row that is gone). */
    if (last_seq > 0 && last_id[0] != '\0') {
        ev.data = json_pack("{s:s}", "last_id", last_id);
        if (ev.data == NULL)
            return azc_err_set(e, AZC_ENOMEM, "relay: out of memory");
    }
    rc = azc_event_encode(&ev, &text, &len, e);
    json_decref(ev.data);
    if (rc != AZC_OK)
        return rc;
    rc = produce(r, text, len, 0, e);
    free(text);
    if (rc == AZC_OK) {
        r->hb_in_flight = 1;
        *sent = 1;
    }
    return rc;
}

static void drain(int fd)
{
    char buf[256];

    while (fd >= 0 && read(fd, buf, sizeof buf) > 0)
        ;
}

static uint64_t now_ms(void)
{
    return azc_wall_ms();
}

/* Where to resume: after the last row published (or superseded). */
static int read_start(id_relay *r, azc_err *e)
{
    PGresult *res = NULL;
    int rc;

    if ((rc = azc_pg_query(r->pg, SQL_START, 0, NULL, &res, e)) != AZC_OK)
        return rc;
    r->produced = r->acked = r->marked = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return AZC_OK;
}

/* Reads what the database sent: notifications are only wake-ups (the
 * table is read next), so they are dropped. */
static int drain_notifies(id_relay *r, azc_err *e)
{
    PGnotify *n;

    if (!PQconsumeInput(r->pg))
        return azc_err_set(e, AZC_EUNAVAIL, "relay: database link lost: %s",
                           PQerrorMessage(r->pg));
    while ((n = PQnotifies(r->pg)) != NULL)
        PQfreemem(n);
    return AZC_OK;
}

/* Waits up to ms for a NOTIFY or a stop. AZC_EUNAVAIL on stop or when the
 * database link is lost. */
static int wait_notify(id_relay *r, int ms, azc_err *e)
{
    struct pollfd fds[2] = { { PQsocket(r->pg), POLLIN, 0 }, { r->stop_pipe[0], POLLIN, 0 } };

    if (poll(fds, 2, ms) < 0 && errno != EINTR)
        return azc_err_set(e, AZC_ERROR, "relay: poll: %s", strerror(errno));
    if (fds[1].revents)
        return azc_err_set(e, AZC_EUNAVAIL, "relay: stopping");
    if (fds[0].revents)
        return drain_notifies(r, e);
    return AZC_OK;
}

/*
 * Compares the topic's tail with the outbox until they agree (tail.h).
 * Nothing has been produced in this session or since the last rebuild
 * when it runs, so holding here publishes nothing. After a divergence
 * ends (a resync), the resume point is read again: the new epoch starts
 * above rows that will never be sent.
 */
static int verify_tail(id_relay *r, azc_err *e)
{
    int was_diverged = 0, warned = 0, rc;
    uint64_t checked;

    for (;;) {
        id_tail t;
        id_origin o;
        azc_err why;

        azc_err_clear(&why);
        count(r->m_checks, 1);
        rc = id_tail_read(r->kafka, r->topic, TAIL_TIMEOUT_MS, r->log, &t, &why);
        if (rc == AZC_OK) {
            rc = id_tail_check(r->pg, &t, &o, &why);
            if (rc == AZC_OK) {
                if (set_diverged(r, NULL) || was_diverged) {
                    azc_logf(r->log, AZC_LOG_INFO, "relay: the topic's tail agrees with the outbox"
                             " again (epoch %" PRIu64 " from seq %" PRIu64 "); publishing",
                             o.epoch, o.epoch_start_seq);
                    if ((rc = read_start(r, e)) != AZC_OK)
                        return rc;
                }
                return AZC_OK;
            }
            if (rc != AZC_ECONFLICT) {
                *e = why;
                return rc;
            }
            was_diverged = 1;
            if (set_diverged(r, why.msg)) {
                char msg[AZC_ERRMSG_MAX + 160];
                json_t *f = json_pack("{s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:s}", "topic",
                                      r->topic, "topic_epoch", (json_int_t)t.epoch, "topic_seq",
                                      (json_int_t)t.seq, "topic_event", t.id, "outbox_epoch",
                                      (json_int_t)o.epoch, "outbox_last_seq",
                                      (json_int_t)o.last_seq, "outbox_epoch_start_seq",
                                      (json_int_t)o.epoch_start_seq, "repair",
                                      "authz-identity resync --config FILE");
                snprintf(msg, sizeof msg, "relay: diverged from the topic, publishing nothing: "
                         "%s; repair: authz-identity resync --config FILE (docs/identity.md)",
                         why.msg);
                azc_log_write(r->log, AZC_LOG_ERROR, NULL, f, msg);
                json_decref(f);
            }
        } else if (!warned++) {
            azc_logf(r->log, AZC_LOG_WARN, "relay: cannot check the topic's tail, publishing"
                     " nothing until it can: %s", why.msg);
        }
        checked = now_ms();
        if ((rc = wait_notify(r, TAIL_RECHECK_MS, e)) != AZC_OK)
            return rc;
        if (now_ms() < checked + TAIL_MIN_GAP_MS &&
            wait_stop(r, (int)(checked + TAIL_MIN_GAP_MS - now_ms())))
            return azc_err_set(e, AZC_EUNAVAIL, "relay: stopping");
    }
}

/* Connects, becomes the active relay, starts listening, reads where to
 * resume. Returns AZC_EUNAVAIL when asked to stop meanwhile. */
static int session_open(id_relay *r, azc_err *e)
{
    const char *p[1] = { RELAY_LEADER_KEY };
    PGresult *res = NULL;
    int rc, logged = 0;

    for (;;) {
        if (stopping(r))
            return azc_err_set(e, AZC_EUNAVAIL, "relay: stopping");
        rc = azc_pg_connect(r->pg_url, "authz-identity-relay", 2000, r->log, &r->pg, e);
        if (rc != AZC_OK) {
            if (rc == AZC_EINVAL)
                return rc;
            azc_logf(r->log, AZC_LOG_WARN, "relay: %s", e->msg);
            wait_stop(r, 500);
            continue;
        }
        if ((rc = azc_pg_query(r->pg, SQL_TRY_LEAD, 1, p, &res, e)) != AZC_OK)
            goto retry;
        if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            PQclear(res);
            if (!logged++)
                azc_logf(r->log, AZC_LOG_INFO, "relay: another relay is active; standing by");
            PQfinish(r->pg);
            r->pg = NULL;
            if (wait_stop(r, 1000))
                return azc_err_set(e, AZC_EUNAVAIL, "relay: stopping");
            continue;
        }
        PQclear(res);
        res = NULL;
        if ((rc = azc_pg_query(r->pg, SQL_LISTEN, 0, NULL, NULL, e)) != AZC_OK ||
            (rc = read_start(r, e)) != AZC_OK)
            goto retry;
        if (PQsetnonblocking(r->pg, 0) != 0)
            goto retry;
        azc_logf(r->log, AZC_LOG_INFO, "relay: active; resuming after seq %" PRIu64, r->produced);
        return AZC_OK;
retry:
        azc_logf(r->log, AZC_LOG_WARN, "relay: %s", e->msg);
        PQfinish(r->pg);
        r->pg = NULL;
        wait_stop(r, 500);
    }
}

/* One connected session: returns when the link breaks or on stop. */
static int session_run(id_relay *r, azc_err *e)
{
    uint64_t next_hb = 0;
    int rc;

    if ((rc = open_producer(r, e)) != AZC_OK)
        return rc;
    atomic_store(&r->active, 1);
    if ((rc = verify_tail(r, e)) != AZC_OK)
        return rc;
    for (;;) {
        struct pollfd fds[3];
        int did = 0, sent = 0, timeout;
        uint64_t now;

        rd_kafka_poll(r->rk, 0);
        drain(r->dr_pipe[0]);
        if (r->failed) {
            /* Rebuild and resend from the first unacknowledged row. */
            close_producer(r);
            r->produced = r->acked;
            set_pending(r);
            if (wait_stop(r, 500))
                return azc_err_set(e, AZC_EUNAVAIL, "relay: stopping");
            if ((rc = open_producer(r, e)) != AZC_OK || (rc = verify_tail(r, e)) != AZC_OK)
                return rc;
        }
        /* Only with nothing in flight: then the tail must be our last ack. */
        if (r->recheck && r->produced == r->acked && !r->hb_in_flight) {
            r->recheck = 0;
            if ((rc = mark(r, e)) != AZC_OK || (rc = verify_tail(r, e)) != AZC_OK)
                return rc;
        }
        if ((rc = mark(r, e)) != AZC_OK || (rc = fill(r, &did, e)) != AZC_OK)
            return rc;
        now = now_ms();
        if (r->produced == r->acked && !r->hb_in_flight && now >= next_hb) {
            if ((rc = heartbeat(r, &sent, e)) != AZC_OK)
                return rc;
            if (sent)
                next_hb = now + (uint64_t)r->heartbeat_ms;
            else
                continue;       /* rows arrived: produce them first */
        }
        if (did)
            continue;           /* more rows may be waiting */
        if (stopping(r))
            return AZC_OK;
        fds[0] = (struct pollfd){ PQsocket(r->pg), POLLIN, 0 };
        fds[1] = (struct pollfd){ r->dr_pipe[0], POLLIN, 0 };
        fds[2] = (struct pollfd){ r->stop_pipe[0], POLLIN, 0 };
        now = now_ms();
        timeout = next_hb > now ? (int)(next_hb - now) : r->heartbeat_ms;
        if (r->produced != r->acked || r->hb_in_flight)
            timeout = timeout < 100 ? timeout : 100;
        if (poll(fds, 3, timeout) < 0 && errno != EINTR)
            return azc_err_set(e, AZC_ERROR, "relay: poll: %s", strerror(errno));
        if (fds[2].revents)
            return AZC_OK;
        if (fds[0].revents && (rc = drain_notifies(r, e)) != AZC_OK)
            return rc;
    }
}

/* On stop: give in-flight messages a bounded time, mark what was acked. */
static void session_finish(id_relay *r)
{
    uint64_t deadline = now_ms() + 5000;
    azc_err e;

    while (r->rk != NULL && (r->produced > r->acked || r->hb_in_flight) && !r->failed &&
           now_ms() < deadline)
        rd_kafka_poll(r->rk, 50);
    if (r->pg != NULL && PQstatus(r->pg) == CONNECTION_OK && mark(r, &e) != AZC_OK)
        azc_logf(r->log, AZC_LOG_WARN, "relay: final mark: %s", e.msg);
}

static void *relay_main(void *arg)
{
    id_relay *r = arg;
    azc_err e;

    while (!stopping(r)) {
        azc_err_clear(&e);
        if (session_open(r, &e) != AZC_OK) {
            if (!stopping(r))
                azc_logf(r->log, AZC_LOG_ERROR, "relay: %s", e.msg);
            break;
        }
        if (session_run(r, &e) != AZC_OK && !stopping(r)) {
            azc_logf(r->log, AZC_LOG_ERROR, "relay: %s; restarting session", e.msg);
            count(r->m_errors, 1);
        }
        atomic_store(&r->active, 0);
        session_finish(r);
        close_producer(r);
        PQfinish(r->pg);
        r->pg = NULL;
        if (!stopping(r))
            wait_stop(r, 200);
    }
    return NULL;
}

int id_relay_start(id_relay *r, azc_err *e)
{
    int rc = pthread_create(&r->thread, NULL, relay_main, r);

    if (rc != 0)
        return azc_err_set(e, AZC_ERROR, "relay: cannot start thread: %s", strerror(rc));
    r->started = 1;
    return AZC_OK;
}

void id_relay_free(id_relay *r)
{
    if (r == NULL)
        return;
    if (r->started) {
        if (write(r->stop_pipe[1], "x", 1) != 1)
            azc_logf(r->log, AZC_LOG_ERROR, "relay: cannot signal stop");
        pthread_join(r->thread, NULL);
    }
    if (r->stop_pipe[0] >= 0)
        close(r->stop_pipe[0]);
    if (r->stop_pipe[1] >= 0)
        close(r->stop_pipe[1]);
    free(r->pg_url);
    free(r->topic);
    free(r->origin);
    if (r->lock_ready)
        pthread_mutex_destroy(&r->lock);
    free(r);
}
