/*
 * Policy builder: identity events -> rows of authz.users, memberships,
 * policies and roles (the mapping table is in docs/authz.md).
 *
 * Why every statement carries "(hlc, origin) < (new hlc, new origin)": the
 * same rows are also written by the replicator, and a row must never be
 * replaced by an older version, whatever the order of arrival.
 */
#include "authz/apply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pg.h"
#include "common/policy.h"
#include "common/revision.h"
#include "common/uuid.h"

static const char SQL_USER_UPSERT[] =
    "INSERT INTO authz.users AS t (user_id, subject, hlc, origin, origin_seq, deleted)"
    " VALUES ($1, $2, $3, $4, $5, false)"
    " ON CONFLICT (user_id) DO UPDATE SET subject = EXCLUDED.subject, hlc = EXCLUDED.hlc,"
    "   origin = EXCLUDED.origin, origin_seq = EXCLUDED.origin_seq, deleted = false"
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)";

/* A tombstone for a user never seen keeps an empty subject. */
static const char SQL_USER_DELETE[] =
    "INSERT INTO authz.users AS t (user_id, subject, hlc, origin, origin_seq, deleted)"
    " VALUES ($1, '', $2, $3, $4, true)"
    " ON CONFLICT (user_id) DO UPDATE SET hlc = EXCLUDED.hlc, origin = EXCLUDED.origin,"
    "   origin_seq = EXCLUDED.origin_seq, deleted = true"
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)";

static const char SQL_MEMBER_SET[] =
    "INSERT INTO authz.memberships AS t (team_id, user_id, deleted, hlc, origin, origin_seq)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
    " ON CONFLICT (team_id, user_id) DO UPDATE SET hlc = EXCLUDED.hlc, origin = EXCLUDED.origin,"
    "   origin_seq = EXCLUDED.origin_seq, deleted = EXCLUDED.deleted"
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)";

/* Defensive clean-up when a user or team goes: identity emits the
 * removals first, so these normally change nothing. */
static const char SQL_MEMBERS_OF_TEAM_DELETE[] =
    "UPDATE authz.memberships AS t SET deleted = true, hlc = $2, origin = $3, origin_seq = $4"
    " WHERE t.team_id = $1 AND NOT t.deleted AND (t.hlc, t.origin) < ($2::bigint, $3::text)";
static const char SQL_MEMBERS_OF_USER_DELETE[] =
    "UPDATE authz.memberships AS t SET deleted = true, hlc = $2, origin = $3, origin_seq = $4"
    " WHERE t.user_id = $1 AND NOT t.deleted AND (t.hlc, t.origin) < ($2::bigint, $3::text)";
static const char SQL_POLICIES_OF_PRINCIPAL_DELETE[] =
    "UPDATE authz.policies AS t SET deleted = true, hlc = $3, origin = $4, origin_seq = $5"
    " WHERE t.principal_type = $1 AND t.principal_id = $2 AND NOT t.deleted"
    "   AND (t.hlc, t.origin) < ($3::bigint, $4::text)";

/* Permissions travel as a JSON array parameter, never spliced as text. */
static const char SQL_ROLE_UPSERT[] =
    "INSERT INTO authz.roles AS t (role_id, name, permissions, hlc, origin, origin_seq, deleted)"
    " VALUES ($1, $2, ARRAY(SELECT jsonb_array_elements_text($3::jsonb)), $4, $5, $6, false)"
    " ON CONFLICT (role_id) DO UPDATE SET name = EXCLUDED.name,"
    "   permissions = EXCLUDED.permissions, hlc = EXCLUDED.hlc, origin = EXCLUDED.origin,"
    "   origin_seq = EXCLUDED.origin_seq, deleted = false"
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)";
static const char SQL_ROLE_REWRITE_POLICIES[] =
    "UPDATE authz.policies AS t"
    "   SET permissions = ARRAY(SELECT jsonb_array_elements_text($2::jsonb)),"
    "       hlc = $3, origin = $4, origin_seq = $5"
    " WHERE t.role_id = $1 AND NOT t.deleted AND (t.hlc, t.origin) < ($3::bigint, $4::text)";
static const char SQL_ROLE_DELETE[] =
    "UPDATE authz.roles AS t SET deleted = true, hlc = $2, origin = $3, origin_seq = $4"
    " WHERE t.role_id = $1 AND (t.hlc, t.origin) < ($2::bigint, $3::text)";

static const char SQL_ROLE_EXISTS[] =
    "SELECT 1 FROM authz.roles WHERE role_id = $1 AND NOT deleted";
static const char SQL_POLICY_UPSERT[] =
    "INSERT INTO authz.policies AS t (assignment_id, principal_type, principal_id, role_id,"
    "                                 region, resource, permissions, hlc, origin, origin_seq,"
    "                                 deleted)"
    " SELECT $1, $2, $3, $4, $5, $6, r.permissions, $7, $8, $9, false"
    "   FROM authz.roles r WHERE r.role_id = $4 AND NOT r.deleted"
    " ON CONFLICT (assignment_id) DO UPDATE SET principal_type = EXCLUDED.principal_type,"
    "   principal_id = EXCLUDED.principal_id, role_id = EXCLUDED.role_id,"
    "   region = EXCLUDED.region, resource = EXCLUDED.resource,"
    "   permissions = EXCLUDED.permissions, hlc = EXCLUDED.hlc, origin = EXCLUDED.origin,"
    "   origin_seq = EXCLUDED.origin_seq, deleted = false"
    " WHERE (t.hlc, t.origin) < (EXCLUDED.hlc, EXCLUDED.origin)";
static const char SQL_POLICY_DELETE[] =
    "UPDATE authz.policies AS t SET deleted = true, hlc = $2, origin = $3, origin_seq = $4"
    " WHERE t.assignment_id = $1 AND (t.hlc, t.origin) < ($2::bigint, $3::text)";

/* ---- checks of data -------------------------------------------------- */

const char *const az_resync_kinds[AZ_RESYNC_KINDS] = { "users", "roles", "teams", "memberships",
                                                       "assignments" };

int az_resync_kind(azc_event_type t)
{
    switch (t) {
    case AZC_EV_USER_CREATED:
        return 0;
    case AZC_EV_ROLE_CREATED:
        return 1;
    case AZC_EV_TEAM_CREATED:
        return 2;
    case AZC_EV_TEAM_MEMBER_ADDED:
        return 3;
    case AZC_EV_ASSIGNMENT_CREATED:
        return 4;
    default:
        return -1;
    }
}

static int member_string(const json_t *data, const char *name, const char **out, azc_err *e)
{
    json_t *v = json_object_get(data, name);

    if (v == NULL)
        return azc_err_set(e, AZC_EINVAL, "data.%s is missing", name);
    if (!json_is_string(v))
        return azc_err_set(e, AZC_EINVAL, "data.%s must be a string", name);
    *out = json_string_value(v);
    return AZC_OK;
}

static int member_uuid(const json_t *data, const char *name, azc_err *e)
{
    const char *s;
    int rc;

    if ((rc = member_string(data, name, &s, e)) != AZC_OK)
        return rc;
    if (!azc_uuid_valid(s))
        return azc_err_set(e, AZC_EINVAL, "data.%s is not a uuid", name);
    return AZC_OK;
}

static int check_permissions(const json_t *data, azc_err *e)
{
    json_t *a = json_object_get(data, "permissions"), *v;
    size_t i;

    if (a == NULL)
        return azc_err_set(e, AZC_EINVAL, "data.permissions is missing");
    if (!json_is_array(a))
        return azc_err_set(e, AZC_EINVAL, "data.permissions must be an array");
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || !azc_permission_valid(json_string_value(v)))
            return azc_err_set(e, AZC_EINVAL, "data.permissions[%zu] is not a permission", i);
    }
    return AZC_OK;
}

int az_event_data_check(const azc_event *ev, azc_err *e)
{
    const json_t *d = ev->data;
    const char *s;
    json_t *p;
    int rc = AZC_OK;

    if (!json_is_object(d))
        return azc_err_set(e, AZC_EINVAL, "data must be an object");
    switch (ev->type) {
    case AZC_EV_USER_CREATED:
    case AZC_EV_USER_UPDATED:
        if ((rc = member_uuid(d, "id", e)) != AZC_OK ||
            (rc = member_string(d, "subject", &s, e)) != AZC_OK)
            return rc;
        if (!azc_subject_valid(s))
            return azc_err_set(e, AZC_EINVAL, "data.subject is not a valid subject");
        return AZC_OK;
    case AZC_EV_USER_DELETED:
    case AZC_EV_TEAM_CREATED:
    case AZC_EV_TEAM_UPDATED:
    case AZC_EV_TEAM_DELETED:
    case AZC_EV_ROLE_DELETED:
    case AZC_EV_ASSIGNMENT_DELETED:
        return member_uuid(d, "id", e);
    case AZC_EV_TEAM_MEMBER_ADDED:
    case AZC_EV_TEAM_MEMBER_REMOVED:
        if ((rc = member_uuid(d, "team_id", e)) != AZC_OK)
            return rc;
        return member_uuid(d, "user_id", e);
    case AZC_EV_ROLE_CREATED:
    case AZC_EV_ROLE_UPDATED:
        if ((rc = member_uuid(d, "id", e)) != AZC_OK ||
            (rc = member_string(d, "name", &s, e)) != AZC_OK)
            return rc;
        return check_permissions(d, e);
    case AZC_EV_ASSIGNMENT_CREATED:
        if ((rc = member_uuid(d, "id", e)) != AZC_OK || (rc = member_uuid(d, "role_id", e)) != AZC_OK)
            return rc;
        p = json_object_get(d, "principal");
        if (!json_is_object(p))
            return azc_err_set(e, AZC_EINVAL, "data.principal must be an object");
        if ((rc = member_string(p, "type", &s, e)) != AZC_OK)
            return azc_err_set(e, AZC_EINVAL, "data.principal.type must be a string");
        if (strcmp(s, "user") != 0 && strcmp(s, "team") != 0)
            return azc_err_set(e, AZC_EINVAL, "data.principal.type must be user or team");
        if (member_uuid(p, "id", NULL) != AZC_OK)
            return azc_err_set(e, AZC_EINVAL, "data.principal.id must be a uuid");
        if ((rc = member_string(d, "region", &s, e)) != AZC_OK)
            return rc;
        if (strcmp(s, "*") != 0 && !azc_region_valid(s))
            return azc_err_set(e, AZC_EINVAL, "data.region is not a region name or *");
        if ((rc = member_string(d, "resource", &s, e)) != AZC_OK)
            return rc;
        if (!azc_resource_valid(s))
            return azc_err_set(e, AZC_EINVAL, "data.resource is not a resource pattern");
        return AZC_OK;
    case AZC_EV_HEARTBEAT:
        /* Older relays send {}; newer ones name the event at seq. */
        if (json_object_get(d, "last_id") == NULL)
            return AZC_OK;
        return member_uuid(d, "last_id", e);
    case AZC_EV_RESYNC_BEGIN:
        return AZC_OK;
    case AZC_EV_RESYNC_END:
        for (size_t i = 0; i < sizeof az_resync_kinds / sizeof az_resync_kinds[0]; i++) {
            json_t *n = json_object_get(d, az_resync_kinds[i]);

            if (n == NULL)
                return azc_err_set(e, AZC_EINVAL, "data.%s is missing", az_resync_kinds[i]);
            if (!json_is_integer(n) || json_integer_value(n) < 0)
                return azc_err_set(e, AZC_EINVAL, "data.%s must be a non-negative integer",
                                   az_resync_kinds[i]);
        }
        return AZC_OK;
    default:
        return azc_err_set(e, AZC_EINVAL, "unknown event type");
    }
}

/* ---- apply ------------------------------------------------------------- */

static const char *str(const json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

/* Runs sql with the event's (hlc, origin, origin_seq) appended after the
 * n leading parameters. */
static int run(PGconn *c, const azc_event *ev, const char *sql, int n, const char **lead,
               int *tuples, azc_err *e)
{
    char hlc[24], seq[24];
    const char *p[12];
    PGresult *res = NULL;
    int i, rc;

    snprintf(hlc, sizeof hlc, "%" PRIu64, ev->hlc);
    snprintf(seq, sizeof seq, "%" PRIu64, ev->seq);
    for (i = 0; i < n; i++)
        p[i] = lead[i];
    p[n] = hlc;
    p[n + 1] = ev->origin;
    p[n + 2] = seq;
    rc = azc_pg_query(c, sql, n + 3, p, &res, e);
    if (rc == AZC_OK && tuples != NULL)
        *tuples = atoi(PQcmdTuples(res));
    PQclear(res);
    return rc;
}

static int role_upsert(PGconn *c, const azc_event *ev, azc_err *e)
{
    const json_t *d = ev->data;
    char *perms = json_dumps(json_object_get(d, "permissions"), JSON_COMPACT);
    const char *lead[3];
    int rc;

    if (perms == NULL)
        return azc_err_set(e, AZC_ENOMEM, "cannot encode permissions");
    lead[0] = str(d, "id");
    lead[1] = str(d, "name");
    lead[2] = perms;
    rc = run(c, ev, SQL_ROLE_UPSERT, 3, lead, NULL, e);
    if (rc == AZC_OK && ev->type == AZC_EV_ROLE_UPDATED) {
        rc = run(c, ev, SQL_ROLE_REWRITE_POLICIES, 2, (const char *[]){ lead[0], perms }, NULL, e);
    }
    free(perms);
    return rc;
}

static int assignment_create(PGconn *c, const azc_event *ev, azc_err *e)
{
    const json_t *d = ev->data, *p = json_object_get(ev->data, "principal");
    const char *lead[6] = { str(d, "id"), str(p, "type"), str(p, "id"), str(d, "role_id"),
                            str(d, "region"), str(d, "resource") };
    PGresult *res = NULL;
    int tuples = 0, rc, found;

    if ((rc = run(c, ev, SQL_POLICY_UPSERT, 6, lead, &tuples, e)) != AZC_OK || tuples > 0)
        return rc;
    /* Nothing written: either a newer version of the row exists (fine) or
     * the role is unknown here (the event cannot be applied). */
    rc = azc_pg_query(c, SQL_ROLE_EXISTS, 1, &lead[3], &res, e);
    if (rc != AZC_OK)
        return rc;
    found = PQntuples(res) > 0;
    PQclear(res);
    if (!found)
        return azc_err_set(e, AZC_EINVAL, "assignment %s names role %s, unknown in this region",
                           lead[0], lead[3]);
    return AZC_OK;
}

int az_event_apply(PGconn *c, const azc_event *ev, azc_err *e)
{
    const json_t *d = ev->data;
    const char *id = str(d, "id");
    int rc;

    switch (ev->type) {
    case AZC_EV_USER_CREATED:
    case AZC_EV_USER_UPDATED:
        return run(c, ev, SQL_USER_UPSERT, 2, (const char *[]){ id, str(d, "subject") }, NULL, e);
    case AZC_EV_USER_DELETED:
        if ((rc = run(c, ev, SQL_MEMBERS_OF_USER_DELETE, 1, &id, NULL, e)) != AZC_OK ||
            (rc = run(c, ev, SQL_POLICIES_OF_PRINCIPAL_DELETE, 2, (const char *[]){ "user", id },
                      NULL, e)) != AZC_OK)
            return rc;
        return run(c, ev, SQL_USER_DELETE, 1, &id, NULL, e);
    case AZC_EV_TEAM_CREATED:
    case AZC_EV_TEAM_UPDATED:
        return AZC_OK;
    case AZC_EV_TEAM_DELETED:
        if ((rc = run(c, ev, SQL_MEMBERS_OF_TEAM_DELETE, 1, &id, NULL, e)) != AZC_OK)
            return rc;
        return run(c, ev, SQL_POLICIES_OF_PRINCIPAL_DELETE, 2, (const char *[]){ "team", id },
                   NULL, e);
    case AZC_EV_TEAM_MEMBER_ADDED:
    case AZC_EV_TEAM_MEMBER_REMOVED:
        return run(c, ev, SQL_MEMBER_SET, 3,
                   (const char *[]){ str(d, "team_id"), str(d, "user_id"),
                                     ev->type == AZC_EV_TEAM_MEMBER_REMOVED ? "true" : "false" },
                   NULL, e);
    case AZC_EV_ROLE_CREATED:
    case AZC_EV_ROLE_UPDATED:
        return role_upsert(c, ev, e);
    case AZC_EV_ROLE_DELETED:
        return run(c, ev, SQL_ROLE_DELETE, 1, &id, NULL, e);
    case AZC_EV_ASSIGNMENT_CREATED:
        return assignment_create(c, ev, e);
    case AZC_EV_ASSIGNMENT_DELETED:
        return run(c, ev, SQL_POLICY_DELETE, 1, &id, NULL, e);
    default:
        return azc_err_set(e, AZC_EINVAL, "event type %s is not a policy change",
                           azc_event_type_name(ev->type));
    }
}
