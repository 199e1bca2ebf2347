/*
 * authz-identity: admin REST API for users, teams, roles and assignments,
 * with a transactional outbox and its relay to the region's Kafka topic.
 *
 * Wiring only (the process itself is common/runner.c's): settings,
 * migrations, worker loops (HTTP server and database link each, sharing
 * the port through SO_REUSEPORT), the relay thread, and SIGHUP reloading
 * the JWT keys. The API and the relay can run in separate
 * processes of the same binary (api.enabled / relay.enabled). The
 * `resync` sub-command runs identity/resync.c once and exits.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/config.h"
#include "common/http.h"
#include "common/kafka.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "common/runner.h"
#include "common/text.h"
#include "identity/dispatch.h"
#include "identity/relay.h"
#include "identity/resync.h"
#include "identity/service.h"

#define MAX_WORKERS 16
/* The most one query of a worker loop may run (statement_timeout); a
 * request runs a few, inside one transaction. */
#define ID_STATEMENT_TIMEOUT_MS 2000

static const azc_config_key KNOWN[] = {
    { "service", "region" },      { "service", "regions" },
    { "http", "addr" },           { "http", "port" },
    { "http", "workers" },        { "http", "max_body_bytes" },
    { "pg", "url" },              { "pg", "migrations_dir" },
    AZC_KAFKA_CONFIG_KEYS,        { "kafka", "topic" },
    { "relay", "enabled" },       { "relay", "heartbeat_ms" },
    { "relay", "max_in_flight" }, { "api", "enabled" },
    { "auth", "keys_file" },      { "auth", "issuer" },
    { "auth", "audience" },       { "auth", "leeway_secs" },
    { "auth", "admin_subjects" }, { "auth", "admin_claim" },
    { "auth", "max_token_lifetime_secs" },
    { "idempotency", "ttl_secs" }, { "log", "level" },
};

struct id_worker {
    id_shared *sh;
    int index;
    struct event_base *base;
    azc_http *http;
    azc_pg_link *db;           /* connects without blocking the loop */
    int db_up;                 /* as its on_state last said */
    azc_jwt_cache *jwt_cache;
    id_bound bound[32];
    id_relay *const *relay;    /* the process's relay (NULL when disabled), set before
                                  the loops start */
};

typedef struct app {
    const azc_config *cfg;
    id_shared sh;
    const char *migrations_dir;
    azc_kafka_conn *kafka;     /* bootstrap list and its security */
    const char *topic;
    char topic_buf[64];
    int relay_enabled, api_enabled;
    long long heartbeat_ms, max_in_flight;
    id_worker workers[MAX_WORKERS];
    int nworkers;
    id_relay *relay;
    int bound_port;
    int keys_lock_made;
} app;

static int load_settings(app *a, azc_err *e)
{
    id_settings *s = &a->sh.set;
    const char *admins = NULL, *level = NULL;
    long long port, workers, body;
    azc_log_level lvl;
    int rc;

    if ((rc = azc_config_check(a->cfg, KNOWN, sizeof KNOWN / sizeof KNOWN[0], e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "log", "level", "info", &level, e)) != AZC_OK ||
        (rc = azc_log_level_parse(level, &lvl, e)) != AZC_OK ||
        (rc = azc_config_regions(a->cfg, &s->region, &s->regions[0][0], sizeof s->regions[0],
                                 ID_MAX_REGIONS, &s->nregions, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "pg", "url", NULL, &s->pg_url, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "pg", "migrations_dir", AUTHZ_SQL_DIR "/identity",
                                    &a->migrations_dir, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "http", "addr", "127.0.0.1", &s->http_addr, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "http", "port", 8080, 0, 65535, &port, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "http", "workers", 2, 1, MAX_WORKERS, &workers, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "http", "max_body_bytes", 64 * 1024, 1024, 16 * 1024 * 1024,
                                 &body, e)) != AZC_OK ||
        (rc = azc_config_get_bool(a->cfg, "api", "enabled", 1, &a->api_enabled, e)) != AZC_OK ||
        (rc = azc_config_get_bool(a->cfg, "relay", "enabled", 1, &a->relay_enabled, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "relay", "heartbeat_ms", 200, 10, 60000, &a->heartbeat_ms,
                                 e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "relay", "max_in_flight", 1000, 1, 100000,
                                 &a->max_in_flight, e)) != AZC_OK ||
        (rc = azc_kafka_conn_new(a->cfg, &a->kafka, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "kafka", "topic", NULL, &a->topic, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "keys_file", NULL, &s->keys_file, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "issuer", NULL, &s->issuer, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "audience", NULL, &s->audience, e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "auth", "leeway_secs", 30, 0, 600, &s->leeway_secs, e)) !=
            AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "auth", "max_token_lifetime_secs",
                                 AZC_JWT_DEFAULT_MAX_LIFETIME, 60, 366 * 86400,
                                 &s->max_token_lifetime_secs, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "admin_subjects", "", &admins, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "admin_claim", "authz_admin", &s->admin_claim,
                                    e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "idempotency", "ttl_secs", 86400, 60, 30 * 86400,
                                 &s->idempotency_ttl_secs, e)) != AZC_OK)
        return rc;
    azc_log_set_level(a->sh.log, lvl);
    s->http_port = (int)port;
    s->workers = (int)workers;
    s->max_body_bytes = body;
    if ((rc = azc_config_split_list(admins, &s->admin_subjects[0][0], sizeof s->admin_subjects[0],
                         ID_MAX_ADMINS, &s->nadmins, "auth.admin_subjects", e)) != AZC_OK)
        return rc;
    if (s->pg_url == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: pg.url must be set");
    if (a->api_enabled && (s->keys_file == NULL || s->issuer == NULL || s->audience == NULL))
        return azc_err_set(e, AZC_EINVAL, "configuration: auth.keys_file, auth.issuer and "
                                          "auth.audience must be set when the API is enabled");
    if (a->relay_enabled && azc_kafka_conn_bootstrap(a->kafka) == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.bootstrap must be set when the "
                                          "relay is enabled");
    if (a->topic == NULL) {
        snprintf(a->topic_buf, sizeof a->topic_buf, "identity-events.%s", s->region);
        a->topic = a->topic_buf;
    }
    if (!a->api_enabled && !a->relay_enabled)
        return azc_err_set(e, AZC_EINVAL, "configuration: api.enabled and relay.enabled are "
                                          "both false: nothing to run");
    return AZC_OK;
}

/* The key-set file (common/jwt.h, azc_jwt_keys_load_file). */
static int load_keys(id_shared *sh, azc_jwt_keys **out, azc_err *e)
{
    return azc_jwt_keys_load_file(sh->set.keys_file, out, e);
}

static int worker_ready(void *arg, azc_err *why)
{
    id_worker *w = arg;
    char reason[AZC_ERRMSG_MAX];
    int up = atomic_load(&w->sh->links_up);

    /* Every worker's: the kernel may hand any connection to any worker. */
    if (!azc_pg_link_up(w->db) || up < w->sh->set.workers)
        return azc_err_set(why, AZC_EUNAVAIL, "database connection is down (%d of %d workers "
                           "connected)", up, w->sh->set.workers);
    /* Writes still commit to the outbox, but nothing reaches Kafka until
     * the repair: not ready, and the reason says which repair. */
    if (id_relay_diverged(*w->relay, reason, sizeof reason))
        return azc_err_set(why, AZC_EUNAVAIL, "relay stopped, run authz-identity resync: %s",
                           reason);
    return AZC_OK;
}

/* Counts the workers whose link is up (readiness needs all of them). */
static void on_db_state(azc_pg_link *l, int up, void *arg)
{
    id_worker *w = arg;

    (void)l;
    if (up && !w->db_up)
        atomic_fetch_add(&w->sh->links_up, 1);
    else if (!up && w->db_up)
        atomic_fetch_sub(&w->sh->links_up, 1);
    w->db_up = up;
}

static int worker_init(app *a, id_worker *w, int index, azc_err *e)
{
    azc_http_options opts;
    azc_pg_link_options link_opts;
    size_t i;
    int rc;

    memset(&opts, 0, sizeof opts);
    memset(&link_opts, 0, sizeof link_opts);
    w->sh = &a->sh;
    w->index = index;
    w->relay = &a->relay;
    w->base = event_base_new();
    w->jwt_cache = azc_jwt_cache_new(1024);
    if (w->base == NULL || w->jwt_cache == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an event loop");
    link_opts.application_name = "authz-identity";
    link_opts.statement_timeout_ms = ID_STATEMENT_TIMEOUT_MS;
    link_opts.on_state = on_db_state;
    link_opts.arg = w;
    if ((w->db = azc_pg_link_new(w->base, a->sh.set.pg_url, &link_opts, a->sh.log, e)) == NULL)
        return AZC_ERROR;
    opts.max_body_bytes = (size_t)a->sh.set.max_body_bytes;
    opts.service = "identity";
    opts.reuse_port = 1;
    w->http = azc_http_new(w->base, &opts, a->sh.log, a->sh.metrics, e);
    if (w->http == NULL)
        return AZC_ERROR;
    if (id_routes_count > sizeof w->bound / sizeof w->bound[0])
        return azc_err_set(e, AZC_ERROR, "too many routes");
    for (i = 0; i < id_routes_count; i++) {
        azc_http_route route = { id_routes[i].methods, id_routes[i].pattern, id_dispatch,
                                 id_routes[i].flags, id_routes[i].max_body };
        w->bound[i].sh = &a->sh;
        w->bound[i].db = w->db;
        w->bound[i].handler = id_routes[i].handler;
        w->bound[i].jwt_cache = w->jwt_cache;
        if (azc_http_add_routes(w->http, &route, 1, &w->bound[i]) != AZC_OK)
            return azc_err_set(e, AZC_ERROR, "cannot register route %s", id_routes[i].pattern);
    }
    azc_http_set_auth_cb(w->http, id_authenticate, NULL);
    azc_http_set_ready_cb(w->http, worker_ready, w);
    /* Worker 0 picks the port (it may be 0 = ephemeral); the others share it. */
    rc = azc_http_bind(w->http, a->sh.set.http_addr,
                       index == 0 ? a->sh.set.http_port : a->bound_port, e);
    if (rc != AZC_OK)
        return rc;
    if (index == 0)
        a->bound_port = azc_http_bound_port(w->http);
    return AZC_OK;
}

static void worker_free(id_worker *w)
{
    azc_http_free(w->http);
    azc_jwt_cache_free(w->jwt_cache);
    azc_pg_link_free(w->db);
    if (w->base != NULL)
        event_base_free(w->base);
    memset(w, 0, sizeof *w);
}

static void reload_keys(app *a)
{
    azc_jwt_keys *fresh = NULL;
    azc_err e;

    if (!a->api_enabled)
        return;
    if (load_keys(&a->sh, &fresh, &e) != AZC_OK) {
        azc_logf(a->sh.log, AZC_LOG_ERROR, "SIGHUP: keeping the old keys: %s", e.msg);
        return;
    }
    azc_jwt_keys_swap(&a->sh.keys_lock, &a->sh.keys, fresh);
    azc_logf(a->sh.log, AZC_LOG_INFO, "SIGHUP: %zu JWT keys loaded", azc_jwt_keys_count(fresh));
}

static int configure(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;

    a->cfg = azc_service_config(svc);
    a->sh.log = azc_service_log(svc);
    a->sh.metrics = azc_service_metrics(svc);
    if (pthread_rwlock_init(&a->sh.keys_lock, NULL) != 0)
        return azc_err_set(e, AZC_ERROR, "cannot create the key lock");
    a->keys_lock_made = 1;
    atomic_init(&a->sh.links_up, 0);
    a->sh.m_mutations = azc_metrics_counter(a->sh.metrics, "identity_mutations_total",
                                            "Committed admin changes by route.",
                                            (const char *const[]){ "route", NULL });
    if (a->sh.m_mutations == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot register the metrics");
    return load_settings(a, e);
}

static int start(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;
    int i, rc;

    if ((rc = azc_migrate_url(a->sh.set.pg_url, "authz-identity-migrate", 30000,
                              a->migrations_dir, "identity", a->sh.log, e)) != AZC_OK)
        return rc;
    if (a->api_enabled) {
        if ((rc = load_keys(&a->sh, &a->sh.keys, e)) != AZC_OK)
            return rc;
        for (i = 0; i < a->sh.set.workers; i++) {
            if ((rc = worker_init(a, &a->workers[i], i, e)) != AZC_OK)
                return rc;
            a->nworkers++;
        }
    }
    if (a->relay_enabled) {
        id_relay_config rc_cfg = { a->sh.set.pg_url, a->kafka, a->topic, a->sh.set.region,
                                   (int)a->heartbeat_ms, (int)a->max_in_flight, a->sh.log,
                                   a->sh.metrics };
        a->relay = id_relay_new(&rc_cfg, e);
        if (a->relay == NULL || (rc = id_relay_start(a->relay, e)) != AZC_OK)
            return AZC_ERROR;
    }
    /* The workers read a->relay: their loops run only from here on. */
    for (i = 0; i < a->nworkers; i++) {
        if ((rc = azc_service_add_loop(svc, a->workers[i].base, e)) != AZC_OK)
            return rc;
    }
    return AZC_OK;
}

static void reload(void *arg, azc_service *svc)
{
    (void)svc;
    reload_keys(arg);
}

static json_t *describe(void *arg)
{
    app *a = arg;

    return json_pack("{s:s, s:i, s:i, s:b, s:b, s:s}", "region", a->sh.set.region, "port",
                     a->bound_port, "workers", a->nworkers, "api", a->api_enabled, "relay",
                     a->relay_enabled, "kafka", azc_kafka_conn_describe(a->kafka));
}

/* `authz-identity resync`: one JSON summary line on stdout. */
static int run_resync(app *a, azc_err *e)
{
    id_resync_config cfg = { a->sh.set.pg_url, a->kafka, a->topic, a->sh.set.region, 0,
                             a->sh.log };
    id_resync_result res;
    json_t *sum;
    int rc;

    if (azc_kafka_conn_bootstrap(a->kafka) == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.bootstrap must be set for resync");
    if ((rc = azc_migrate_url(a->sh.set.pg_url, "authz-identity-migrate", 10000,
                              a->migrations_dir, "identity", a->sh.log, e)) != AZC_OK ||
        (rc = id_resync_run(&cfg, &res, e)) != AZC_OK)
        return rc;
    sum = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "origin",
                    a->sh.set.region, "topic", a->topic, "epoch", (json_int_t)res.epoch,
                    "first_seq", (json_int_t)res.first_seq, "last_seq", (json_int_t)res.last_seq,
                    "users", (json_int_t)res.users, "roles", (json_int_t)res.roles, "teams",
                    (json_int_t)res.teams, "memberships", (json_int_t)res.memberships,
                    "assignments", (json_int_t)res.assignments, "superseded",
                    (json_int_t)res.superseded);
    if (sum == NULL || json_dumpf(sum, stdout, JSON_COMPACT) != 0 || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0) {
        json_decref(sum);
        /* Committed already: say so rather than report a failure. */
        azc_logf(a->sh.log, AZC_LOG_WARN, "resync committed (epoch %" PRIu64 ", seq %" PRIu64
                 "-%" PRIu64 ") but the summary could not be written", res.epoch, res.first_seq,
                 res.last_seq);
        return AZC_OK;
    }
    json_decref(sum);
    azc_logf(a->sh.log, AZC_LOG_INFO, "resync: epoch %" PRIu64 " written as seq %" PRIu64
             "-%" PRIu64 "; the relay publishes it", res.epoch, res.first_seq, res.last_seq);
    return AZC_OK;
}

static int command(void *arg, azc_service *svc, const char *name, azc_err *e)
{
    int rc;

    (void)svc;
    (void)name;   /* resync is the only one */
    if ((rc = run_resync(arg, e)) != AZC_OK) {
        char msg[AZC_ERRMSG_MAX];

        /* The cause is cut rather than the promise that nothing changed. */
        azc_text_fmt(msg, sizeof msg, "%.*s; nothing was written",
                     (int)(sizeof msg - sizeof "; nothing was written"), e->msg);
        return azc_err_set(e, rc, "%s", msg);
    }
    return AZC_OK;
}

static void cleanup(void *arg)
{
    app *a = arg;
    int i;

    id_relay_free(a->relay);
    azc_kafka_conn_free(a->kafka);
    for (i = 0; i < MAX_WORKERS; i++)
        worker_free(&a->workers[i]);
    azc_jwt_keys_free(a->sh.keys);
    if (a->keys_lock_made)
        pthread_rwlock_destroy(&a->sh.keys_lock);
}

static const azc_cli_command COMMANDS[] = {
    { "resync", "write a new epoch with the whole state above the topic's tail, and exit" },
};

static const azc_service_def SERVICE = {
    .prog = "authz-identity",
    .summary = "admin REST API for users, teams and roles, with its outbox relay to Kafka",
    .log_name = "identity",
    .commands = COMMANDS,
    .ncommands = sizeof COMMANDS / sizeof COMMANDS[0],
    .hup = 1,
    .configure = configure,
    .start = start,
    .command = command,
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
