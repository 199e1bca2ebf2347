/*
 * /v1/users: the people of this region's orgs. Only `id` and `subject`
 * (the JWT sub their requests carry) leave the region in events; e-mail
 * and name stay in the identity store.
 */
#include <stdlib.h>
#include <string.h>

#include "common/uuid.h"
#include "identity/api.h"
#include "identity/validate.h"

#define USER_JSON                                                                        \
    "json_build_object('id', id, 'subject', subject, 'email', email, 'name', name,"     \
    " 'version', version, 'created_at', created_at, 'updated_at', updated_at)"

static const char SQL_INSERT[] =
    "INSERT INTO identity.users (id, subject, email, name) VALUES ($1, $2, $3, $4)"
    " RETURNING " USER_JSON;
static const char SQL_LIST[] =
    "SELECT " USER_JSON " FROM identity.users"
    " WHERE NULLIF($1, '')::uuid IS NULL OR id > NULLIF($1, '')::uuid ORDER BY id LIMIT $2::int";
static const char SQL_GET[] = "SELECT " USER_JSON " FROM identity.users WHERE id = $1";
static const char SQL_LOCK[] = "SELECT version FROM identity.users WHERE id = $1 FOR UPDATE";
static const char SQL_UPDATE[] =
    "UPDATE identity.users SET subject = coalesce($2, subject), email = coalesce($3, email),"
    " name = coalesce($4, name), version = version + 1, updated_at = now()"
    " WHERE id = $1 RETURNING " USER_JSON;
static const char SQL_DELETE[] = "DELETE FROM identity.users WHERE id = $1";

static const char *const FIELDS[] = { "subject", "email", "name", NULL };
static const char DUP_SUBJECT[] = "a user with this subject already exists";

/* Checks whichever of subject, email, name are present. */
static int fields_or_reply(id_call *c, json_t *body, const char **sub, const char **email,
                           const char **name)
{
    int ok1, ok2, ok3;

    *sub = id_body_string(c, body, "subject", &ok1);
    if (!ok1)
        return 0;
    *email = id_body_string(c, body, "email", &ok2);
    if (!ok2)
        return 0;
    *name = id_body_string(c, body, "name", &ok3);
    if (!ok3)
        return 0;
    if (*sub != NULL && !azc_subject_valid(*sub)) {
        id_reply_invalid(c, "subject", "subject must be 1-256 printable characters without spaces");
        return 0;
    }
    if (*email != NULL && !id_email_valid(*email)) {
        id_reply_invalid(c, "email", "email must look like name@domain (3-254 characters)");
        return 0;
    }
    if (*name != NULL && !id_text_valid(*name, 200, 0)) {
        id_reply_invalid(c, "name", "name must be 1-200 characters without control characters");
        return 0;
    }
    return 1;
}

static json_t *event_data(json_t *row)
{
    return json_pack("{s:O, s:O}", "id", json_object_get(row, "id"), "subject",
                     json_object_get(row, "subject"));
}

void id_user_create(id_call *c)
{
    const char *sub, *email, *name;
    char id[AZC_UUID_LEN], loc[64];
    PGresult *res = NULL;
    json_t *body, *row;

    body = id_body_or_reply(c, FIELDS, FIELDS);
    if (body == NULL || !fields_or_reply(c, body, &sub, &email, &name) || !id_begin_or_reply(c))
        return;
    if (azc_uuid_new(id) != AZC_OK) {
        id_reply_error(c, 500, "internal", "random generator failed");
        return;
    }
    {
        const char *p[4] = { id, sub, email, name };
        if (!id_query_or_reply(c, SQL_INSERT, 4, p, &res, DUP_SUBJECT))
            return;
    }
    row = id_row_json(res, 0, 0);
    PQclear(res);
    if (row == NULL || !id_emit_or_reply(c, AZC_EV_USER_CREATED, event_data(row))) {
        json_decref(row);
        if (row == NULL)
            id_reply_error(c, 500, "internal", "cannot read the new row");
        return;
    }
    snprintf(loc, sizeof loc, "/v1/users/%s", id);
    id_set_etag(c, "1");
    id_commit_and_reply(c, 201, row, loc);
}

void id_user_list(id_call *c)
{
    id_reply_page(c, SQL_LIST, 0, NULL, "id");
}

void id_user_get(id_call *c)
{
    id_reply_get(c, SQL_GET, "user");
}

void id_user_patch(id_call *c)
{
    const char *id = id_param_uuid_or_reply(c, "id", "user");
    const char *sub, *email, *name;
    PGresult *res = NULL;
    json_t *body, *row, *v;
    char ver[24];

    if (id == NULL || (body = id_body_or_reply(c, FIELDS, NULL)) == NULL ||
        !fields_or_reply(c, body, &sub, &email, &name))
        return;
    if (sub == NULL && email == NULL && name == NULL) {
        id_reply_error(c, 400, "invalid_body", "nothing to change: give subject, email or name");
        return;
    }
    if (!id_begin_or_reply(c) || !id_lock_row_or_reply(c, SQL_LOCK, id, "user"))
        return;
    {
        const char *p[4] = { id, sub, email, name };
        if (!id_query_or_reply(c, SQL_UPDATE, 4, p, &res, DUP_SUBJECT))
            return;
    }
    row = id_row_json(res, 0, 0);
    PQclear(res);
    if (row == NULL || !id_emit_or_reply(c, AZC_EV_USER_UPDATED, event_data(row))) {
        json_decref(row);
        if (row == NULL)
            id_reply_error(c, 500, "internal", "cannot read the row");
        return;
    }
    v = json_object_get(row, "version");
    snprintf(ver, sizeof ver, "%lld", (long long)json_integer_value(v));
    id_set_etag(c, ver);
    id_commit_and_reply(c, 200, row, NULL);
}

void id_user_delete(id_call *c)
{
    const char *id = id_param_uuid_or_reply(c, "id", "user");
    const char *p[1];

    if (id == NULL || !id_begin_or_reply(c) || !id_lock_row_or_reply(c, SQL_LOCK, id, "user") ||
        !id_remove_principal_or_reply(c, "user", id))
        return;
    p[0] = id;
    if (!id_query_or_reply(c, SQL_DELETE, 1, p, NULL, NULL) ||
        !id_emit_or_reply(c, AZC_EV_USER_DELETED, json_pack("{s:s}", "id", id)))
        return;
    id_commit_and_reply(c, 200, json_pack("{s:s, s:b}", "id", id, "deleted", 1), NULL);
}
