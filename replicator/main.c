/*
 * authz-replicator: brings every other region's policy rows into this
 * region's authz store by following each peer's change feed
 * (docs/replication.md).
 *
 * Wiring only (the process itself is common/runner.c's): settings,
 * metrics, migrations, one follower per configured peer (its own event
 * loop thread and database connection, replicator/follower.c) and the
 * HTTP server for /healthz, /readyz, /metrics and /v1/status on a loop of
 * its own. The `verify` sub-command is replicator/verify.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/config.h"
#include "common/migrate.h"
#include "common/runner.h"
#include "replicator/follower.h"
#include "replicator/rp.h"
#include "replicator/status.h"
#include "replicator/verify.h"

static const azc_config_key FIXED_KEYS[] = {
    { "service", "region" },       { "service", "regions" },
    { "http", "addr" },            { "http", "port" },
    { "pg", "url" },               { "pg", "migrations_dir" },
    { "auth", "token_file" },      { "replication", "wait_ms" },
    { "replication", "limit" },    { "replication", "backoff_max_ms" },
    { "replication", "mode" },     { "replication", "stream_timeout_ms" },
    { "verify", "connect_timeout_ms" }, { "verify", "statement_timeout_ms" },
    { "log", "level" },
};
#define NFIXED (sizeof FIXED_KEYS / sizeof FIXED_KEYS[0])

typedef struct app {
    const azc_config *cfg;
    rp_shared sh;
    int lock_made;
    const char *peer_urls[RP_MAX_REGIONS];
    const char *peer_names[RP_MAX_REGIONS];
    rp_follower *followers[RP_MAX_REGIONS];
    struct event_base *http_base;
    azc_http *http;
    int bound_port;
} app;

/* The known keys: the fixed ones, plus peers.<region> and verify.<region>
 * for every configured region. */
static int check_keys(app *a, azc_err *e)
{
    azc_config_key keys[NFIXED + 2 * RP_MAX_REGIONS];
    size_t n = NFIXED, i;

    memcpy(keys, FIXED_KEYS, sizeof FIXED_KEYS);
    for (i = 0; i < a->sh.set.nregions; i++) {
        keys[n].section = "peers";
        keys[n++].key = a->sh.set.regions[i];
        keys[n].section = "verify";
        keys[n++].key = a->sh.set.regions[i];
    }
    return azc_config_check(a->cfg, keys, n, e);
}

static int load_settings(app *a, azc_err *e)
{
    rp_settings *s = &a->sh.set;
    const char *level = NULL, *self_url = NULL, *mode = NULL;
    long long port;
    azc_log_level lvl;
    size_t i;
    int rc;

    if ((rc = azc_config_regions(a->cfg, &s->region, &s->regions[0][0], sizeof s->regions[0],
                                 RP_MAX_REGIONS, &s->nregions, e)) != AZC_OK ||
        (rc = check_keys(a, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "log", "level", "info", &level, e)) != AZC_OK ||
        (rc = azc_log_level_parse(level, &lvl, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "pg", "url", NULL, &s->pg_url, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "pg", "migrations_dir", AUTHZ_SQL_DIR "/authz",
                                    &s->migrations_dir, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "http", "addr", "127.0.0.1", &s->http_addr, e)) !=
            AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "http", "port", 8090, 0, 65535, &port, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "auth", "token_file", NULL, &s->token_file, e)) !=
            AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "replication", "wait_ms", 25000, 0, 60000, &s->wait_ms,
                                 e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "replication", "limit", 1000, 1, 10000, &s->limit,
                                 e)) != AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "replication", "backoff_max_ms", 5000, 50, 600000,
                                 &s->backoff_max_ms, e)) != AZC_OK ||
        (rc = azc_config_get_string(a->cfg, "replication", "mode", "stream", &mode, e)) !=
            AZC_OK ||
        (rc = azc_config_get_int(a->cfg, "replication", "stream_timeout_ms", 45000, 100,
                                 3600000, &s->stream_timeout_ms, e)) != AZC_OK)
        return rc;
    if (strcmp(mode, "stream") != 0 && strcmp(mode, "poll") != 0)
        return azc_err_set(e, AZC_EINVAL,
                           "configuration: replication.mode must be \"stream\" or \"poll\"");
    s->stream = strcmp(mode, "stream") == 0;
    azc_log_set_level(a->sh.log, lvl);
    s->http_port = (int)port;
    if (s->pg_url == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: pg.url must be set");
    for (i = 0; i < s->nregions; i++) {
        const char *url = NULL;

        if (strcmp(s->regions[i], s->region) == 0)
            continue;
        if ((rc = azc_config_get_string(a->cfg, "peers", s->regions[i], NULL, &url, e)) !=
            AZC_OK)
            return rc;
        if (url == NULL)
            continue;
        if ((rc = rp_follower_url_check(s->regions[i], url, e)) != AZC_OK)
            return rc;
        a->peer_names[a->sh.npeers] = s->regions[i];
        a->peer_urls[a->sh.npeers++] = url;
    }
    if ((rc = azc_config_get_string(a->cfg, "peers", s->region, NULL, &self_url, e)) != AZC_OK)
        return rc;
    if (self_url != NULL)
        return azc_err_set(e, AZC_EINVAL,
                           "configuration: peers.%s names this region itself", s->region);
    if (a->sh.npeers == 0)
        return azc_err_set(e, AZC_EINVAL,
                           "configuration: no peers: set peers.<region> to the URL of the "
                           "authz-server of at least one other region of service.regions");
    return AZC_OK;
}

static int configure(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;
    int rc;

    a->cfg = azc_service_config(svc);
    a->sh.log = azc_service_log(svc);
    a->sh.metrics = azc_service_metrics(svc);
    if (pthread_mutex_init(&a->sh.lock, NULL) != 0)
        return azc_err_set(e, AZC_ERROR, "cannot create the status lock");
    a->lock_made = 1;
    if ((rc = rp_metrics_register(&a->sh, e)) != AZC_OK)
        return rc;
    return load_settings(a, e);
}

static int start(void *arg, azc_service *svc, azc_err *e)
{
    app *a = arg;
    azc_http_options opts;
    size_t i;
    int rc;

    if ((rc = azc_migrate_url(a->sh.set.pg_url, "authz-replicator-migrate", 30000,
                              a->sh.set.migrations_dir, "authz", a->sh.log, e)) != AZC_OK)
        return rc;
    for (i = 0; i < a->sh.npeers; i++) {
        a->followers[i] = rp_follower_new(&a->sh, i, a->peer_names[i], a->peer_urls[i], e);
        if (a->followers[i] == NULL)
            return e->code != AZC_OK ? e->code : AZC_ERROR;
        if ((rc = azc_service_add_loop(svc, rp_follower_base(a->followers[i]), e)) != AZC_OK)
            return rc;
    }
    memset(&opts, 0, sizeof opts);
    opts.service = "replicator";
    if ((a->http_base = event_base_new()) == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot create an event loop");
    if ((a->http = azc_http_new(a->http_base, &opts, a->sh.log, a->sh.metrics, e)) == NULL)
        return AZC_ERROR;
    if ((rc = rp_status_register(a->http, &a->sh, e)) != AZC_OK ||
        (rc = azc_http_bind(a->http, a->sh.set.http_addr, a->sh.set.http_port, e)) != AZC_OK)
        return rc;
    a->bound_port = azc_http_bound_port(a->http);
    return azc_service_add_loop(svc, a->http_base, e);
}

static int command(void *arg, azc_service *svc, const char *name, azc_err *e)
{
    app *a = arg;

    (void)name; /* verify is the only one */
    /* Its status is the exit status (the runner passes a positive value
     * through): 1 differences, 2 configuration, 3 a region unreachable. */
    return rp_verify_main(a->cfg, azc_service_log(svc), e);
}

static json_t *describe(void *arg)
{
    app *a = arg;

    return json_pack("{s:s, s:i, s:i}", "region", a->sh.set.region, "port", a->bound_port,
                     "peers", (int)a->sh.npeers);
}

static void cleanup(void *arg)
{
    app *a = arg;
    size_t i;

    azc_http_free(a->http);
    if (a->http_base != NULL)
        event_base_free(a->http_base);
    for (i = 0; i < RP_MAX_REGIONS; i++)
        rp_follower_free(a->followers[i]);
    if (a->lock_made)
        pthread_mutex_destroy(&a->sh.lock);
}

static const azc_cli_command COMMANDS[] = {
    { "verify", "compare every region's policy rows up to their common watermarks" },
};

static const azc_service_def SERVICE = {
    .prog = "authz-replicator",
    .summary = "follows every peer region's change feed into this region's policy store",
    .log_name = "replicator",
    .commands = COMMANDS,
    .ncommands = sizeof COMMANDS / sizeof COMMANDS[0],
    .configure = configure,
    .start = start,
    .command = command,
    .describe = describe,
    .cleanup = cleanup,
};

int main(int argc, char **argv)
{
    app a;

    memset(&a, 0, sizeof a);
    return azc_service_main(&SERVICE, &a, argc, argv);
}
