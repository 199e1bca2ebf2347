/*
 * /v1/role-assignments: a role granted to a user or a team, in one region
 * or all ("*"), on a resource: "<type>/<id>", every resource of a type
 * ("<type>/" then "*"), or "*".
 */
#include <stdio.h>
#include <string.h>

#include "common/text.h"
#include "common/uuid.h"
#include "identity/api.h"
#include "identity/validate.h"

#define ASSIGNMENT_JSON                                                                  \
    "json_build_object('id', id, 'principal', json_build_object('type', principal_type," \
    " 'id', principal_id), 'role_id', role_id, 'region', region, 'resource', resource,"  \
    " 'version', version, 'created_at', created_at)"

static const char SQL_USER[] = "SELECT 1 FROM identity.users WHERE id = $1 FOR KEY SHARE";
static const char SQL_TEAM[] = "SELECT 1 FROM identity.teams WHERE id = $1 FOR KEY SHARE";
static const char SQL_ROLE[] = "SELECT 1 FROM identity.roles WHERE id = $1 FOR KEY SHARE";
static const char SQL_INSERT[] =
    "INSERT INTO identity.role_assignments (id, principal_type, principal_id, role_id, region,"
    " resource) VALUES ($1, $2, $3, $4, $5, $6) RETURNING " ASSIGNMENT_JSON;
static const char SQL_LIST[] =
    "SELECT " ASSIGNMENT_JSON " FROM identity.role_assignments"
    " WHERE (NULLIF($1, '')::uuid IS NULL OR id > NULLIF($1, '')::uuid)"
    "   AND ($3 = '' OR (principal_type = $3 AND principal_id = NULLIF($4, '')::uuid))"
    " ORDER BY id LIMIT $2::int";
static const char SQL_LOCK[] =
    "SELECT version FROM identity.role_assignments WHERE id = $1 FOR UPDATE";
static const char SQL_DELETE[] = "DELETE FROM identity.role_assignments WHERE id = $1";

static int region_known(const id_shared *sh, const char *r)
{
    size_t i;

    if (strcmp(r, "*") == 0)
        return 1;
    for (i = 0; i < sh->set.nregions; i++)
        if (strcmp(sh->set.regions[i], r) == 0)
            return 1;
    return 0;
}

/* 1 if a row exists for `sql` ($1 = id), locked against deletion. */
static int exists_or_reply(id_call *c, const char *sql, const char *id, int *found)
{
    const char *p[1] = { id };
    PGresult *res = NULL;

    if (!id_query_or_reply(c, sql, 1, p, &res, NULL))
        return 0;
    *found = PQntuples(res) == 1;
    PQclear(res);
    return 1;
}

void id_assignment_create(id_call *c)
{
    static const char *const fields[] = { "principal", "role_id", "region", "resource", NULL };
    const char *ptype, *pid, *role, *region, *resource;
    char id[AZC_UUID_LEN], loc[80];
    PGresult *res = NULL;
    json_t *body, *pr, *row;
    int ok, found;

    if ((body = id_body_or_reply(c, fields, fields)) == NULL)
        return;
    pr = json_object_get(body, "principal");
    ptype = json_string_value(json_object_get(pr, "type"));
    pid = json_string_value(json_object_get(pr, "id"));
    if (!json_is_object(pr) || json_object_size(pr) != 2 || ptype == NULL || pid == NULL) {
        id_reply_invalid(c, "principal", "principal must be {\"type\": \"user\"|\"team\", \"id\": \"<uuid>\"}");
        return;
    }
    if (strcmp(ptype, "user") != 0 && strcmp(ptype, "team") != 0) {
        id_reply_invalid(c, "principal.type", "principal type must be \"user\" or \"team\"");
        return;
    }
    if (!azc_uuid_valid(pid)) {
        id_reply_invalid(c, "principal.id", "principal id must be a lower-case UUID");
        return;
    }
    role = id_body_string(c, body, "role_id", &ok);
    if (!ok)
        return;
    if (!azc_uuid_valid(role)) {
        id_reply_invalid(c, "role_id", "role_id must be a lower-case UUID");
        return;
    }
    region = id_body_string(c, body, "region", &ok);
    if (!ok)
        return;
    if (!region_known(c->sh, region)) {
        id_reply_invalid(c, "region", "unknown region \"%.*s\" (a configured region or \"*\")",
                         (int)azc_utf8_cut(region, 40), region);
        return;
    }
    resource = id_body_string(c, body, "resource", &ok);
    if (!ok)
        return;
    if (!azc_resource_valid(resource)) {
        id_reply_invalid(c, "resource",
                         "resource must be \"<type>/<id>\", \"<type>/*\" or \"*\"");
        return;
    }
    if (!id_begin_or_reply(c))
        return;
    if (!exists_or_reply(c, strcmp(ptype, "user") == 0 ? SQL_USER : SQL_TEAM, pid, &found))
        return;
    if (!found) {
        id_reply_invalid(c, "principal.id", "no such %s", ptype);
        return;
    }
    if (!exists_or_reply(c, SQL_ROLE, role, &found))
        return;
    if (!found) {
        id_reply_invalid(c, "role_id", "no such role");
        return;
    }
    if (azc_uuid_new(id) != AZC_OK) {
        id_reply_error(c, 500, "internal", "random generator failed");
        return;
    }
    {
        const char *p[6] = { id, ptype, pid, role, region, resource };
        if (!id_query_or_reply(c, SQL_INSERT, 6, p, &res, "this assignment already exists"))
            return;
    }
    row = id_row_json(res, 0, 0);
    PQclear(res);
    if (row == NULL) {
        id_reply_error(c, 500, "internal", "cannot read the new row");
        return;
    }
    if (!id_emit_or_reply(c, AZC_EV_ASSIGNMENT_CREATED,
                          json_pack("{s:s, s:{s:s, s:s}, s:s, s:s, s:s}", "id", id, "principal",
                                    "type", ptype, "id", pid, "role_id", role, "region", region,
                                    "resource", resource))) {
        json_decref(row);
        return;
    }
    snprintf(loc, sizeof loc, "/v1/role-assignments/%s", id);
    id_set_etag(c, "1");
    id_commit_and_reply(c, 201, row, loc);
}

void id_assignment_list(id_call *c)
{
    const char *type = azc_http_req_query(c->r, "principal_type");
    const char *pid = azc_http_req_query(c->r, "principal_id");
    const char *extra[2];

    if ((type == NULL) != (pid == NULL)) {
        id_reply_error(c, 400, "invalid_query",
                       "give both principal_type and principal_id, or neither");
        return;
    }
    if (type != NULL && strcmp(type, "user") != 0 && strcmp(type, "team") != 0) {
        id_reply_error(c, 400, "invalid_query", "principal_type must be \"user\" or \"team\"");
        return;
    }
    if (pid != NULL && !azc_uuid_valid(pid)) {
        id_reply_error(c, 400, "invalid_query", "principal_id must be a lower-case UUID");
        return;
    }
    extra[0] = type != NULL ? type : "";
    extra[1] = pid != NULL ? pid : "";
    id_reply_page(c, SQL_LIST, 2, extra, "id");
}

void id_assignment_delete(id_call *c)
{
    const char *id = id_param_uuid_or_reply(c, "id", "role assignment");
    const char *p[1];

    if (id == NULL || !id_begin_or_reply(c) ||
        !id_lock_row_or_reply(c, SQL_LOCK, id, "role assignment"))
        return;
    p[0] = id;
    if (!id_query_or_reply(c, SQL_DELETE, 1, p, NULL, NULL) ||
        !id_emit_or_reply(c, AZC_EV_ASSIGNMENT_DELETED, json_pack("{s:s}", "id", id)))
        return;
    id_commit_and_reply(c, 200, json_pack("{s:s, s:b}", "id", id, "deleted", 1), NULL);
}
