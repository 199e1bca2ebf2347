/*
 * The authz server's HTTP side: one worker per thread (event loop, HTTP
 * server sharing the port through SO_REUSEPORT, its own database
 * connection and change-feed waiters), and the handlers of the API in
 * docs/authz.md: check and status here, changes in feed.c, snapshot in
 * snapshot.c.
 */
#ifndef AZ_API_H
#define AZ_API_H

#include <pthread.h>

#include <event2/util.h>
#include <libpq-fe.h>

#include "authz/service.h"
#include "common/http.h"

struct event_base;
typedef struct az_feed az_feed;

typedef struct az_worker {
    az_shared *sh;
    int index;
    struct event_base *base;
    azc_http *http;
    PGconn *pg;            /* checks, status, changes; blocking, short queries */
    az_feed *feed;         /* long-poll waiters and their LISTEN connection */
    struct event *tick;    /* worker 0: lag gauges and feed pruning */
    long long last_prune_ms;
    pthread_t thread;
} az_worker;

/* Registers every route of the API on w->http. */
int az_api_register(az_worker *w, azc_err *e) AZC_WARN_UNUSED;

/* Route handlers; arg is the az_worker. */
void az_check_handler(azc_http_req *r, void *arg);
void az_status_handler(azc_http_req *r, void *arg);
void az_changes_handler(azc_http_req *r, void *arg);
void az_snapshot_handler(azc_http_req *r, void *arg);

/* Worker 0's periodic timer: sets authz_lag_seconds{origin} from the
 * stored watermarks and prunes the change feed every
 * feed.prune_interval_ms. */
void az_tick_cb(evutil_socket_t fd, short what, void *arg);

/* Answers 503 for a lost database connection (and starts reconnecting it
 * with PQreset), 500 otherwise. */
void az_reply_db_error(az_worker *w, azc_http_req *r, const azc_err *e);

/* Watermarks of every origin as {"<origin>": {"applied": hlc, "known":
 * hlc}}, from the JSON text PostgreSQL built; NULL (and a 500 sent) on a
 * malformed text. */
json_t *az_json_or_reply(azc_http_req *r, const char *text);

#endif
