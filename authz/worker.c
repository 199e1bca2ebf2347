/*
 * What every handler of a worker shares: database error replies, JSON
 * from the store, readiness. See worker.h.
 */
#include "authz/worker.h"

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

    if (!azc_pg_link_up(w->db))
        return azc_err_set(why, AZC_EUNAVAIL, "database connection is down");
    az_consumer_status_get(w->sh, &cs);
    if (cs.state == AZ_CONSUMER_STOPPED)
        return azc_err_set(why, AZC_EUNAVAIL, "consumer stopped: %s", cs.error);
    if (cs.state == AZ_CONSUMER_STALLED)
        return azc_err_set(why, AZC_EUNAVAIL, "consumer stalled: %s", cs.stall_reason);
    if (cs.state != AZ_CONSUMER_RUNNING)
        return azc_err_set(why, AZC_EUNAVAIL, "consumer starting");
    return AZC_OK;
}
