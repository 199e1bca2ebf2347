/*
 * PostgreSQL helpers over libpq: connecting with retry and backoff, and
 * running parameterised statements with one place that turns a failed
 * PGresult into a status code and a message. SQL text is always a
 * constant; values travel as parameters, never spliced into the text.
 */
#ifndef AZC_PG_H
#define AZC_PG_H

#include <libpq-fe.h>

#include "common/err.h"
#include "common/log.h"

/*
 * Connects to `conninfo` (URI or key=value), blocking the calling thread
 * (start-up, migrations and the consumer and relay threads; event loops
 * use common/pg_link.h instead), retrying with exponential
 * backoff (50 ms doubling to 2 s, with jitter) until `timeout_ms` passes, so
 * a service may start before its database. `application_name` may be NULL.
 * On success *out is a new connection owned by the caller (PQfinish).
 * AZC_EUNAVAIL when the deadline passes, with the last libpq error.
 */
int azc_pg_connect(const char *conninfo, const char *application_name, int timeout_ms,
                   azc_log *lg, PGconn **out, azc_err *e) AZC_WARN_UNUSED;

/*
 * Runs one statement with text parameters (PQexecParams). Success is
 * PGRES_COMMAND_OK or PGRES_TUPLES_OK; then *res (when res is not NULL)
 * holds the result, owned by the caller (PQclear). On failure *res is NULL,
 * the message carries the server's message and SQLSTATE, and the code is
 * AZC_ECONFLICT for integrity violations (class 23), AZC_EUNAVAIL when the
 * connection is gone (or c is NULL: an azc_pg_link that is down) or the
 * statement ran into statement_timeout (57014), AZC_ERROR otherwise.
 * Blocking: it holds the calling thread until the server answers.
 */
int azc_pg_query(PGconn *c, const char *sql, int nparams, const char *const *params,
                 PGresult **res, azc_err *e) AZC_WARN_UNUSED;

/*
 * azc_pg_query for a hot statement, as the named prepared statement
 * `name` of c: parsed and planned once per connection instead of at every
 * call (the check's planning costs several times its execution). The
 * first call on a connection, and the first after a reconnect (a new
 * connection knows no statement), prepares it. Only outside a transaction
 * block (AZC_EINVAL otherwise): there the failed first EXECUTE would abort
 * the transaction. One name, one sql text, for the life of the process.
 */
int azc_pg_query_prepared(PGconn *c, const char *name, const char *sql, int nparams,
                          const char *const *params, PGresult **res, azc_err *e) AZC_WARN_UNUSED;

/* Runs a trusted multi-statement script (a migration file; never text
 * built from input) with PQexec. Same error mapping as azc_pg_query. */
int azc_pg_exec_script(PGconn *c, const char *script, azc_err *e) AZC_WARN_UNUSED;

int azc_pg_begin(PGconn *c, azc_err *e) AZC_WARN_UNUSED;
int azc_pg_commit(PGconn *c, azc_err *e) AZC_WARN_UNUSED;
/* Best effort: a failed rollback leaves the connection for the caller to
 * reset; nothing is committed either way. */
void azc_pg_rollback(PGconn *c);

/* The SQLSTATE of a failed result ("" when none). */
const char *azc_pg_sqlstate(const PGresult *r);

/* For common/ only (pg.c and pg_link.c): a random wait in [1, max_ms]
 * ("full jitter", so that reconnecting clients spread out), and the notice
 * processor that sends server notices to the log `arg` at debug level. */
long azc__pg_jitter(long max_ms);
void azc__pg_on_notice(void *arg, const char *message);

#endif
