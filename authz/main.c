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
    { "pg", "migrations_dir" },   AZC_KAFKA_CONFIG_KEYS,
    { "kafka", "topic" },         { "consumer", "batch" },
    { "consumer", "applied_ids_retain" }, { "consumer", "stall_ms" },
    { "check", "transient_lag_ms" }, { "check", "heartbeat_ms" },
    { "check", "silence_heartbeats" }, { "check", "clock_tolerance_ms" },
    { "feed", "retain" },
    { "feed", "prune_interval_ms" }, { "feed", "prune_batch" },
    { "feed", "stream_keepalive_ms" },
    { "feed", "collect_tombstones" }, { "check", "expect_regions" },
    { "snapshot", "max_concurrent" }, { "log", "level" },
    { "auth", "keys_file" },      { "auth", "issuer" },
    { "auth", "audience" },       { "auth", "required_scope" },
    { "auth", "leeway_secs" },    { "auth", "max_token_lifetime_secs" },
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
    int keys_lock_made;
} app;

/* s->regions as text[] literals: all of them, and all but this region. */
static int region_arrays(az_settings *s, azc_err *e)
{
    size_t i, all = 0, peers = 0;
    int n;

    s->regions_array[all++] = '{';
    s->peers_array[peers++] = '{';
    for (i = 0; i < s->nregions; i++) {
        n = snprintf(s->regions_array + all, sizeof s->regions_array - all, "%s%s",
                     all > 1 ? "," : "", s->regions[i]);
        if (n < 0 || (size_t)n >= sizeof s->regions_array - all)
            return azc_err_set(e, AZC_EINVAL, "configuration: service.regions is too long");
        all += (size_t)n;
        if (strcmp(s->regions[i], s->region) == 0)
            continue;
        n = snprintf(s->peers_array + peers, sizeof s->peers_array - peers, "%s%s",
                     peers > 1 ? "," : "", s->regions[i]);
        if (n < 0 || (size_t)n >= sizeof s->peers_array - peers)
            return azc_err_set(e, AZC_EINVAL, "configuration: service.regions is too long");
        peers += (size_t)n;
    }
    if (all + 2 > sizeof s->regions_array || peers + 2 > sizeof s->peers_array)
        return azc_err_set(e, AZC_EINVAL, "configuration: service.regions is too long");
    memcpy(s->regions_array + all, "}", 2);
    memcpy(s->peers_array + peers, "}", 2);
    return AZC_OK;
}

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
        (rc = azc_kafka_conn_new(a->cfg, &s->kafka, e)) != AZC_OK ||
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
        (rc = azc_config_get_int(a->cfg, "feed", "stream_keepalive_ms",
                                 AZ_FEED_STREAM_KEEPALIVE_MS, 100, 3600000,
                                 &s->stream_keepalive_ms, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "snapshot", "max_concurrent", 4, 1, 1000,
                                 &s->snapshot_max, e)) != AZC_OK ||
        (rc = azc_config_get_bool(a->cfg, "feed", "collect_tombstones", 1,
                                  &s->collect_tombstones, e)) != AZC_OK ||
        (rc = azc_config_get_bool(a->cfg, "check", "expect_regions", 0, &s->expect_regions,
                                  e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "keys_file", NULL, &s->keys_file, e)) !=
            AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "issuer", NULL, &s->issuer, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "audience", NULL, &s->audience, e)) !=
            AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "required_scope", "authz:replicate",
                                    &s->required_scope, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "auth", "leeway_secs", 30, 0, 600, &s->leeway_secs,
                                 e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "auth", "max_token_lifetime_secs",
                                 AZC_JWT_DEFAULT_MAX_LIFETIME, 60, 366 * 86400,
                                 &s->max_token_lifetime_secs, e)) != AZC_OK ||
        (rc = region_arrays(s, e)) != AZC_OK)
        return rc;
    azc_log_set_level(a->sh.log, lvl);
    s->http_port = (int)port;
    s->workers = (int)workers;
    s->batch = (int)batch;
    if (s->pg_url == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: pg.url must be set");
    if (azc_kafka_conn_bootstrap(s->kafka) == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.bootstrap must be set");
    /* Half a configuration would leave the feed open while its owner
     * believes it closed. */
    if (s->keys_file != NULL && (s->issuer == NULL || s->audience == NULL))
        return azc_err_set(e, AZC_EINVAL, "configuration: auth.issuer and auth.audience must be "
                                          "set with auth.keys_file");
    if (s->keys_file == NULL && (s->issuer != NULL || s->audience != NULL))
        return azc_err_set(e, AZC_EINVAL, "configuration: auth.issuer and auth.audience need "
                                          "auth.keys_file");
    if (strchr(s->required_scope, ' ') != NULL || s->required_scope[0] == '\0')
        return azc_err_set(e, AZC_EINVAL, "configuration: auth.required_scope must be one "
                                          "non-empty scope name without spaces");
    if (s->topic == NULL) {
        snprintf(a->topic_buf, sizeof a->topic_buf, "identity-events.%s", s->region);
        s->topic = a->topic_buf;
    }
    return AZC_OK;
}

/* Keeps w->pg the link's connection while it is up, NULL while down, and
 * the count of workers that are up (readiness needs all of them: the
 * kernel may hand any connection to any worker). */
static void on_db_state(azc_pg_link *l, int up, void *arg)
{
    az_worker *w = arg;
    int was = w->pg != NULL;

    w->pg = up ? azc_pg_link_conn(l) : NULL;
    if (!was && w->pg != NULL)
        atomic_fetch_add(&w->sh->links_up, 1);
    else if (was && w->pg == NULL)
        atomic_fetch_sub(&w->sh->links_up, 1);
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
    /* Priorities (feed streams run in the background) and precise timers
     * (the feed paces heartbeat answers a slice per millisecond). */
    if ((w->base = azc_http_loop_new(e)) == NULL)
        return AZC_ERROR;
    link_opts.application_name = "authz-server";
    link_opts.statement_timeout_ms = AZ_STATEMENT_TIMEOUT_MS;
    link_opts.on_state = on_db_state;
    link_opts.arg = w;
    if ((w->db = azc_pg_link_new(w->base, a->sh.set.pg_url, &link_opts, a->sh.log, e)) == NULL)
        return AZC_ERROR;
    if ((w->feed = az_feed_new(w, e)) == NULL)
        return AZC_ERROR;
    az_feed_set_stream_keepalive(w->feed, a->sh.set.stream_keepalive_ms);
    opts.service = "authz";
    opts.reuse_port = 1;
    w->http = azc_http_new(w->base, &opts, a->sh.log, a->sh.metrics, e);
    if (w->http == NULL)
        return AZC_ERROR;
    if ((rc = az_api_register(w, e)) != AZC_OK)
        return rc;
    if (a->sh.set.keys_file != NULL) {
        if ((w->jwt_cache = azc_jwt_cache_new(256)) == NULL)
            return azc_err_set(e, AZC_ENOMEM, "out of memory");
        azc_http_set_auth_cb(w->http, az_worker_authenticate, NULL);
    }
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
    azc_jwt_cache_free(w->jwt_cache);
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
    sh->m_tombstones = azc_metrics_counter(m, "authz_tombstones_collected_total",
                                           "Tombstones removed once every region had applied "
                                           "them, by origin.",
                                           (const char *const[]){ "origin", NULL });
    if (sh->m_applied == NULL || sh->m_tombstones == NULL || sh->m_duplicates == NULL || sh->m_dead == NULL ||
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
    if (pthread_rwlock_init(&a->sh.keys_lock, NULL) != 0)
        return azc_err_set(e, AZC_ERROR, "cannot create the key lock");
    a->keys_lock_made = 1;
    a->sh.status.next_offset = -1;
    atomic_init(&a->sh.snapshots, 0);
    atomic_init(&a->sh.links_up, 0);
    if ((rc = register_metrics(&a->sh, e)) != AZC_OK ||
        (rc = load_settings(a, e)) != AZC_OK)
        return rc;
    /* Here, not in start(): a key set that does not load is a bad
     * configuration (exit 2), found before anything is started. */
    if (a->sh.set.keys_file != NULL)
        return azc_jwt_keys_load_file(a->sh.set.keys_file, &a->sh.keys, e);
    return AZC_OK;
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

/* SIGHUP: a new key set replaces the old one whole; a bad file keeps the
 * old one (and says so), so a botched rotation never opens the feed nor
 * locks the peers out. */
static void reload(void *arg, azc_service *svc)
{
    app *a = arg;
    azc_jwt_keys *fresh = NULL;
    azc_err e;

    (void)svc;
    if (a->sh.set.keys_file == NULL) {
        azc_logf(a->sh.log, AZC_LOG_INFO, "SIGHUP: no auth.keys_file, nothing to reload");
        return;
    }
    if (azc_jwt_keys_load_file(a->sh.set.keys_file, &fresh, &e) != AZC_OK) {
        azc_logf(a->sh.log, AZC_LOG_ERROR, "SIGHUP: keeping the old keys: %s", e.msg);
        return;
    }
    azc_jwt_keys_swap(&a->sh.keys_lock, &a->sh.keys, fresh);
    azc_logf(a->sh.log, AZC_LOG_INFO, "SIGHUP: %zu JWT keys loaded", azc_jwt_keys_count(fresh));
}

static json_t *describe(void *arg)
{
    app *a = arg;

    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:b}", "region", a->sh.set.region, "topic",
                     a->sh.set.topic, "kafka", azc_kafka_conn_describe(a->sh.set.kafka), "port",
                     a->bound_port, "workers", a->nworkers, "peer_auth",
                     a->sh.set.keys_file != NULL);
}

static void cleanup(void *arg)
{
    app *a = arg;
    int i;

    /* The consumer finishes (commits or rolls back) its batch first. */
    az_consumer_free(a->consumer);
    azc_kafka_conn_free(a->sh.set.kafka);
    for (i = 0; i < MAX_WORKERS; i++)
        worker_free(&a->workers[i]);
    if (a->status_lock_made)
        pthread_mutex_destroy(&a->sh.status_lock);
    azc_jwt_keys_free(a->sh.keys);
    if (a->keys_lock_made)
        pthread_rwlock_destroy(&a->sh.keys_lock);
}

static const azc_service_def SERVICE = {
    .prog = "authz-server",
    .summary = "regional authorization service: identity events to policies, checks, snapshot "
               "and change feed",
    .log_name = "authz",
    .hup = 1,
    .configure = configure,
    .start = start,
    .reload = reload,
    .describe = describe,
    .cleanup = cleanup,
};

int main(int argc, char **argv)
{
    app a;

    memset(&a, 0, sizeof a);
    return azc_service_main(&SERVICE, &a, argc, argv);
}
