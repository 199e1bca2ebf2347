/*
 * Worker 0's periodic tick: the per-origin lag and silence gauges from
 * the stored watermarks, bounded pruning of the change feed, and bounded
 * collection of the tombstones every region has applied. It runs on
 * worker 0's loop, so each run is a few short queries.
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
 * ticks finish the job). One statement, one snapshot: the head it reads
 * is committed, and an append in progress takes seqs above it. */
static const char SQL_PRUNE[] =
    "WITH p AS (UPDATE authz.feed_state"
    "              SET pruned_through = greatest(pruned_through,"
    "                                            least(authz.feed_last_seq() - $1::bigint,"
    "                                                  pruned_through + $2::bigint))"
    "            RETURNING pruned_through)"
    " DELETE FROM authz.changes WHERE seq <= (SELECT pruned_through FROM p)";

/*
 * Removes at most $2 tombstones, in all three tables together, whose
 * origin O and hlc h every region has applied: this region's
 * applied_hlc[O] >= h and, for each region of $1 (the configured ones but
 * this one), authz.peer_watermarks(peer, O).applied_hlc >= h; an origin
 * without a row for some peer is never collected (docs/authz.md,
 * "Tombstone collection"). `safe` is that highest collectable hlc per
 * origin (least ignores the NULL min of an empty $1); each origin's
 * candidates, oldest first, are a range of the partial (origin, hlc) WHERE
 * deleted index (004_tombstones.sql), so a run that finds nothing reads
 * nothing. The outer `t.deleted AND t.hlc = v.hlc` is re-checked on a
 * row another transaction changed meanwhile, so a tombstone revived by a
 * newer write is kept. Deletes reach no feed (its triggers are on insert and update).
 * Returns (origin, rows removed).
 */
static const char SQL_COLLECT[] =
    "WITH safe AS ("
    "  SELECT w.origin, least(w.applied_hlc, p.min_applied) AS h"
    "    FROM authz.watermarks w"
    "    LEFT JOIN (SELECT origin, min(applied_hlc) AS min_applied, count(*) AS peers"
    "                 FROM authz.peer_watermarks WHERE peer = ANY($1::text[])"
    "                GROUP BY origin) p ON p.origin = w.origin"
    "   WHERE coalesce(p.peers, 0) = cardinality($1::text[])),"
    " du AS (DELETE FROM authz.users t"
    "         USING (SELECT c.user_id, c.hlc FROM safe, LATERAL (SELECT user_id, hlc"
    "                  FROM authz.users WHERE deleted AND origin = safe.origin AND hlc <= safe.h"
    "                 ORDER BY hlc LIMIT $2::bigint) c LIMIT $2::bigint) v"
    "         WHERE t.user_id = v.user_id AND t.deleted AND t.hlc = v.hlc RETURNING t.origin),"
    " dm AS (DELETE FROM authz.memberships t"
    "         USING (SELECT c.team_id, c.user_id, c.hlc FROM safe, LATERAL (SELECT team_id,"
    "                  user_id, hlc FROM authz.memberships WHERE deleted AND origin = safe.origin"
    "                   AND hlc <= safe.h ORDER BY hlc LIMIT $2::bigint) c"
    "                 LIMIT greatest(0, $2::bigint - (SELECT count(*) FROM du))) v"
    "         WHERE t.team_id = v.team_id AND t.user_id = v.user_id AND t.deleted"
    "           AND t.hlc = v.hlc RETURNING t.origin),"
    " dp AS (DELETE FROM authz.policies t"
    "         USING (SELECT c.assignment_id, c.hlc FROM safe, LATERAL (SELECT assignment_id,"
    "                  hlc FROM authz.policies WHERE deleted AND origin = safe.origin"
    "                   AND hlc <= safe.h ORDER BY hlc LIMIT $2::bigint) c"
    "                 LIMIT greatest(0, $2::bigint - (SELECT count(*) FROM du)"
    "                                   - (SELECT count(*) FROM dm))) v"
    "         WHERE t.assignment_id = v.assignment_id AND t.deleted AND t.hlc = v.hlc"
    "         RETURNING t.origin)"
    " SELECT origin, count(*) FROM (SELECT origin FROM du UNION ALL SELECT origin FROM dm"
    "                               UNION ALL SELECT origin FROM dp) x GROUP BY origin";

/* One bounded collection; returns the rows removed (0 on a failure,
 * logged: the next run tries again). */
static long long collect_tombstones(az_worker *w)
{
    char batch[24];
    const char *p[2] = { w->sh->set.peers_array, batch };
    PGresult *res = NULL;
    long long total = 0, n;
    azc_err e;
    int i;

    snprintf(batch, sizeof batch, "%lld", w->sh->set.prune_batch);
    if (azc_pg_query(w->pg, SQL_COLLECT, 2, p, &res, &e) != AZC_OK) {
        azc_logf(w->sh->log, AZC_LOG_WARN, "tombstone collection: %s", e.msg);
        return 0;
    }
    for (i = 0; i < PQntuples(res); i++) {
        n = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        total += n;
        if (azc_metric_inc(w->sh->m_tombstones,
                           (const char *const[]){ PQgetvalue(res, i, 0), NULL }, (double)n) !=
            AZC_OK)
            azc_logf(w->sh->log, AZC_LOG_WARN,
                     "tick: cannot count authz_tombstones_collected_total");
    }
    PQclear(res);
    if (total > 0)
        azc_logf(w->sh->log, AZC_LOG_DEBUG, "tombstone collection: %lld rows removed", total);
    return total;
}

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
    PQclear(res);
    if (removed > 0)
        azc_logf(w->sh->log, AZC_LOG_DEBUG, "feed prune: %lld rows removed", removed);
    /* A full batch: more is due, so the next tick prunes again. */
    if (removed >= w->sh->set.prune_batch)
        w->last_prune_ms = 0;
    if (w->sh->set.collect_tombstones && collect_tombstones(w) >= w->sh->set.prune_batch)
        w->last_prune_ms = 0;
}
