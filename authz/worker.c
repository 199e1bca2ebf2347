/*
 * What every handler of a worker shares: database error replies, JSON
 * from the store, readiness, and the peer authentication of the feed and
 * the snapshot. See worker.h.
 */
#include "authz/worker.h"

#include <string.h>

#include "authz/status.h"
#include "common/pg.h"

void az_reply_db_error(az_worker *w, azc_http_req *r, const azc_err *e)
{
    azc_pg_reply_error(w->db, r, e, w->sh->log);
}

json_t *az_json_or_reply(azc_http_req *r, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);

    if (j == NULL)
        azc_http_reply_error(r, 500, "internal", "the policy store returned malformed JSON");
    return j;
}

int az_worker_ready(void *arg, azc_err *why)
{
    az_worker *w = arg;
    az_consumer_status cs;
    int up = atomic_load(&w->sh->links_up);

    if (!azc_pg_link_up(w->db) || up < w->sh->set.workers)
        return azc_err_set(why, AZC_EUNAVAIL, "database connection is down (%d of %d workers "
                           "connected)", up, w->sh->set.workers);
    az_consumer_status_get(w->sh, &cs);
    if (cs.state == AZ_CONSUMER_STOPPED)
        return azc_err_set(why, AZC_EUNAVAIL, "consumer stopped: %s", cs.error);
    if (cs.state == AZ_CONSUMER_STALLED)
        return azc_err_set(why, AZC_EUNAVAIL, "consumer stalled: %s", cs.stall_reason);
    if (cs.state != AZ_CONSUMER_RUNNING)
        return azc_err_set(why, AZC_EUNAVAIL, "consumer starting");
    return AZC_OK;
}

static void unauthenticated(az_worker *w, azc_http_req *r, const char *why)
{
    azc_log_reqf(w->sh->log, AZC_LOG_INFO, azc_http_req_id(r), "auth: rejected: %s", why);
    (void)azc_http_req_add_header(r, "WWW-Authenticate",
                                  "Bearer realm=\"authz-server\", error=\"invalid_token\"");
    azc_http_reply_error(r, 401, "unauthenticated", "a valid bearer token is required");
}

int az_worker_authenticate(azc_http_req *r, void *route_arg, void *arg)
{
    az_worker *w = route_arg;
    const az_settings *s = &w->sh->set;
    const char *token = NULL;
    azc_jwt_policy policy;
    json_t *claims = NULL;
    azc_err e;
    int rc;

    (void)arg;
    if (azc_http_req_header_count(r, "Authorization") > 1) {
        unauthenticated(w, r, "more than one Authorization header");
        return AZC_EINVAL;
    }
    if (!azc_jwt_bearer(azc_http_req_header(r, "Authorization"), &token)) {
        unauthenticated(w, r, "no bearer token");
        return AZC_EINVAL;
    }
    memset(&policy, 0, sizeof policy);
    policy.issuer = s->issuer;
    policy.audience = s->audience;
    policy.leeway_secs = (long)s->leeway_secs;
    policy.max_lifetime_secs = s->max_token_lifetime_secs;
    azc_err_clear(&e);
    pthread_rwlock_rdlock(&w->sh->keys_lock);
    rc = azc_jwt_verify_cached(w->jwt_cache, w->sh->keys, token, &policy, &claims, &e);
    pthread_rwlock_unlock(&w->sh->keys_lock);
    if (rc != AZC_OK) {
        unauthenticated(w, r, e.msg);
        return AZC_EINVAL;
    }
    if (!azc_jwt_has_scope(claims, s->required_scope)) {
        azc_log_reqf(w->sh->log, AZC_LOG_INFO, azc_http_req_id(r),
                     "auth: %s lacks the scope %s", json_string_value(json_object_get(claims, "sub")),
                     s->required_scope);
        json_decref(claims);
        azc_http_reply_error(r, 403, "forbidden", "the token's scope does not include %s",
                             s->required_scope);
        return AZC_EINVAL;
    }
    json_decref(claims);
    return AZC_OK;
}
