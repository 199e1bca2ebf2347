/*
 * The service runner; see runner.h for the order of things and the exit
 * statuses.
 */
#include "common/runner.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/service.h"

extern char **environ;

struct azc_service {
    const azc_service_def *def;
    azc_log *log;
    azc_metrics *metrics;
    azc_config *cfg;
    struct event_base *bases[AZC_SERVICE_MAX_LOOPS];
    pthread_t threads[AZC_SERVICE_MAX_LOOPS];
    size_t nbases, nrunning;
};

azc_log *azc_service_log(azc_service *s)
{
    return s->log;
}

azc_metrics *azc_service_metrics(azc_service *s)
{
    return s->metrics;
}

const azc_config *azc_service_config(azc_service *s)
{
    return s->cfg;
}

int azc_service_add_loop(azc_service *s, struct event_base *base, azc_err *e)
{
    if (base == NULL)
        return azc_err_set(e, AZC_EINVAL, "no event loop to run");
    if (s->nbases == AZC_SERVICE_MAX_LOOPS)
        return azc_err_set(e, AZC_ERROR, "more than %d event loops", AZC_SERVICE_MAX_LOOPS);
    s->bases[s->nbases++] = base;
    return AZC_OK;
}

/* Starts every added loop; on a failure the ones already running stay in
 * nrunning, so stop_loops joins them. */
static int start_loops(azc_service *s, azc_err *e)
{
    int rc;

    while (s->nrunning < s->nbases) {
        if ((rc = azc_loop_start(s->bases[s->nrunning], &s->threads[s->nrunning], e)) != AZC_OK)
            return rc;
        s->nrunning++;
    }
    return AZC_OK;
}

/* Each loop finishes the callback it is in (a whole request, a whole
 * transaction) before it exits. */
static void stop_loops(azc_service *s)
{
    size_t i;

    for (i = 0; i < s->nrunning; i++)
        azc_loop_stop(s->bases[i], s->threads[i], s->log);
    s->nrunning = 0;
}

static void log_started(azc_service *s, void *app)
{
    json_t *f = s->def->describe != NULL ? s->def->describe(app) : NULL;
    char msg[128];

    snprintf(msg, sizeof msg, "%s started", s->def->prog);
    azc_log_write(s->log, AZC_LOG_INFO, NULL, f, msg);
    json_decref(f);
}

/* Waits for a stop signal, serving SIGHUP meanwhile. */
static void wait_stop(azc_service *s, void *app, const sigset_t *set)
{
    int sig = 0;

    for (;;) {
        if (sigwait(set, &sig) != 0) {
            azc_logf(s->log, AZC_LOG_ERROR, "sigwait failed: shutting down");
            return;
        }
        if (sig != SIGHUP)
            break;
        if (s->def->reload != NULL)
            s->def->reload(app, s);
    }
    azc_logf(s->log, AZC_LOG_INFO, "signal %d: shutting down", sig);
}

static int fail(azc_service *s, const char *command, int rc, const azc_err *e)
{
    azc_logf(s->log, AZC_LOG_ERROR, "%s", e->msg);
    if (command != NULL)
        fprintf(stderr, "%s %s: %s\n", s->def->prog, command, e->msg);
    else
        fprintf(stderr, "%s: %s\n", s->def->prog, e->msg);
    return rc == AZC_EINVAL ? 2 : 1;
}

int azc_service_main(const azc_service_def *def, void *app, int argc, char **argv)
{
    azc_service s;
    azc_cli cli;
    azc_err e;
    sigset_t set;
    int rc, status = 0;

    memset(&s, 0, sizeof s);
    s.def = def;
    rc = azc_cli_parse_commands(argc, argv, def->prog, def->summary, def->commands,
                                def->ncommands, &cli, stdout, stderr);
    if (rc != AZC_CLI_RUN)
        return rc == AZC_CLI_EXIT ? 0 : 2;
    /* Before any thread starts: only sigwait sees the stop signals. */
    if (cli.command == NULL && azc_service_signals(&set, def->hup, &e) != AZC_OK) {
        fprintf(stderr, "%s: %s\n", def->prog, e.msg);
        return 1;
    }
    s.log = azc_log_new(def->log_name, AZC_LOG_INFO, stderr);
    s.metrics = azc_metrics_new();
    if (s.log == NULL || s.metrics == NULL) {
        fprintf(stderr, "%s: out of memory\n", def->prog);
        status = 1;
        goto out;
    }
    azc_err_clear(&e);
    if ((rc = azc_config_load(&s.cfg, cli.config_path, environ, &e)) != AZC_OK ||
        (rc = def->configure(app, &s, &e)) != AZC_OK) {
        /* A configuration that cannot be read is a usage error. */
        status = fail(&s, cli.command, AZC_EINVAL, &e);
        goto cleanup;
    }
    azc_service_raise_nofile(s.log);
    if (cli.command != NULL) {
        rc = def->command != NULL ? def->command(app, &s, cli.command, &e)
                                  : azc_err_set(&e, AZC_EINVAL, "no command %s", cli.command);
        if (rc > 0) {
            /* The command's own exit status (e.g. "differences found"). */
            if (e.msg[0] != '\0')
                (void)fail(&s, cli.command, AZC_ERROR, &e);
            status = rc;
        } else if (rc != AZC_OK) {
            status = fail(&s, cli.command, rc, &e);
        }
        goto cleanup;
    }
    if ((rc = def->start(app, &s, &e)) != AZC_OK || (rc = start_loops(&s, &e)) != AZC_OK) {
        /* Nothing was serving yet: a failed start is never a usage error. */
        status = fail(&s, NULL, AZC_ERROR, &e);
        stop_loops(&s);
        goto cleanup;
    }
    log_started(&s, app);
    wait_stop(&s, app, &set);
    stop_loops(&s);
cleanup:
    def->cleanup(app);
out:
    azc_config_free(s.cfg);
    azc_metrics_free(s.metrics);
    azc_log_free(s.log);
    return status;
}
