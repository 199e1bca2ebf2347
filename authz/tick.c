/*
 * Worker 0's periodic tick: the per-origin lag and silence gauges from
 * the stored watermarks, and bounded pruning of the change feed. It runs
 * on worker 0's loop, so each run is one or two short queries.
 */
#include "authz/tick.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/hlc.h"
#include "common/pg.h"

static const char SQL_WATERMARKS[] =
    "SELECT origin, applied_hlc, known_hlc,"
    "       extract(epoch FROM now() - updated_at)::float8 FROM authz.watermarks";

/* Keeps the newest $1 feed rows, removing at most $2 of the older ones:
 * pruned_through moves up by at most $2, and seqs are distinct integers,
 * so one run deletes at most $2 rows however far behind pruning is (more
 * ticks finish the job). One statement: the feed_state row lock, taken
 * first as by every append, orders it with concurrent appends. */
static const char SQL_PRUNE[] =
    "WITH p AS (UPDATE authz.feed_state"
    "              SET pruned_through = greatest(pruned_through,"
    "                                            least(last_seq - $1::bigint,"
    "                                                  pruned_through + $2::bigint))"
    "            RETURNING pruned_through)"
    " DELETE FROM authz.changes WHERE seq <= (SELECT pruned_through FROM p)";

void az_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    az_worker *w = arg;
    PGresult *res = NULL;
    char retain[24], batch[24];
    const char *p[2] = { retain, batch };
    long long removed;
    long long now = (long long)azc_wall_ms();
    azc_err e;
    int i;

    (void)fd;
    (void)what;
    /* Down: the link is already reconnecting, off this loop. */
    if (azc_pg_link_conn(w->db) == NULL)
        return;
    if (azc_pg_query(w->pg, SQL_WATERMARKS, 0, NULL, &res, &e) != AZC_OK) {
        azc_logf(w->sh->log, AZC_LOG_WARN, "tick: %s", e.msg);
        return;
    }
    for (i = 0; i < PQntuples(res); i++) {
        uint64_t applied = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        uint64_t known = strtoull(PQgetvalue(res, i, 2), NULL, 10);

        if (azc_metric_set(w->sh->m_lag, (const char *const[]){ PQgetvalue(res, i, 0), NULL },
                           (double)(AZC_HLC_MS(known) - AZC_HLC_MS(applied)) / 1000.0) != AZC_OK)
            azc_logf(w->sh->log, AZC_LOG_WARN, "tick: cannot set authz_lag_seconds");
        if (azc_metric_set(w->sh->m_silence, (const char *const[]){ PQgetvalue(res, i, 0), NULL },
                           strtod(PQgetvalue(res, i, 3), NULL)) != AZC_OK)
            azc_logf(w->sh->log, AZC_LOG_WARN, "tick: cannot set authz_origin_silence_seconds");
    }
    PQclear(res);
    if (now - w->last_prune_ms < w->sh->set.prune_interval_ms)
        return;
    w->last_prune_ms = now;
    snprintf(retain, sizeof retain, "%lld", w->sh->set.feed_retain);
    snprintf(batch, sizeof batch, "%lld", w->sh->set.prune_batch);
    if (azc_pg_query(w->pg, SQL_PRUNE, 2, p, &res, &e) != AZC_OK) {
        azc_logf(w->sh->log, AZC_LOG_WARN, "feed prune: %s", e.msg);
        return;
    }
    removed = strtoll(PQcmdTuples(res), NULL, 10);
    if (removed > 0)
        azc_logf(w->sh->log, AZC_LOG_DEBUG, "feed prune: %lld rows removed", removed);
    /* A full batch: more is due, so the next tick prunes again. */
    if (removed >= w->sh->set.prune_batch)
        w->last_prune_ms = 0;
    PQclear(res);
}
