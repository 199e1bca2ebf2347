/*
 * /v1/roles: named permission sets. A role's events carry its permissions:
 * the authz service expands them into every assignment of the role, so a
 * role change rewrites that role's assignments there (DESIGN section 3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/uuid.h"
#include "identity/api.h"
#include "identity/validate.h"

#define ROLE_JSON                                                                        \
    "json_build_object('id', id, 'name', name, 'permissions', to_json(permissions),"    \
    " 'version', version, 'created_at', created_at, 'updated_at', updated_at)"

/* Permissions travel as a JSON array text and are unpacked by the server:
 * no array literal is ever built in C. */
static const char SQL_INSERT[] =
    "INSERT INTO identity.roles (id, name, permissions)"
    " VALUES ($1, $2, ARRAY(SELECT json_array_elements_text($3::json)))"
    " RETURNING " ROLE_JSON;
static const char SQL_LIST[] =
    "SELECT " ROLE_JSON " FROM identity.roles"
    " WHERE NULLIF($1, '')::uuid IS NULL OR id > NULLIF($1, '')::uuid ORDER BY id LIMIT $2::int";
static const char SQL_GET[] = "SELECT " ROLE_JSON " FROM identity.roles WHERE id = $1";
static const char SQL_LOCK[] = "SELECT version FROM identity.roles WHERE id = $1 FOR UPDATE";
static const char SQL_UPDATE[] =
    "UPDATE identity.roles SET name = coalesce($2, name),"
    " permissions = CASE WHEN $3::json IS NULL THEN permissions"
    "                    ELSE ARRAY(SELECT json_array_elements_text($3::json)) END,"
    " version = version + 1, updated_at = now() WHERE id = $1 RETURNING " ROLE_JSON;
static const char SQL_IN_USE[] =
    "SELECT count(*) FROM identity.role_assignments WHERE role_id = $1";
static const char SQL_DELETE[] = "DELETE FROM identity.roles WHERE id = $1";

static const char *const FIELDS[] = { "name", "permissions", NULL };
static const char DUP_NAME[] = "a role with this name already exists";

/* Checks name and permissions when present; *perms is the JSON text of
 * the permissions (malloc'd, caller frees) or NULL. */
static int fields_or_reply(id_call *c, json_t *body, const char **name, char **perms)
{
    json_t *p = json_object_get(body, "permissions");
    char field[32];
    azc_err e;
    int ok;

    *perms = NULL;
    *name = id_body_string(c, body, "name", &ok);
    if (!ok)
        return 0;
    if (*name != NULL && !id_text_valid(*name, 100, 0)) {
        id_reply_invalid(c, "name", "name must be 1-100 characters without control characters");
        return 0;
    }
    if (p == NULL)
        return 1;
    if (id_permissions_check(p, field, sizeof field, &e) != AZC_OK) {
        id_reply_invalid(c, field, "%s", e.msg);
        return 0;
    }
    *perms = json_dumps(p, JSON_COMPACT);
    if (*perms == NULL) {
        id_reply_error(c, 500, "internal", "out of memory");
        return 0;
    }
    return 1;
}

static json_t *event_data(json_t *row)
{
    return json_pack("{s:O, s:O, s:O}", "id", json_object_get(row, "id"), "name",
                     json_object_get(row, "name"), "permissions",
                     json_object_get(row, "permissions"));
}

static void finish(id_call *c, azc_event_type type, PGresult *res, int status, const char *loc)
{
    json_t *row = id_row_json(res, 0, 0);
    char ver[24];

    if (row == NULL) {
        id_reply_error(c, 500, "internal", "cannot read the row");
        return;
    }
    if (!id_emit_or_reply(c, type, event_data(row))) {
        json_decref(row);
        return;
    }
    snprintf(ver, sizeof ver, "%lld",
             (long long)json_integer_value(json_object_get(row, "version")));
    id_set_etag(c, ver);
    id_commit_and_reply(c, status, row, loc);
}

void id_role_create(id_call *c)
{
    static const char *const required[] = { "name", "permissions", NULL };
    const char *name;
    char *perms = NULL, id[AZC_UUID_LEN], loc[64];
    PGresult *res = NULL;
    json_t *body;

    body = id_body_or_reply(c, FIELDS, required);
    if (body == NULL || !fields_or_reply(c, body, &name, &perms))
        return;
    if (!id_begin_or_reply(c))
        goto out;
    if (azc_uuid_new(id) != AZC_OK) {
        id_reply_error(c, 500, "internal", "random generator failed");
        goto out;
    }
    {
        const char *p[3] = { id, name, perms };
        if (!id_query_or_reply(c, SQL_INSERT, 3, p, &res, DUP_NAME))
            goto out;
    }
    snprintf(loc, sizeof loc, "/v1/roles/%s", id);
    finish(c, AZC_EV_ROLE_CREATED, res, 201, loc);
    PQclear(res);
out:
    free(perms);
}

void id_role_list(id_call *c)
{
    id_reply_page(c, SQL_LIST, 0, NULL, "id");
}

void id_role_get(id_call *c)
{
    id_reply_get(c, SQL_GET, "role");
}

void id_role_patch(id_call *c)
{
    const char *id = id_param_uuid_or_reply(c, "id", "role");
    const char *name;
    char *perms = NULL;
    PGresult *res = NULL;
    json_t *body;

    if (id == NULL || (body = id_body_or_reply(c, FIELDS, NULL)) == NULL ||
        !fields_or_reply(c, body, &name, &perms))
        return;
    if (name == NULL && perms == NULL) {
        id_reply_error(c, 400, "invalid_body", "nothing to change: give name or permissions");
        return;
    }
    if (!id_begin_or_reply(c) || !id_lock_row_or_reply(c, SQL_LOCK, id, "role"))
        goto out;
    {
        const char *p[3] = { id, name, perms };
        if (!id_query_or_reply(c, SQL_UPDATE, 3, p, &res, DUP_NAME))
            goto out;
    }
    finish(c, AZC_EV_ROLE_UPDATED, res, 200, NULL);
    PQclear(res);
out:
    free(perms);
}

void id_role_delete(id_call *c)
{
    const char *id = id_param_uuid_or_reply(c, "id", "role");
    PGresult *res = NULL;
    const char *p[1];
    long long uses;

    if (id == NULL || !id_begin_or_reply(c) || !id_lock_row_or_reply(c, SQL_LOCK, id, "role"))
        return;
    p[0] = id;
    /* The role row is locked FOR UPDATE, so no assignment of it can be
     * created until we commit (the foreign key needs a share lock). */
    if (!id_query_or_reply(c, SQL_IN_USE, 1, p, &res, NULL))
        return;
    uses = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (uses > 0) {
        id_reply_error(c, 409, "role_in_use",
                       "the role still has %lld assignment(s); delete them first", uses);
        return;
    }
    if (!id_query_or_reply(c, SQL_DELETE, 1, p, NULL, NULL) ||
        !id_emit_or_reply(c, AZC_EV_ROLE_DELETED, json_pack("{s:s}", "id", id)))
        return;
    id_commit_and_reply(c, 200, json_pack("{s:s, s:b}", "id", id, "deleted", 1), NULL);
}
