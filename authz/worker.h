/*
 * One HTTP worker of the authz server: a thread with its own event loop,
 * HTTP server (sharing the port through SO_REUSEPORT), database link and
 * change-feed waiters, and what every handler of a worker shares. main.c
 * builds the workers; api.c, feed.c and snapshot.c serve on them.
 */
#ifndef AZ_WORKER_H
#define AZ_WORKER_H

#include <pthread.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "authz/service.h"
#include "common/http.h"
#include "common/jwt.h"
#include "common/pg_link.h"

struct event;
struct event_base;
typedef struct az_feed az_feed;

/* The most one query of a worker loop may run (statement_timeout). */
#define AZ_STATEMENT_TIMEOUT_MS 2000

struct event_base;
typedef struct az_feed az_feed;

typedef struct az_worker {
    az_shared *sh;
    int index;
    struct event_base *base;
    azc_http *http;
    /* checks, status, changes: the worker's database link (connects
     * without blocking the loop) and its connection while it is up, NULL
     * while it is down (azc_pg_query then fails at once with
     * AZC_EUNAVAIL). Blocking short queries, bounded by statement_timeout
     * (AZ_STATEMENT_TIMEOUT_MS). */
    azc_pg_link *db;
    PGconn *pg;
    az_feed *feed;         /* long-poll waiters and their LISTEN connection */
    struct event *tick;    /* worker 0: lag gauges, feed pruning and
                              tombstone collection */
    azc_jwt_cache *jwt_cache; /* verified peer tokens; NULL while auth is off */
    long long last_prune_ms;
} az_worker;

/* Answers a failed query of the worker's link: 503 with Retry-After while
 * the database is unavailable (and the link reconnects without blocking),
 * 500 otherwise (azc_pg_reply_error). */
void az_reply_db_error(az_worker *w, azc_http_req *r, const azc_err *e);

/* Parses JSON text that PostgreSQL built; NULL (and a 500 sent on r) when
 * it is malformed. The caller owns the result. */
json_t *az_json_or_reply(azc_http_req *r, const char *text);

/* /readyz of a worker (arg): its database link is up and the consumer is
 * running and making progress; otherwise why says what is not. */
int az_worker_ready(void *arg, azc_err *why);

/* The HTTP helper's auth callback for every route not marked
 * AZC_ROUTE_PUBLIC (the change feed and the snapshot), installed when
 * auth.keys_file is set; route_arg is the az_worker. A bearer JWT verified
 * with the shared key set whose scope claim names auth.required_scope:
 * else 401 unauthenticated (none or a bad token, with WWW-Authenticate)
 * or 403 forbidden (a good token without the scope). */
int az_worker_authenticate(azc_http_req *r, void *route_arg, void *arg);

#endif
