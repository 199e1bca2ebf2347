/*
 * /v1/teams and their members. Events carry ids only: a team's name and
 * description stay in the identity store.
 */
#include <stdio.h>
#include <string.h>

#include "common/uuid.h"
#include "identity/api.h"
#include "identity/validate.h"

#define TEAM_JSON                                                                        \
    "json_build_object('id', id, 'name', name, 'description', description,"             \
    " 'version', version, 'created_at', created_at, 'updated_at', updated_at)"
#define MEMBER_JSON                                                                      \
    "json_build_object('team_id', m.team_id, 'user_id', m.user_id, 'subject', u.subject," \
    " 'added_at', m.created_at)"

static const char SQL_INSERT[] =
    "INSERT INTO identity.teams (id, name, description) VALUES ($1, $2, coalesce($3, ''))"
    " RETURNING " TEAM_JSON;
static const char SQL_LIST[] =
    "SELECT " TEAM_JSON " FROM identity.teams"
    " WHERE NULLIF($1, '')::uuid IS NULL OR id > NULLIF($1, '')::uuid ORDER BY id LIMIT $2::int";
static const char SQL_GET[] = "SELECT " TEAM_JSON " FROM identity.teams WHERE id = $1";
static const char SQL_LOCK[] = "SELECT version FROM identity.teams WHERE id = $1 FOR UPDATE";
static const char SQL_UPDATE[] =
    "UPDATE identity.teams SET name = coalesce($2, name), description = coalesce($3, description),"
    " version = version + 1, updated_at = now() WHERE id = $1 RETURNING " TEAM_JSON;
static const char SQL_DELETE[] = "DELETE FROM identity.teams WHERE id = $1";
static const char SQL_EXISTS[] = "SELECT 1 FROM identity.teams WHERE id = $1";
/* Locks team and user rows (KEY SHARE) so neither is deleted under us. */
static const char SQL_LOCK_PAIR[] =
    "SELECT (SELECT 1 FROM identity.teams WHERE id = $1 FOR KEY SHARE),"
    "       (SELECT 1 FROM identity.users WHERE id = $2 FOR KEY SHARE)";
static const char SQL_ADD_MEMBER[] =
    "INSERT INTO identity.team_members (team_id, user_id) VALUES ($1, $2)"
    " ON CONFLICT DO NOTHING RETURNING 1";
static const char SQL_DEL_MEMBER[] =
    "DELETE FROM identity.team_members WHERE team_id = $1 AND user_id = $2 RETURNING 1";
static const char SQL_MEMBERS[] =
    "SELECT " MEMBER_JSON " FROM identity.team_members m JOIN identity.users u ON u.id = m.user_id"
    " WHERE m.team_id = $3 AND (NULLIF($1, '')::uuid IS NULL OR m.user_id > NULLIF($1, '')::uuid)"
    " ORDER BY m.user_id LIMIT $2::int";

static const char *const FIELDS[] = { "name", "description", NULL };
static const char *const REQUIRED[] = { "name", NULL };
static const char DUP_NAME[] = "a team with this name already exists";

static int fields_or_reply(id_call *c, json_t *body, const char **name, const char **desc)
{
    int ok;

    *name = id_body_string(c, body, "name", &ok);
    if (!ok)
        return 0;
    *desc = id_body_string(c, body, "description", &ok);
    if (!ok)
        return 0;
    if (*name != NULL && !id_text_valid(*name, 100, 0)) {
        id_reply_invalid(c, "name", "name must be 1-100 characters without control characters");
        return 0;
    }
    if (*desc != NULL && !id_text_valid(*desc, 1000, 1)) {
        id_reply_invalid(c, "description",
                         "description must be at most 1000 characters without control characters");
        return 0;
    }
    return 1;
}

static void reply_versioned(id_call *c, int status, json_t *row, const char *loc)
{
    char ver[24];

    snprintf(ver, sizeof ver, "%lld",
             (long long)json_integer_value(json_object_get(row, "version")));
    id_set_etag(c, ver);
    id_commit_and_reply(c, status, row, loc);
}

void id_team_create(id_call *c)
{
    const char *name, *desc;
    char id[AZC_UUID_LEN], loc[64];
    PGresult *res = NULL;
    json_t *body, *row;

    body = id_body_or_reply(c, FIELDS, REQUIRED);
    if (body == NULL || !fields_or_reply(c, body, &name, &desc) || !id_begin_or_reply(c))
        return;
    if (azc_uuid_new(id) != AZC_OK) {
        id_reply_error(c, 500, "internal", "random generator failed");
        return;
    }
    {
        const char *p[3] = { id, name, desc };
        if (!id_query_or_reply(c, SQL_INSERT, 3, p, &res, DUP_NAME))
            return;
    }
    row = id_row_json(res, 0, 0);
    PQclear(res);
    if (row == NULL) {
        id_reply_error(c, 500, "internal", "cannot read the new row");
        return;
    }
    if (!id_emit_or_reply(c, AZC_EV_TEAM_CREATED, json_pack("{s:s}", "id", id))) {
        json_decref(row);
        return;
    }
    snprintf(loc, sizeof loc, "/v1/teams/%s", id);
    reply_versioned(c, 201, row, loc);
}

void id_team_list(id_call *c)
{
    id_reply_page(c, SQL_LIST, 0, NULL, "id");
}

void id_team_get(id_call *c)
{
    id_reply_get(c, SQL_GET, "team");
}

void id_team_patch(id_call *c)
{
    const char *id = id_param_uuid_or_reply(c, "id", "team");
    const char *name, *desc;
    PGresult *res = NULL;
    json_t *body, *row;

    if (id == NULL || (body = id_body_or_reply(c, FIELDS, NULL)) == NULL ||
        !fields_or_reply(c, body, &name, &desc))
        return;
    if (name == NULL && desc == NULL) {
        id_reply_error(c, 400, "invalid_body", "nothing to change: give name or description");
        return;
    }
    if (!id_begin_or_reply(c) || !id_lock_row_or_reply(c, SQL_LOCK, id, "team"))
        return;
    {
        const char *p[3] = { id, name, desc };
        if (!id_query_or_reply(c, SQL_UPDATE, 3, p, &res, DUP_NAME))
            return;
    }
    row = id_row_json(res, 0, 0);
    PQclear(res);
    if (row == NULL) {
        id_reply_error(c, 500, "internal", "cannot read the row");
        return;
    }
    if (!id_emit_or_reply(c, AZC_EV_TEAM_UPDATED, json_pack("{s:s}", "id", id))) {
        json_decref(row);
        return;
    }
    reply_versioned(c, 200, row, NULL);
}

void id_team_delete(id_call *c)
{
    const char *id = id_param_uuid_or_reply(c, "id", "team");
    const char *p[1];

    if (id == NULL || !id_begin_or_reply(c) || !id_lock_row_or_reply(c, SQL_LOCK, id, "team") ||
        !id_remove_principal_or_reply(c, "team", id))
        return;
    p[0] = id;
    if (!id_query_or_reply(c, SQL_DELETE, 1, p, NULL, NULL) ||
        !id_emit_or_reply(c, AZC_EV_TEAM_DELETED, json_pack("{s:s}", "id", id)))
        return;
    id_commit_and_reply(c, 200, json_pack("{s:s, s:b}", "id", id, "deleted", 1), NULL);
}

/* Both path ids valid and both rows present (locked against deletion). */
static int member_pair_or_reply(id_call *c, const char **team, const char **user)
{
    PGresult *res = NULL;
    const char *p[2];
    int has_team, has_user;

    *team = id_param_uuid_or_reply(c, "id", "team");
    if (*team == NULL)
        return 0;
    *user = id_param_uuid_or_reply(c, "user_id", "user");
    if (*user == NULL || !id_begin_or_reply(c))
        return 0;
    p[0] = *team;
    p[1] = *user;
    if (!id_query_or_reply(c, SQL_LOCK_PAIR, 2, p, &res, NULL))
        return 0;
    has_team = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    has_user = strcmp(PQgetvalue(res, 0, 1), "1") == 0;
    PQclear(res);
    if (!has_team || !has_user) {
        id_reply_error(c, 404, "not_found", "no such %s", has_team ? "user" : "team");
        return 0;
    }
    return 1;
}

void id_member_put(id_call *c)
{
    const char *team, *user, *p[2];
    PGresult *res = NULL;
    int added;

    if (!member_pair_or_reply(c, &team, &user))
        return;
    p[0] = team;
    p[1] = user;
    if (!id_query_or_reply(c, SQL_ADD_MEMBER, 2, p, &res, NULL))
        return;
    added = PQntuples(res) == 1;
    PQclear(res);
    /* Already a member: nothing changes, no event; the revision returned
     * is the origin's latest, which covers the earlier add. */
    if (added && !id_emit_or_reply(c, AZC_EV_TEAM_MEMBER_ADDED,
                                   json_pack("{s:s, s:s}", "team_id", team, "user_id", user)))
        return;
    id_commit_and_reply(c, added ? 201 : 200,
                        json_pack("{s:s, s:s, s:b}", "team_id", team, "user_id", user, "added",
                                  added),
                        NULL);
}

void id_member_delete(id_call *c)
{
    const char *team, *user, *p[2];
    PGresult *res = NULL;
    int removed;

    if (!member_pair_or_reply(c, &team, &user))
        return;
    p[0] = team;
    p[1] = user;
    if (!id_query_or_reply(c, SQL_DEL_MEMBER, 2, p, &res, NULL))
        return;
    removed = PQntuples(res) == 1;
    PQclear(res);
    if (!removed) {
        id_reply_error(c, 404, "not_found", "the user is not a member of this team");
        return;
    }
    if (!id_emit_or_reply(c, AZC_EV_TEAM_MEMBER_REMOVED,
                          json_pack("{s:s, s:s}", "team_id", team, "user_id", user)))
        return;
    id_commit_and_reply(c, 200,
                        json_pack("{s:s, s:s, s:b}", "team_id", team, "user_id", user, "removed", 1),
                        NULL);
}

void id_member_list(id_call *c)
{
    const char *team = id_param_uuid_or_reply(c, "id", "team");
    PGresult *res = NULL;
    const char *p[1];
    int found;

    if (team == NULL)
        return;
    p[0] = team;
    if (!id_query_or_reply(c, SQL_EXISTS, 1, p, &res, NULL))
        return;
    found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        id_reply_error(c, 404, "not_found", "no such team");
        return;
    }
    id_reply_page(c, SQL_MEMBERS, 1, p, "user_id");
}

int id_remove_principal_or_reply(id_call *c, const char *type, const char *id)
{
    static const char del_by_user[] =
        "DELETE FROM identity.team_members WHERE user_id = $1 RETURNING team_id";
    static const char del_by_team[] =
        "DELETE FROM identity.team_members WHERE team_id = $1 RETURNING user_id";
    static const char del_assign[] =
        "DELETE FROM identity.role_assignments WHERE principal_type = $1 AND principal_id = $2"
        " RETURNING id";
    int is_user = strcmp(type, "user") == 0, i;
    const char *p1[1] = { id }, *p2[2] = { type, id };
    PGresult *res = NULL;

    if (!id_query_or_reply(c, is_user ? del_by_user : del_by_team, 1, p1, &res, NULL))
        return 0;
    for (i = 0; i < PQntuples(res); i++) {
        const char *other = PQgetvalue(res, i, 0);
        if (!id_emit_or_reply(c, AZC_EV_TEAM_MEMBER_REMOVED,
                              json_pack("{s:s, s:s}", "team_id", is_user ? other : id, "user_id",
                                        is_user ? id : other))) {
            PQclear(res);
            return 0;
        }
    }
    PQclear(res);
    if (!id_query_or_reply(c, del_assign, 2, p2, &res, NULL))
        return 0;
    for (i = 0; i < PQntuples(res); i++) {
        if (!id_emit_or_reply(c, AZC_EV_ASSIGNMENT_DELETED,
                              json_pack("{s:s}", "id", PQgetvalue(res, i, 0)))) {
            PQclear(res);
            return 0;
        }
    }
    PQclear(res);
    return 1;
}
