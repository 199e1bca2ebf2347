/*
 * Metrics, /v1/status and /readyz of authz-replicator. The followers
 * publish their state under rp_shared.lock (replicator/follower.c); this
 * file only reads it, on the HTTP server's thread, so a status request
 * never touches a peer or the database.
 */
#include <string.h>

#include "replicator/status.h"

int rp_metrics_register(rp_shared *sh, azc_err *e)
{
    static const double batch_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                            0.05,   0.1,   0.25,   0.5,   1,    2.5, 10 };
    azc_metrics *mr = sh->metrics;
    rp_metrics *m = &sh->m;

    m->applied = azc_metrics_counter(mr, "rp_rows_applied_total",
                                     "Rows from a peer that replaced or created a local row.",
                                     (const char *const[]){ "peer", "kind", NULL });
    m->skipped = azc_metrics_counter(mr, "rp_rows_skipped_total",
                                     "Rows from a peer not applied: own_origin (this region's "
                                     "own rows) or older (not newer than the local row).",
                                     (const char *const[]){ "peer", "reason", NULL });
    m->batch = azc_metrics_histogram(mr, "rp_batch_seconds",
                                     "Duration of the transaction applying one peer answer.",
                                     (const char *const[]){ "peer", NULL }, batch_buckets,
                                     sizeof batch_buckets / sizeof batch_buckets[0]);
    m->lag = azc_metrics_gauge(mr, "rp_lag_seconds",
                               "Known minus applied HLC of each origin here, in seconds.",
                               (const char *const[]){ "origin", NULL });
    m->errors = azc_metrics_counter(mr, "rp_peer_errors_total",
                                    "Failed exchanges with a peer, by kind (connect, http_5xx, "
                                    "http_4xx, protocol, database, token, cursor_expired, "
                                    "stream_end).",
                                    (const char *const[]){ "peer", "kind", NULL });
    m->reconnects = azc_metrics_counter(mr, "rp_reconnects_total",
                                        "New HTTP connections to a peer after the first.",
                                        (const char *const[]){ "peer", NULL });
    m->dead = azc_metrics_counter(mr, "rp_dead_letters_total",
                                  "Bad rows from a peer moved to "
                                  "authz.replication_dead_letters.",
                                  (const char *const[]){ "peer", NULL });
    m->resyncs = azc_metrics_counter(mr, "rp_resyncs_total",
                                     "Resynchronisations from a peer's snapshot applied.",
                                     (const char *const[]){ "peer", NULL });
    if (m->applied == NULL || m->skipped == NULL || m->batch == NULL || m->lag == NULL ||
        m->errors == NULL || m->reconnects == NULL || m->dead == NULL || m->resyncs == NULL)
        return azc_err_set(e, AZC_ERROR, "cannot register the metrics");
    return AZC_OK;
}

static json_t *peers_json(rp_shared *sh, long long now)
{
    json_t *peers = json_object();
    size_t i;

    for (i = 0; peers != NULL && i < sh->npeers; i++) {
        rp_peer_status *p = &sh->peers[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:s, s:b}", "url", p->url, "state",
                              p->state != NULL ? p->state : "starting", "last_error",
                              p->last_error, "reached", p->reached, "mode",
                              p->mode != NULL ? p->mode : "stream", "stream_open",
                              p->stream_open);

        if (o == NULL ||
            json_object_set_new(o, "cursor",
                                p->cursor >= 0 ? json_integer(p->cursor) : json_null()) != 0 ||
            json_object_set_new(o, "last_success_age_seconds",
                                p->last_success_ms > 0
                                    ? json_real((double)(now - p->last_success_ms) / 1000.0)
                                    : json_null()) != 0 ||
            json_object_set_new(peers, p->name, o) != 0) {
            json_decref(peers);
            return NULL;
        }
    }
    return peers;
}

static json_t *origins_json(rp_shared *sh)
{
    json_t *origins = json_object();
    size_t i;

    for (i = 0; origins != NULL && i < sh->norigins; i++) {
        rp_origin_status *o = &sh->origins[i];
        double lag = o->known > o->applied
                         ? (double)((o->known >> 16) - (o->applied >> 16)) / 1000.0
                         : 0.0;
        json_t *j = json_pack("{s:I, s:I, s:f}", "applied_hlc", (json_int_t)o->applied,
                              "known_hlc", (json_int_t)o->known, "lag_seconds", lag);

        if (j == NULL ||
            json_object_set_new(j, "source",
                                o->source[0] ? json_string(o->source) : json_null()) != 0 ||
            json_object_set_new(origins, o->origin, j) != 0) {
            json_decref(origins);
            return NULL;
        }
    }
    return origins;
}

static void status_get(azc_http_req *r, void *arg)
{
    rp_shared *sh = arg;
    json_t *peers, *origins, *body = NULL;

    pthread_mutex_lock(&sh->lock);
    peers = peers_json(sh, rp_now_ms());
    origins = origins_json(sh);
    pthread_mutex_unlock(&sh->lock);
    if (peers != NULL && origins != NULL)
        body = json_pack("{s:s, s:o, s:o}", "region", sh->set.region, "peers", peers, "origins",
                         origins);
    else {
        json_decref(peers);
        json_decref(origins);
    }
    azc_http_reply_json(r, 200, body);
}

static int ready(void *arg, azc_err *why)
{
    rp_shared *sh = arg;
    const char *missing = NULL;
    size_t i;

    pthread_mutex_lock(&sh->lock);
    for (i = 0; i < sh->npeers && missing == NULL; i++)
        if (!sh->peers[i].reached)
            missing = sh->peers[i].name;
    if (missing != NULL)
        azc_err_set(why, AZC_EUNAVAIL, "peer %s not reached yet", missing);
    pthread_mutex_unlock(&sh->lock);
    return missing == NULL ? AZC_OK : AZC_EUNAVAIL;
}

int rp_status_register(azc_http *h, rp_shared *sh, azc_err *e)
{
    static const azc_http_route routes[] = {
        { AZC_HTTP_GET, "/v1/status", status_get, 0, 0 },
    };
    int rc;

    if ((rc = azc_http_add_routes(h, routes, 1, sh)) != AZC_OK)
        return azc_err_set(e, rc, "cannot register the status route");
    azc_http_set_ready_cb(h, ready, sh);
    return AZC_OK;
}
