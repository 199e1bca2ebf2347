/*
 * The main() every service binary shares (DESIGN section 7): command line
 * (--config, --help, --version, sub-commands), the stop signals that only
 * the main thread's sigwait sees, the JSON logger and the metrics
 * registry, the configuration file with AUTHZ_* overrides, the open-file
 * limit, the event-loop threads, SIGHUP, and an orderly shutdown. A
 * service supplies what differs in an azc_service_def:
 *
 *   static const azc_service_def def = {
 *       .prog = "authz-server", .summary = "...", .log_name = "authz",
 *       .configure = configure, .start = start, .cleanup = cleanup,
 *   };
 *   int main(int argc, char **argv) { app a = {0}; return azc_service_main(&def, &a, argc, argv); }
 *
 * Order: parse the command line; block the signals (not for a
 * sub-command: interrupting one kills it, and it must roll back by
 * itself); make the logger and registry; load the configuration;
 * configure(); raise the open-file limit; then either command() and exit,
 * or start(), run every loop start() added on its own thread, log
 * "<prog> started", wait for SIGTERM/SIGINT (SIGHUP calls reload() when
 * the service has one), ask every loop to finish the callback it is in
 * and join it, and cleanup(). cleanup() also runs after a failed
 * configure() or start(), so it must cope with a half-built app.
 *
 * Exit status: 0 after a clean stop; 2 for a bad command line or
 * configuration (an AZC_EINVAL from configure() or command()); 1 for any
 * other failure. Errors go to the log and, as "<prog>: <message>", to
 * stderr.
 */
#ifndef AZC_RUNNER_H
#define AZC_RUNNER_H

#include <stddef.h>

#include <jansson.h>

#include "common/cli.h"
#include "common/config.h"
#include "common/err.h"
#include "common/log.h"
#include "common/metrics.h"

struct event_base;

/* The runner's state, for the callbacks. Owned by azc_service_main. */
typedef struct azc_service azc_service;

typedef struct azc_service_def {
    const char *prog;        /* "authz-server": usage and messages */
    const char *summary;     /* one line for --help */
    const char *log_name;    /* the "service" field of every log line */
    const azc_cli_command *commands; /* sub-commands, or NULL */
    size_t ncommands;
    int hup;                 /* SIGHUP calls reload() instead of being ignored */

    /* Reads the settings (azc_service_config) and registers metrics.
     * AZC_EINVAL for a bad configuration. Required. */
    int (*configure)(void *app, azc_service *s, azc_err *e);
    /* Builds and starts the service: migrations, threads, and each event
     * loop, handed over with azc_service_add_loop (the runner runs them
     * once start() returns). Required. */
    int (*start)(void *app, azc_service *s, azc_err *e);
    /* Runs sub-command `name` instead of the service; NULL when the
     * binary has none. Returns AZC_OK (exit 0), an AZC_* error (exit 2
     * for AZC_EINVAL, else 1), or a positive exit status of its own
     * (e.g. "differences found"); e's message, when set, is printed. */
    int (*command)(void *app, azc_service *s, const char *name, azc_err *e);
    /* SIGHUP, on the main thread, while the loops run. Optional. */
    void (*reload)(void *app, azc_service *s);
    /* Fields for the "<prog> started" log line (a new reference, taken by
     * the runner), or NULL. Optional. */
    json_t *(*describe)(void *app);
    /* Frees what configure() and start() made, after every loop has
     * stopped. Required. */
    void (*cleanup)(void *app);
} azc_service_def;

/* Runs the service; returns the process's exit status. `app` is the
 * service's own context, passed to every callback. */
int azc_service_main(const azc_service_def *def, void *app, int argc, char **argv);

/* Borrowed; valid until azc_service_main returns. */
azc_log *azc_service_log(azc_service *s);
azc_metrics *azc_service_metrics(azc_service *s);
const azc_config *azc_service_config(azc_service *s);

/* Hands `base` (still the caller's to free in cleanup) to the runner,
 * which runs its loop on a thread of its own after start() and stops it
 * before cleanup(). At most AZC_SERVICE_MAX_LOOPS. */
#define AZC_SERVICE_MAX_LOOPS 64
int azc_service_add_loop(azc_service *s, struct event_base *base, azc_err *e) AZC_WARN_UNUSED;

#endif
