/*
 * The identity service's context, shared by its files: the process-wide
 * part (configuration, logger, metrics, the JWT key set) and the per-worker
 * part (one event loop, HTTP server and PostgreSQL connection per thread).
 *
 * Workers share nothing mutable but the metrics registry (it locks) and the
 * key set (swapped under keys_lock on SIGHUP).
 */
#ifndef ID_SERVICE_H
#define ID_SERVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "common/http.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/pg_link.h"
#include "common/revision.h"
#include "identity/outbox.h"

#define ID_MAX_REGIONS 32
#define ID_MAX_ADMINS 64

typedef struct id_settings {
    const char *region;
    char regions[ID_MAX_REGIONS][AZC_REGION_MAX + 1];
    size_t nregions;
    const char *pg_url;
    const char *http_addr;
    int http_port;
    int workers;
    long long max_body_bytes;
    const char *keys_file;
    const char *issuer;
    const char *audience;
    long long leeway_secs;
    long long max_token_lifetime_secs; /* exp - iat above it: refused */
    char admin_subjects[ID_MAX_ADMINS][257];
    size_t nadmins;
    const char *admin_claim;
    long long idempotency_ttl_secs;
} id_settings;

typedef struct id_shared {
    id_settings set;
    azc_log *log;
    azc_metrics *metrics;
    pthread_rwlock_t keys_lock;
    azc_jwt_keys *keys;        /* guarded by keys_lock */
    azc_metric *m_mutations;   /* identity_mutations_total{kind} */
    atomic_int links_up;       /* workers whose database link is up */
} id_shared;

typedef struct id_worker id_worker;

/* One request in flight: what the dispatcher established before calling
 * the handler. */
typedef struct id_call {
    id_worker *w;
    id_shared *sh;
    azc_pg_link *db;           /* the worker's link; pg is its connection */
    PGconn *pg;
    azc_http_req *r;
    const char *caller;        /* the admin's JWT subject */
    id_events *events;         /* events the mutation causes */
    int in_tx;
    char idem_key[256];        /* Idempotency-Key of a POST, "" if none */
    char idem_hash[65];
} id_call;

typedef void (*id_handler)(id_call *c);

/* A route of the REST API; `mutates` routes run in a transaction. */
typedef struct id_route {
    unsigned methods;
    const char *pattern;
    id_handler handler;
    unsigned flags;            /* AZC_ROUTE_* */
    size_t max_body;
} id_route;

/* Every route the service serves (users.c, teams.c, roles.c,
 * assignments.c contribute to it through api.c). */
extern const id_route id_routes[];
extern const size_t id_routes_count;

#endif
