/*
 * Binding of the REST routes to a worker: the HTTP helper calls
 * id_dispatch with one id_bound per route, which authenticates the caller
 * and runs the route's handler with that worker's database connection.
 */
#ifndef ID_DISPATCH_H
#define ID_DISPATCH_H

#include <libpq-fe.h>

#include "common/http.h"
#include "identity/service.h"

typedef struct id_bound {
    id_shared *sh;
    PGconn **pg;          /* the worker's connection (PQreset keeps the pointer) */
    id_handler handler;
    azc_jwt_cache *jwt_cache;   /* the worker's: verified tokens */
} id_bound;

void id_dispatch(azc_http_req *r, void *arg);

#endif
