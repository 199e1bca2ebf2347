/*
 * A PostgreSQL connection that belongs to one event loop and is never
 * (re)connected synchronously on it.
 *
 * The link connects with PQconnectStartParams/PQconnectPoll driven by
 * libevent events on the loop, with a deadline per attempt and jittered
 * exponential backoff between attempts (50 ms doubling to 2 s), and keeps
 * trying until it is up again. While it is down, azc_pg_link_conn answers
 * NULL at once, so a request handler replies 503 in microseconds instead of
 * waiting for a connect timeout.
 *
 * Once up, the connection is an ordinary blocking PGconn (the loops run
 * short queries with azc_pg_query), with a statement_timeout set on the
 * session so that one query holds the loop for at most that long. Loss is
 * noticed when the server closes the idle connection (the link watches its
 * socket between queries) or when a query fails (PQstatus turns
 * CONNECTION_BAD; the next azc_pg_link_conn, or azc_pg_link_lost, starts
 * the reconnect).
 *
 * Threads: everything here runs on the thread of the link's event_base.
 */
#ifndef AZC_PG_LINK_H
#define AZC_PG_LINK_H

#include <libpq-fe.h>

#include "common/err.h"
#include "common/http.h"
#include "common/log.h"

struct event_base;

/* Opaque: one PGconn for one event_base. */
typedef struct azc_pg_link azc_pg_link;

/*
 * State changes: up = 1 once a connection is established; up = 0 just
 * before an established connection is closed (the PGconn is still valid
 * during the call: unwatch its socket), and, for a `once` link, when its
 * attempt failed. The callback is the last thing the link does in that
 * event, so it may free the link.
 */
typedef void (*azc_pg_link_cb)(azc_pg_link *l, int up, void *arg);

typedef struct azc_pg_link_options {
    const char *application_name;  /* NULL: "authz"; copied */
    int statement_timeout_ms;      /* set on the session; 0 = the server's */
    int connect_timeout_ms;        /* one attempt; 0 = 5000 */
    int once;                      /* one attempt, no reconnect (a snapshot's
                                      own connection) */
    int self_watched;              /* the user reads the socket while up (a
                                      LISTEN connection): the link does not
                                      watch it for a close of its own */
    azc_pg_link_cb on_state;       /* may be NULL */
    void *arg;
} azc_pg_link_options;

/*
 * New link on `base` (borrowed) to `conninfo` (URI or key=value; copied;
 * its own settings override the options). Starts connecting at once and
 * returns without waiting. `log` is borrowed. NULL with e filled when
 * memory or events run out or conninfo is empty. Free with
 * azc_pg_link_free.
 */
azc_pg_link *azc_pg_link_new(struct event_base *base, const char *conninfo,
                             const azc_pg_link_options *opts, azc_log *log,
                             azc_err *e) AZC_WARN_UNUSED;

/* Closes the connection (no callback) and frees the link. NULL is a no-op. */
void azc_pg_link_free(azc_pg_link *l);

/*
 * The connection when it is up (still owned by the link; do not PQfinish
 * or PQreset it), or NULL when it is down. A connection found broken
 * (CONNECTION_BAD) is closed here and, unless the link is `once`, a
 * non-blocking reconnect starts if none is under way. Never blocks.
 */
PGconn *azc_pg_link_conn(azc_pg_link *l);

/* 1 while the connection is up and not known to be broken; no side
 * effects (readiness probes). */
int azc_pg_link_up(const azc_pg_link *l);

/* The caller saw the connection fail in a way libpq may not have recorded
 * (e.g. it gave up on it): close it and reconnect. */
void azc_pg_link_lost(azc_pg_link *l);

/*
 * The one "database error -> reply" of the services: logs e (error level,
 * with the request id) and answers 503 "unavailable" with Retry-After: 1
 * when the link is down (starting its reconnect) or e says the server is
 * unreachable or timed out (AZC_EUNAVAIL), else 500 "internal". `l` may be
 * NULL (then only e decides).
 */
void azc_pg_reply_error(azc_pg_link *l, azc_http_req *r, const azc_err *e, azc_log *log);

#endif
