/*
 * authz-server: the regional authorization service. Consumes the region's
 * identity events into policies, answers checks, and feeds gateway
 * filters (snapshot and change feed).
 *
 * Wiring only (the process itself is common/runner.c's): settings,
 * metrics, migrations, the consumer thread, and the HTTP workers (one
 * event loop, HTTP server and database link each, sharing the port
 * through SO_REUSEPORT).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "authz/api.h"
#include "authz/tick.h"
#include "authz/consumer.h"
#include "authz/feed.h"
#include "authz/status.h"
#include "common/config.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "common/runner.h"

#define MAX_WORKERS 16

static const azc_config_key KNOWN[] = {
    { "service", "region" },      { "service", "regions" },
    { "http", "addr" },           { "http", "port" },
    { "http", "workers" },        { "pg", "url" },
    { "pg", "migrations_dir" },   { "kafka", "bootstrap" },
    { "kafka", "topic" },         { "consumer", "batch" },
    { "consumer", "applied_ids_retain" }, { "consumer", "stall_ms" },
    { "check", "transient_lag_ms" }, { "check", "heartbeat_ms" },
    { "check", "silence_heartbeats" }, { "check", "clock_tolerance_ms" },
    { "feed", "retain" },
    { "feed", "prune_interval_ms" }, { "feed", "prune_batch" },
    { "snapshot", "max_concurrent" }, { "log", "level" },
};

typedef struct app {
    const azc_config *cfg;
    az_shared sh;
    const char *migrations_dir;
    char topic_buf[64];
    az_worker workers[MAX_WORKERS];
    int nworkers;
    az_consumer *consumer;
    int bound_port;
    int status_lock_made;
} app;

static int load_settings(app *a, azc_err *e)
{
    az_settings *s = &a->sh.set;
    const char *level = NULL;
    long long port, workers, batch;
    azc_log_level lvl;
    int rc;

    if ((rc = azc_config_check(a->cfg, KNOWN, sizeof KNOWN / sizeof KNOWN[0], e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "log", "level", "info", &level, e)) != AZC_OK ||
        (rc = azc_log_level_parse(level, &lvl, e)) != AZC_OK ||
        (rc = azc_config_regions(a->cfg, &s->region, &s->regions[0][0], sizeof s->regions[0],
                                 AZ_MAX_REGIONS, &s->nregions, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "pg", "url", NULL, &s->pg_url, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "pg", "migrations_dir", AUTHZ_SQL_DIR "/authz",
                                    &a->migrations_dir, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "kafka", "bootstrap", NULL, &s->bootstrap, e)) !=
            AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "kafka", "topic", NULL, &s->topic, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "http", "addr", "127.0.0.1", &s->http_addr, e)) !=
            AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "http", "port", 8081, 0, 65535, &port, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "http", "workers", 2, 1, MAX_WORKERS, &workers, e)) !=
            AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "consumer", "batch", 500, 1, 10000, &batch, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "consumer", "applied_ids_retain", 1000000, 1,
                                 1000000000LL, &s->applied_ids_retain, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "consumer", "stall_ms", 5000, 100, 3600 * 1000,
                                 &s->stall_ms, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "check", "transient_lag_ms", 0, 0, 3600 * 1000,
                                 &s->transient_lag_ms, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "check", "heartbeat_ms", 200, 10, 60000,
                                 &s->heartbeat_ms, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "check", "silence_heartbeats", 5, 1, 1000,
                                 &s->silence_heartbeats, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "check", "clock_tolerance_ms", 1000, 0, 3600 * 1000,
                                 &s->clock_tolerance_ms, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "feed", "retain", 1000000, 10, 1000000000LL,
                                 &s->feed_retain, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "feed", "prune_interval_ms", 10000, 100, 86400 * 1000,
                                 &s->prune_interval_ms, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "feed", "prune_batch", 10000, 1, 1000000,
                                 &s->prune_batch, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "snapshot", "max_concurrent", 4, 1, 1000,
                                 &s->snapshot_max, e)) != AZC_OK)
        return rc;
    azc_log_set_level(a->sh.log, lvl);
    s->http_port = (int)port;
    s->workers = (int)workers;
    s->batch = (int)batch;
    if (s->pg_url == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: pg.url must be set");
    if (s->bootstrap == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.bootstrap must be set");
    if (s->topic == NULL) {
        snprintf(a->topic_buf, sizeof a->topic_buf, "identity-events.%s", s->region);
        s->topic = a->topic_buf;
    }
    return AZC_OK;
}

/* Keeps w->pg the link's connection while it is up, NULL while down. */
static void on_db_state(azc_pg_link *l, int up, void *arg)
{
    az_worker *w = arg;

    w->pg = up ? azc_pg_link_conn(l) : NULL;
}

static int worker_init(app *a, az_worker *w, int index, azc_err *e)
{
    azc_http_options opts;
    azc_pg_link_options link_opts;
    int rc;

    memset(&opts, 0, sizeof opts);
    memset(&link_opts, 0, sizeof link_opts);
    w->sh = &a->sh;
    w->index = index;
    w->base = event_base_new();
    if (w->base == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an event loop");
    link_opts.application_name = "authz-server";
    link_opts.statement_timeout_ms = AZ_STATEMENT_TIMEOUT_MS;
    link_opts.on_state = on_db_state;
    link_opts.arg = w;
    if ((w->db = azc_pg_link_new(w->base, a->sh.set.pg_url, &link_opts, a->sh.log, e)) == NULL)
        return AZC_ERROR;
    if ((w->feed = az_feed_new(w, e)) == NULL)
        return AZC_ERROR;
    opts.service = "authz";
    opts.reuse_port = 1;
    w->http = azc_http_new(w->base, &opts, a->sh.log, a->sh.metrics, e);
    if (w->http == NULL)
        return AZC_ERROR;
    if ((rc = az_api_register(w, e)) != AZC_OK)
        return rc;
    azc_http_set_ready_cb(w->http, az_worker_ready, w);
    if (index == 0) {
        struct timeval tv = { 1, 0 };

        w->tick = event_new(w->base, -1, EV_PERSIST, az_tick_cb, w);
        if (w->tick == NULL || event_add(w->tick, &tv) != 0)
            return azc_err_set(e, AZC_ERROR, "cannot start the tick timer");
    }
    /* Worker 0 picks the port (it may be 0 = ephemeral); the others share it. */
    rc = azc_http_bind(w->http, a->sh.set.http_addr,
                       index == 0 ? a->sh.set.http_port : a->bound_port, e);
    if (rc != AZC_OK)
        return rc;
    if (index == 0)
        a->bound_port = azc_http_bound_port(w->http);
    return AZC_OK;
}

static void worker_free(az_worker *w)
{
    /* The HTTP server first: it closes waiting long polls, whose close
     * callbacks free their waiters in the feed. */
    azc_http_free(w->http);
    az_feed_free(w->feed);
    if (w->tick != NULL)
        event_free(w->tick);
    azc_pg_link_free(w->db);
    if (w->base != NULL)
        event_base_free(w->base);
    memset(w, 0, sizeof *w);
}

static int register_metrics(az_shared *sh, azc_err *e)
{
    static const double batch_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                            0.05,   0.1,   0.25,   0.5,   1,    2.5 };
    static const double age_buckets[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25,  0.5,    1,     2.5,  5,     10,   30 };
    azc_metrics *m = sh->metrics;

    sh->m_applied = azc_metrics_counter(m, "authz_events_applied_total",
                                        "Identity events applied to the policy store, by type.",
                                        (const char *const[]){ "type", NULL });
    sh->m_duplicates = azc_metrics_counter(m, "authz_events_duplicate_total",
                                           "Identity events skipped as already applied.", NULL);
    sh->m_dead = azc_metrics_counter(m, "authz_dead_letters_total",
                                     "Messages moved to the dead-letter table.", NULL);
    sh->m_batch = azc_metrics_histogram(m, "authz_apply_batch_seconds",
                                        "Duration of one consumer transaction.", NULL,
                                        batch_buckets,
                                        sizeof batch_buckets / sizeof batch_buckets[0]);
    sh->m_age = azc_metrics_histogram(m, "authz_event_age_seconds",
                                      "From the commit of a change at its origin to its "
                                      "application here.",
                                      NULL, age_buckets, sizeof age_buckets / sizeof age_buckets[0]);
    sh->m_lag = azc_metrics_gauge(m, "authz_lag_seconds",
                                  "Known minus applied HLC of each origin, in seconds.",
                                  (const char *const[]){ "origin", NULL });
    sh->m_stopped = azc_metrics_gauge(m, "authz_consumer_stopped",
                                      "1 while the consumer is stopped (a gap, a divergence, "
                                      "a failed resync, a dead letter it cannot store, a fatal "
                                      "Kafka error).", NULL);
    sh->m_stalled = azc_metrics_gauge(m, "authz_consumer_stalled",
                                      "1 while the running consumer makes no progress (batches "
                                      "rolling back, or no message) for over consumer.stall_ms.",
                                      NULL);
    sh->m_rollbacks = azc_metrics_counter(m, "authz_consumer_rollbacks_total",
                                          "Consumer transactions rolled back on a database error.",
                                          NULL);
    sh->m_divergences = azc_metrics_counter(m, "authz_consumer_divergences_total",
                                            "Divergences from the origin's history detected.",
                                            NULL);
    sh->m_resyncs = azc_metrics_counter(m, "authz_resyncs_applied_total",
                                        "Resyncs of the origin's state applied.", NULL);
    sh->m_checks = azc_metrics_counter(m, "authz_checks_total", "Checks answered, by decision.",
                                       (const char *const[]){ "decision", NULL });
    sh->m_silence = azc_metrics_gauge(m, "authz_origin_silence_seconds",
                                      "Time since this region last heard from each origin (a "
                                      "heartbeat or an event).",
                                      (const char *const[]){ "origin", NULL });
    if (sh->m_applied == NULL || sh->m_duplicates == NULL || sh->m_dead == NULL ||
        sh->m_batch == NULL || sh->m_age == NULL || sh->m_lag == NULL || sh->m_stopped == NULL ||
        sh->m_checks == NULL || sh->m_silence == NULL || sh->m_stalled == NULL ||
        sh->m_rollbacks == NULL || sh->m_divergences == NULL || sh->m_resyncs == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot register the metrics");
    return AZC_OK;
}

static int configure(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;
    int rc;

    a->cfg = azc_service_config(svc);
    a->sh.log = azc_service_log(svc);
    a->sh.metrics = azc_service_metrics(svc);
    if (pthread_mutex_init(&a->sh.status_lock, NULL) != 0)
        return azc_err_set(e, AZC_ERROR, "cannot create the status lock");
    a->status_lock_made = 1;
    a->sh.status.next_offset = -1;
    atomic_init(&a->sh.snapshots, 0);
    if ((rc = register_metrics(&a->sh, e)) != AZC_OK)
        return rc;
    return load_settings(a, e);
}

static int start(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;
    int i, rc;

    if ((rc = azc_migrate_url(a->sh.set.pg_url, "authz-server-migrate", 30000,
                              a->migrations_dir, "authz", a->sh.log, e)) != AZC_OK)
        return rc;
    if ((a->consumer = az_consumer_new(&a->sh, e)) == NULL ||
        (rc = az_consumer_start(a->consumer, e)) != AZC_OK)
        return AZC_ERROR;
    for (i = 0; i < a->sh.set.workers; i++) {
        if ((rc = worker_init(a, &a->workers[i], i, e)) != AZC_OK)
            return rc;
        a->nworkers++;
        if ((rc = azc_service_add_loop(svc, a->workers[i].base, e)) != AZC_OK)
            return rc;
    }
    return AZC_OK;
}

static json_t *describe(void *arg)
{
    app *a = arg;

    return json_pack("{s:s, s:s, s:i, s:i}", "region", a->sh.set.region, "topic",
                     a->sh.set.topic, "port", a->bound_port, "workers", a->nworkers);
}

static void cleanup(void *arg)
{
    app *a = arg;
    int i;

    /* The consumer finishes (commits or rolls back) its batch first. */
    az_consumer_free(a->consumer);
    for (i = 0; i < MAX_WORKERS; i++)
        worker_free(&a->workers[i]);
    if (a->status_lock_made)
        pthread_mutex_destroy(&a->sh.status_lock);
}

static const azc_service_def SERVICE = {
    .prog = "authz-server",
    .summary = "regional authorization service: identity events to policies, checks, snapshot "
               "and change feed",
    .log_name = "authz",
    .configure = configure,
    .start = start,
    .describe = describe,
    .cleanup = cleanup,
};

int main(int argc, char **argv)
{
    app a;

    memset(&a, 0, sizeof a);
    return azc_service_main(&SERVICE, &a, argc, argv);
}
