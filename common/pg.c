/*
 * libpq helpers; see pg.h. Connection retries use full jitter so that
 * several services restarting together do not hammer the server in step.
 */
#include "common/pg.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "common/hlc.h"

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0)
        ;
}

long azc__pg_jitter(long max_ms)
{
    uint32_t r;

    if (max_ms <= 1 || RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        return max_ms;
    return 1 + (long)(r % (uint32_t)max_ms);
}

/* Server notices ("relation already exists, skipping", ...) go to the
 * JSON log at debug level instead of libpq's default: raw text on stderr. */
void azc__pg_on_notice(void *arg, const char *message)
{
    size_t n = strcspn(message, "\n");

    azc_logf(arg, AZC_LOG_DEBUG, "postgres: %.*s", (int)n, message);
}

int azc_pg_connect(const char *conninfo, const char *application_name, int timeout_ms,
                   azc_log *lg, PGconn **out, azc_err *e)
{
    const char *keys[] = { "connect_timeout", "application_name", "dbname", NULL };
    const char *vals[] = { "5", application_name != NULL ? application_name : "authz",
                           conninfo, NULL };
    uint64_t deadline = azc_wall_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    long backoff = 50;
    char last[AZC_ERRMSG_MAX] = "";
    int attempt = 0;

    *out = NULL;
    if (conninfo == NULL || conninfo[0] == '\0')
        return azc_err_set(e, AZC_EINVAL, "postgres: empty connection string");
    for (;;) {
        /* expand_dbname=1: conninfo's own settings override the defaults
         * listed before it. */
        PGconn *c = PQconnectdbParams(keys, vals, 1);
        uint64_t now;

        attempt++;
        if (c != NULL && PQstatus(c) == CONNECTION_OK) {
            PQsetNoticeProcessor(c, azc__pg_on_notice, lg);
            if (attempt > 1)
                azc_logf(lg, AZC_LOG_INFO, "postgres: connected after %d attempts", attempt);
            *out = c;
            return AZC_OK;
        }
        if (c == NULL) {
            snprintf(last, sizeof last, "out of memory");
        } else {
            const char *m = PQerrorMessage(c);
            size_t n = strcspn(m, "\n");
            snprintf(last, sizeof last, "%.*s", (int)n, m);
            /* A malformed connection string will not improve with time. */
            if (PQstatus(c) == CONNECTION_BAD && strstr(m, "invalid") != NULL &&
                (strstr(m, "URI") != NULL || strstr(m, "connection option") != NULL)) {
                PQfinish(c);
                return azc_err_set(e, AZC_EINVAL, "postgres: %s", last);
            }
        }
        PQfinish(c);
        now = azc_wall_ms();
        if (now >= deadline)
            return azc_err_set(e, AZC_EUNAVAIL, "postgres: cannot connect after %d attempts: %s",
                               attempt, last);
        azc_logf(lg, AZC_LOG_WARN, "postgres: connect attempt %d failed: %s", attempt, last);
        {
            long wait = azc__pg_jitter(backoff);
            if ((uint64_t)wait > deadline - now)
                wait = (long)(deadline - now);
            sleep_ms(wait);
        }
        if (backoff < 2000)
            backoff *= 2;
    }
}

const char *azc_pg_sqlstate(const PGresult *r)
{
    const char *s = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    return s != NULL ? s : "";
}

static int result_status(PGconn *c, PGresult *r, PGresult **res, azc_err *e)
{
    ExecStatusType st = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    const char *state, *msg;
    size_t n;
    int code;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (res != NULL)
            *res = r;
        else
            PQclear(r);
        return AZC_OK;
    }
    state = azc_pg_sqlstate(r);
    msg = r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c);
    if (msg == NULL || msg[0] == '\0')
        msg = PQerrorMessage(c);
    n = strcspn(msg, "\n");
    /* 57014: statement_timeout (or a cancel) fired; like a lost link it
     * is worth a retry, not a 500. */
    if (PQstatus(c) == CONNECTION_BAD || strcmp(state, "57014") == 0)
        code = AZC_EUNAVAIL;
    else if (strncmp(state, "23", 2) == 0)
        code = AZC_ECONFLICT;
    else
        code = AZC_ERROR;
    azc_err_set(e, code, "postgres: %.*s%s%s%s", (int)n, msg,
                state[0] != '\0' ? " [SQLSTATE " : "", state, state[0] != '\0' ? "]" : "");
    PQclear(r);
    return code;
}

int azc_pg_query(PGconn *c, const char *sql, int nparams, const char *const *params,
                 PGresult **res, azc_err *e)
{
    if (res != NULL)
        *res = NULL;
    if (c == NULL)
        return azc_err_set(e, AZC_EUNAVAIL, "postgres: not connected");
    return result_status(c, PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0), res, e);
}

int azc_pg_query_prepared(PGconn *c, const char *name, const char *sql, int nparams,
                          const char *const *params, PGresult **res, azc_err *e)
{
    PGresult *r;
    int rc;

    if (res != NULL)
        *res = NULL;
    if (c == NULL)
        return azc_err_set(e, AZC_EUNAVAIL, "postgres: not connected");
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return azc_err_set(e, AZC_EINVAL, "postgres: prepared statement %s inside a transaction",
                           name);
    r = PQexecPrepared(c, name, nparams, params, NULL, NULL, 0);
    /* 26000: not prepared on this connection (its first use, or a new
     * connection): prepare it and run it again. */
    if (r != NULL && PQresultStatus(r) == PGRES_FATAL_ERROR &&
        strcmp(azc_pg_sqlstate(r), "26000") == 0) {
        PQclear(r);
        if ((rc = result_status(c, PQprepare(c, name, sql, nparams, NULL), NULL, e)) != AZC_OK)
            return rc;
        r = PQexecPrepared(c, name, nparams, params, NULL, NULL, 0);
    }
    return result_status(c, r, res, e);
}

int azc_pg_exec_script(PGconn *c, const char *script, azc_err *e)
{
    if (c == NULL)
        return azc_err_set(e, AZC_EUNAVAIL, "postgres: not connected");
    return result_status(c, PQexec(c, script), NULL, e);
}

int azc_pg_begin(PGconn *c, azc_err *e)
{
    return azc_pg_query(c, "BEGIN", 0, NULL, NULL, e);
}

int azc_pg_commit(PGconn *c, azc_err *e)
{
    PGresult *r = NULL;
    int rc = azc_pg_query(c, "COMMIT", 0, NULL, &r, e);

    /* COMMIT of an aborted transaction "succeeds" with tag ROLLBACK. */
    if (rc == AZC_OK && strcmp(PQcmdStatus(r), "ROLLBACK") == 0)
        rc = azc_err_set(e, AZC_ERROR, "postgres: transaction was rolled back");
    PQclear(r);
    return rc;
}

void azc_pg_rollback(PGconn *c)
{
    if (c != NULL)
        PQclear(PQexec(c, "ROLLBACK"));
}
