/*
 * Binding of the REST routes to a worker: the HTTP helper calls
 * id_dispatch with one id_bound per route, which authenticates the caller
 * and runs the route's handler with that worker's database connection.
 */
#ifndef ID_DISPATCH_H
#define ID_DISPATCH_H

#include <libpq-fe.h>

#include "common/http.h"
#include "common/pg_link.h"
#include "identity/service.h"

typedef struct id_bound {
    id_shared *sh;
    azc_pg_link *db;      /* the worker's database link */
    id_handler handler;
    azc_jwt_cache *jwt_cache;   /* the worker's: verified tokens */
} id_bound;

void id_dispatch(azc_http_req *r, void *arg);
/* The server's auth callback (azc_http_set_auth_cb; route_arg is the
 * route's id_bound): bearer JWT and admin rule before any body check. */
int id_authenticate(azc_http_req *r, void *route_arg, void *arg);

#endif
