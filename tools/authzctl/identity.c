/*
 * authzctl's identity commands: users, teams, members, roles and role
 * assignments over the identity service's admin API
 * (docs/openapi/identity.yaml). One table describes each resource (its
 * path, list columns, and which flags become which body members), so
 * list, show, create, update and delete are written once.
 */
#include <stdlib.h>
#include <string.h>

#include "common/uuid.h"
#include "tools/authzctl/ctl.h"
#include "tools/authzctl/table.h"

enum field_kind {
    F_STRING,      /* --flag value -> "member": "value" */
    F_LIST,        /* --flag a --flag b,c -> "member": ["a","b","c"] */
};

typedef struct field {
    const char *flag;
    const char *member;
    enum field_kind kind;
    int required;      /* on create */
} field;

typedef struct column {
    const char *header;
    const char *member;      /* "principal.id": one level of nesting */
} column;

typedef struct resource {
    const char *plural;       /* "users" */
    const char *singular;     /* "user" */
    const char *path;         /* "/v1/users" */
    const column *cols;
    size_t ncols;
    const field *fields;      /* create and update */
    size_t nfields;
} resource;

static const column USER_COLS[] = {
    { "ID", "id" }, { "SUBJECT", "subject" }, { "EMAIL", "email" }, { "NAME", "name" },
    { "VERSION", "version" },
};
static const field USER_FIELDS[] = {
    { "subject", "subject", F_STRING, 1 },
    { "email", "email", F_STRING, 1 },
    { "name", "name", F_STRING, 1 },
};
static const column TEAM_COLS[] = {
    { "ID", "id" }, { "NAME", "name" }, { "DESCRIPTION", "description" }, { "VERSION", "version" },
};
static const field TEAM_FIELDS[] = {
    { "name", "name", F_STRING, 1 },
    { "description", "description", F_STRING, 0 },
};
static const column ROLE_COLS[] = {
    { "ID", "id" }, { "NAME", "name" }, { "PERMISSIONS", "permissions" }, { "VERSION", "version" },
};
static const field ROLE_FIELDS[] = {
    { "name", "name", F_STRING, 1 },
    { "permission", "permissions", F_LIST, 1 },
};
static const column ASSIGNMENT_COLS[] = {
    { "ID", "id" },         { "TYPE", "principal.type" }, { "PRINCIPAL", "principal.id" },
    { "ROLE", "role_id" },  { "REGION", "region" },       { "RESOURCE", "resource" },
};
static const column MEMBER_COLS[] = {
    { "USER", "user_id" }, { "SUBJECT", "subject" }, { "ADDED", "added_at" },
};

#define N(a) (sizeof a / sizeof a[0])

static const resource USERS = { "users", "user", "/v1/users", USER_COLS, N(USER_COLS),
                                USER_FIELDS, N(USER_FIELDS) };
static const resource TEAMS = { "teams", "team", "/v1/teams", TEAM_COLS, N(TEAM_COLS),
                                TEAM_FIELDS, N(TEAM_FIELDS) };
static const resource ROLES = { "roles", "role", "/v1/roles", ROLE_COLS, N(ROLE_COLS),
                                ROLE_FIELDS, N(ROLE_FIELDS) };
static const resource ASSIGNMENTS = { "assignments", "assignment", "/v1/role-assignments",
                                      ASSIGNMENT_COLS, N(ASSIGNMENT_COLS), NULL, 0 };
static const resource MEMBERS = { "members", "member", "/v1/teams", MEMBER_COLS, N(MEMBER_COLS),
                                  NULL, 0 };

/* ---- helpers ---------------------------------------------------------------- */

static int target(ctl *c, ctl_target *t)
{
    return ctl_target_get(c, "IDENTITY", "identity service", "identity-url", NULL, t);
}

static int id_arg(ctl *c, size_t i, const char *what, const char **out)
{
    const char *id = c->a.pos[i];

    if (!azc_uuid_valid(id))
        return ctl_fail(c, CTL_USAGE, "\"%s\" is not a %s id (a lower-case UUID)", id, what);
    *out = id;
    return CTL_OK;
}

static const json_t *member_get(const json_t *o, const char *path)
{
    const char *dot = strchr(path, '.');
    char head[64];

    if (dot == NULL)
        return json_object_get(o, path);
    snprintf(head, sizeof head, "%.*s", (int)(dot - path), path);
    return json_object_get(json_object_get(o, head), dot + 1);
}

static int rows_add(ctl_table *t, const resource *r, const json_t *items)
{
    const char *cells[CTL_TABLE_MAX_COLS];
    char bufs[CTL_TABLE_MAX_COLS][512];
    size_t i, k;

    for (i = 0; i < json_array_size(items); i++) {
        const json_t *it = json_array_get(items, i);

        for (k = 0; k < r->ncols; k++)
            cells[k] = ctl_cell(member_get(it, r->cols[k].member), bufs[k], sizeof bufs[k]);
        if (ctl_table_add(t, cells) != 0)
            return -1;
    }
    return 0;
}

/* Prints an object as FIELD VALUE rows. */
static int print_object(ctl *c, const json_t *o)
{
    static const char *const hdr[] = { "FIELD", "VALUE" };
    ctl_table *t = ctl_table_new(hdr, 2);
    const char *k;
    json_t *v;
    char buf[1024];

    if (t == NULL)
        return ctl_fail(c, CTL_FAIL, "out of memory");
    json_object_foreach((json_t *)o, k, v) {
        const char *cells[2];

        if (json_is_object(v) && json_object_get(v, "type") != NULL &&
            json_object_get(v, "id") != NULL) {
            snprintf(buf, sizeof buf, "%s %s", json_string_value(json_object_get(v, "type")),
                     json_string_value(json_object_get(v, "id")));
            cells[1] = buf;
        } else {
            cells[1] = ctl_cell(v, buf, sizeof buf);
        }
        cells[0] = k;
        if (ctl_table_add(t, cells) != 0) {
            ctl_table_free(t);
            return ctl_fail(c, CTL_FAIL, "out of memory");
        }
    }
    ctl_table_print(t, c->out);
    ctl_table_free(t);
    return CTL_OK;
}

/* The If-Match header of --if-match: a bare version is quoted as the
 * ETag the service sends ("3" -> "\"3\""). */
static size_t if_match(ctl *c, char *buf, size_t len, azc_client_header *h)
{
    const char *v = ctl_arg(&c->a, "if-match");

    if (v == NULL)
        return 0;
    if (v[0] == '"')
        snprintf(buf, len, "%s", v);
    else
        snprintf(buf, len, "\"%s\"", v);
    h->name = "If-Match";
    h->value = buf;
    return 1;
}

/* "created team <id>, revision v1.us..." for people; the body for --json. */
static int print_mutation(ctl *c, const char *verb, const char *what, const json_t *body)
{
    const char *id = json_string_value(json_object_get(body, "id"));
    const char *rev = json_string_value(json_object_get(body, "revision"));

    if (c->json) {
        ctl_print_json(c, body);
        return CTL_OK;
    }
    fprintf(c->out, "%s %s%s%s", verb, what, id != NULL ? " " : "", id != NULL ? id : "");
    if (rev != NULL)
        fprintf(c->out, "  revision %s", rev);
    fputc('\n', c->out);
    return CTL_OK;
}

/* Sets body members from the resource's fields given as flags; with
 * `create`, missing required ones are a usage error. Returns the count of
 * members set, or -1 after a message. */
static int body_fill(ctl *c, const resource *r, json_t *body, int create)
{
    size_t i;
    int n = 0;

    for (i = 0; i < r->nfields; i++) {
        const field *f = &r->fields[i];
        const char *vals[32];
        size_t nv = ctl_arg_all(&c->a, f->flag, vals, 32), k;
        int bad = 0;

        if (nv == 0) {
            if (create && f->required) {
                ctl_fail(c, CTL_USAGE, "%s %s needs --%s", r->plural, create ? "create" : "update",
                         f->flag);
                return -1;
            }
            continue;
        }
        if (f->kind == F_STRING) {
            bad = json_object_set_new(body, f->member, json_string(vals[nv - 1])) != 0;
        } else {
            json_t *arr = json_array();

            for (k = 0; k < nv && arr != NULL && !bad; k++) {
                const char *p = vals[k];

                /* --permission a,b is --permission a --permission b */
                while (!bad) {
                    const char *comma = strchr(p, ',');
                    size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

                    if (len > 0)
                        bad = json_array_append_new(arr, json_stringn(p, len)) != 0;
                    if (comma == NULL)
                        break;
                    p = comma + 1;
                }
            }
            bad = bad || arr == NULL || json_object_set_new(body, f->member, arr) != 0;
        }
        if (bad) {
            ctl_fail(c, CTL_FAIL, "out of memory (or --%s is not UTF-8)", f->flag);
            return -1;
        }
        n++;
    }
    return n;
}

/* ---- generic commands -------------------------------------------------------- */

static int list_pages(ctl *c, const resource *r, const char *path, const char *extra_query)
{
    ctl_target t;
    ctl_table *tab = NULL;
    json_t *all = NULL, *page = NULL;
    const char *limit = ctl_arg(&c->a, "limit"), *cursor = ctl_arg(&c->a, "cursor");
    const char *hdr[CTL_TABLE_MAX_COLS];
    int every = ctl_arg_has(&c->a, "all"), rc;
    char *cur = cursor != NULL ? strdup(cursor) : NULL;
    long lim = 100;
    size_t k;

    if ((rc = target(c, &t)) != CTL_OK) {
        free(cur);
        return rc;
    }
    if (limit != NULL && ctl_parse_long(limit, 500, &lim) != 0) {
        free(cur);
        return ctl_fail(c, CTL_USAGE, "--limit must be 1-500");
    }
    for (k = 0; k < r->ncols; k++)
        hdr[k] = r->cols[k].header;
    tab = ctl_table_new(hdr, r->ncols);
    all = json_array();
    if (tab == NULL || all == NULL) {
        rc = ctl_fail(c, CTL_FAIL, "out of memory");
        goto out;
    }
    for (;;) {
        char q[2048];
        char *enc = cur != NULL ? ctl_encode(cur) : NULL;
        const json_t *items;
        const char *next;

        snprintf(q, sizeof q, "%s?limit=%ld%s%s%s%s", path, lim, enc != NULL ? "&cursor=" : "",
                 enc != NULL ? enc : "", extra_query[0] != '\0' ? "&" : "", extra_query);
        free(enc);
        json_decref(page);
        page = NULL;
        if ((rc = ctl_call(c, &t, "GET", q, NULL, NULL, 0, &page, NULL)) != CTL_OK)
            goto out;
        items = json_object_get(page, "items");
        if (!json_is_array(items)) {
            rc = ctl_fail(c, CTL_FAIL, "%s answered a list without items", t.what);
            goto out;
        }
        if (json_array_extend(all, (json_t *)items) != 0 || rows_add(tab, r, items) != 0) {
            rc = ctl_fail(c, CTL_FAIL, "out of memory");
            goto out;
        }
        next = json_string_value(json_object_get(page, "next_cursor"));
        free(cur);
        cur = next != NULL ? strdup(next) : NULL;
        if (!every || cur == NULL)
            break;
    }
    if (c->json) {
        if (every) {
            json_t *o = json_pack("{s:O, s:n}", "items", all, "next_cursor");

            ctl_print_json(c, o);
            json_decref(o);
        } else {
            ctl_print_json(c, page);
        }
    } else {
        ctl_table_print(tab, c->out);
        if (cur != NULL)
            fprintf(c->err, "(more: add --cursor %s, or --all)\n", cur);
    }
    rc = CTL_OK;
out:
    free(cur);
    json_decref(page);
    json_decref(all);
    ctl_table_free(tab);
    return rc;
}

static int cmd_list(ctl *c)
{
    return list_pages(c, c->cmd->data, ((const resource *)c->cmd->data)->path, "");
}

static int cmd_show(ctl *c)
{
    const resource *r = c->cmd->data;
    ctl_target t;
    char path[256];
    const char *id = NULL;
    json_t *body = NULL;
    int rc;

    if ((rc = id_arg(c, 0, r->singular, &id)) != CTL_OK || (rc = target(c, &t)) != CTL_OK)
        return rc;
    snprintf(path, sizeof path, "%s/%s", r->path, id);
    if ((rc = ctl_call(c, &t, "GET", path, NULL, NULL, 0, &body, NULL)) == CTL_OK)
        rc = c->json ? (ctl_print_json(c, body), CTL_OK) : print_object(c, body);
    json_decref(body);
    return rc;
}

static int cmd_create(ctl *c)
{
    const resource *r = c->cmd->data;
    ctl_target t;
    json_t *body = json_object(), *ans = NULL;
    int rc;

    if (body == NULL)
        return ctl_fail(c, CTL_FAIL, "out of memory");
    if (body_fill(c, r, body, 1) < 0) {
        json_decref(body);
        return CTL_USAGE;
    }
    if ((rc = target(c, &t)) == CTL_OK &&
        (rc = ctl_call(c, &t, "POST", r->path, body, NULL, 0, &ans, NULL)) == CTL_OK)
        rc = print_mutation(c, "created", r->singular, ans);
    json_decref(body);
    json_decref(ans);
    return rc;
}

static int cmd_update(ctl *c)
{
    const resource *r = c->cmd->data;
    azc_client_header h[1];
    ctl_target t;
    char path[256], etag[96];
    const char *id = NULL;
    json_t *body, *ans = NULL;
    size_t nh;
    int rc, n;

    if ((rc = id_arg(c, 0, r->singular, &id)) != CTL_OK)
        return rc;
    if ((body = json_object()) == NULL)
        return ctl_fail(c, CTL_FAIL, "out of memory");
    n = body_fill(c, r, body, 0);
    if (n <= 0) {
        json_decref(body);
        if (n == 0)
            ctl_fail(c, CTL_USAGE, "%s update: nothing to change (see --help)", r->plural);
        return CTL_USAGE;
    }
    nh = if_match(c, etag, sizeof etag, h);
    snprintf(path, sizeof path, "%s/%s", r->path, id);
    if ((rc = target(c, &t)) == CTL_OK &&
        (rc = ctl_call(c, &t, "PATCH", path, body, h, nh, &ans, NULL)) == CTL_OK)
        rc = print_mutation(c, "updated", r->singular, ans);
    json_decref(body);
    json_decref(ans);
    return rc;
}

static int cmd_delete(ctl *c)
{
    const resource *r = c->cmd->data;
    azc_client_header h[1];
    ctl_target t;
    char path[256], etag[96];
    const char *id = NULL;
    json_t *ans = NULL;
    size_t nh;
    int rc;

    if ((rc = id_arg(c, 0, r->singular, &id)) != CTL_OK || (rc = target(c, &t)) != CTL_OK)
        return rc;
    nh = if_match(c, etag, sizeof etag, h);
    snprintf(path, sizeof path, "%s/%s", r->path, id);
    if ((rc = ctl_call(c, &t, "DELETE", path, NULL, h, nh, &ans, NULL)) == CTL_OK)
        rc = print_mutation(c, "deleted", r->singular, ans);
    json_decref(ans);
    return rc;
}

/* ---- members and assignments ---------------------------------------------------- */

static int cmd_members_list(ctl *c)
{
    char path[128];
    const char *team = NULL;
    int rc;

    if ((rc = id_arg(c, 0, "team", &team)) != CTL_OK)
        return rc;
    snprintf(path, sizeof path, "/v1/teams/%s/members", team);
    return list_pages(c, &MEMBERS, path, "");
}

static int members_change(ctl *c, const char *method)
{
    ctl_target t;
    char path[160];
    const char *team = NULL, *user = NULL, *rev;
    json_t *ans = NULL;
    azc_client_result res;
    int rc;

    if ((rc = id_arg(c, 0, "team", &team)) != CTL_OK ||
        (rc = id_arg(c, 1, "user", &user)) != CTL_OK ||
        (rc = target(c, &t)) != CTL_OK)
        return rc;
    snprintf(path, sizeof path, "/v1/teams/%s/members/%s", team, user);
    rc = ctl_call(c, &t, method, path, NULL, NULL, 0, &ans, &res);
    if (rc == CTL_OK) {
        rev = json_string_value(json_object_get(ans, "revision"));
        if (c->json)
            ctl_print_json(c, ans);
        else if (strcmp(method, "PUT") == 0)
            fprintf(c->out, "%s user %s to team %s  revision %s\n",
                    res.status == 201 ? "added" : "already a member:", user, team,
                    rev != NULL ? rev : "-");
        else
            fprintf(c->out, "removed user %s from team %s  revision %s\n", user, team,
                    rev != NULL ? rev : "-");
    }
    azc_client_result_clear(&res);
    json_decref(ans);
    return rc;
}

static int cmd_members_add(ctl *c)
{
    return members_change(c, "PUT");
}

static int cmd_members_remove(ctl *c)
{
    return members_change(c, "DELETE");
}

static int cmd_assignments_list(ctl *c)
{
    const char *user = ctl_arg(&c->a, "user"), *team = ctl_arg(&c->a, "team");
    char q[128] = "";

    if (user != NULL && team != NULL)
        return ctl_fail(c, CTL_USAGE, "give --user or --team, not both");
    if ((user != NULL && !azc_uuid_valid(user)) || (team != NULL && !azc_uuid_valid(team)))
        return ctl_fail(c, CTL_USAGE, "--user and --team take an id (a lower-case UUID)");
    if (user != NULL || team != NULL)
        snprintf(q, sizeof q, "principal_type=%s&principal_id=%s", user != NULL ? "user" : "team",
                 user != NULL ? user : team);
    return list_pages(c, &ASSIGNMENTS, ASSIGNMENTS.path, q);
}

static int cmd_assignments_create(ctl *c)
{
    const char *user = ctl_arg(&c->a, "user"), *team = ctl_arg(&c->a, "team");
    const char *role = ctl_arg(&c->a, "role"), *in = ctl_arg(&c->a, "in");
    const char *res = ctl_arg(&c->a, "resource");
    ctl_target t;
    json_t *body, *ans = NULL;
    int rc;

    if ((user == NULL) == (team == NULL))
        return ctl_fail(c, CTL_USAGE, "assignments create needs --user ID or --team ID");
    if (role == NULL || in == NULL || res == NULL)
        return ctl_fail(c, CTL_USAGE, "assignments create needs --role ID, --in REGION|'*' and "
                                      "--resource TYPE/ID|TYPE/*|'*'");
    body = json_pack("{s:{s:s, s:s}, s:s, s:s, s:s}", "principal", "type",
                     user != NULL ? "user" : "team", "id", user != NULL ? user : team, "role_id",
                     role, "region", in, "resource", res);
    if (body == NULL)
        return ctl_fail(c, CTL_USAGE, "the flags must be UTF-8");
    if ((rc = target(c, &t)) == CTL_OK &&
        (rc = ctl_call(c, &t, "POST", ASSIGNMENTS.path, body, NULL, 0, &ans, NULL)) == CTL_OK)
        rc = print_mutation(c, "created", "assignment", ans);
    json_decref(body);
    json_decref(ans);
    return rc;
}

/* ---- the command table ---------------------------------------------------------- */

static const ctl_flag LIST_FLAGS[] = {
    { "limit", "N", "page size, 1-500 (default 100)" },
    { "cursor", "C", "start at this next_cursor of a previous page" },
    { "all", NULL, "follow next_cursor through every page" },
};
static const ctl_flag IFMATCH_FLAGS[] = {
    { "if-match", "VERSION", "only if the version (ETag) is still this one (else 412)" },
};
static const ctl_flag USER_CREATE_FLAGS[] = {
    { "subject", "SUB", "the JWT sub of the user's requests" },
    { "email", "EMAIL", "e-mail address" },
    { "name", "NAME", "display name" },
};
static const ctl_flag USER_UPDATE_FLAGS[] = {
    { "subject", "SUB", "new subject" },
    { "email", "EMAIL", "new e-mail address" },
    { "name", "NAME", "new display name" },
    { "if-match", "VERSION", "only if the version (ETag) is still this one (else 412)" },
};
static const ctl_flag TEAM_CREATE_FLAGS[] = {
    { "name", "NAME", "unique team name" },
    { "description", "TEXT", "description" },
};
static const ctl_flag TEAM_UPDATE_FLAGS[] = {
    { "name", "NAME", "new name" },
    { "description", "TEXT", "new description" },
    { "if-match", "VERSION", "only if the version (ETag) is still this one (else 412)" },
};
static const ctl_flag ROLE_CREATE_FLAGS[] = {
    { "name", "NAME", "unique role name" },
    { "permission", "PERM", "TYPE:VERB, TYPE:* or *; repeat, or comma-separate" },
};
static const ctl_flag ROLE_UPDATE_FLAGS[] = {
    { "name", "NAME", "new name" },
    { "permission", "PERM", "the new permissions (replace all); repeat, or comma-separate" },
    { "if-match", "VERSION", "only if the version (ETag) is still this one (else 412)" },
};
static const ctl_flag ASSIGN_LIST_FLAGS[] = {
    { "limit", "N", "page size, 1-500 (default 100)" },
    { "cursor", "C", "start at this next_cursor of a previous page" },
    { "all", NULL, "follow next_cursor through every page" },
    { "user", "ID", "only this user's assignments" },
    { "team", "ID", "only this team's assignments" },
};
static const ctl_flag ASSIGN_CREATE_FLAGS[] = {
    { "user", "ID", "assign to this user" },
    { "team", "ID", "assign to this team" },
    { "role", "ID", "the role" },
    { "in", "REGION", "the region it applies in, or '*' for every region" },
    { "resource", "RES", "TYPE/ID, TYPE/* or '*'" },
};

#define FL(a) a, N(a)

const ctl_command ctl_identity_commands[] = {
    { "users list", "", "list users", FL(LIST_FLAGS), 0, 0, cmd_list, &USERS },
    { "users show", "ID", "show one user", NULL, 0, 1, 1, cmd_show, &USERS },
    { "users create", "--subject SUB --email EMAIL --name NAME", "create a user",
      FL(USER_CREATE_FLAGS), 0, 0, cmd_create, &USERS },
    { "users update", "ID [--subject SUB] [--email EMAIL] [--name NAME]", "change a user",
      FL(USER_UPDATE_FLAGS), 1, 1, cmd_update, &USERS },
    { "users delete", "ID", "delete a user, with its memberships and assignments",
      FL(IFMATCH_FLAGS), 1, 1, cmd_delete, &USERS },
    { "teams list", "", "list teams", FL(LIST_FLAGS), 0, 0, cmd_list, &TEAMS },
    { "teams show", "ID", "show one team", NULL, 0, 1, 1, cmd_show, &TEAMS },
    { "teams create", "--name NAME [--description TEXT]", "create a team",
      FL(TEAM_CREATE_FLAGS), 0, 0, cmd_create, &TEAMS },
    { "teams update", "ID [--name NAME] [--description TEXT]", "rename a team or change its "
      "description", FL(TEAM_UPDATE_FLAGS), 1, 1, cmd_update, &TEAMS },
    { "teams delete", "ID", "delete a team, with its memberships and assignments",
      FL(IFMATCH_FLAGS), 1, 1, cmd_delete, &TEAMS },
    { "members list", "TEAM", "list a team's members", FL(LIST_FLAGS), 1, 1, cmd_members_list,
      &MEMBERS },
    { "members add", "TEAM USER", "add a user to a team (idempotent)", NULL, 0, 2, 2,
      cmd_members_add, &MEMBERS },
    { "members remove", "TEAM USER", "remove a user from a team", NULL, 0, 2, 2,
      cmd_members_remove, &MEMBERS },
    { "roles list", "", "list roles", FL(LIST_FLAGS), 0, 0, cmd_list, &ROLES },
    { "roles show", "ID", "show one role", NULL, 0, 1, 1, cmd_show, &ROLES },
    { "roles create", "--name NAME --permission PERM...", "create a role",
      FL(ROLE_CREATE_FLAGS), 0, 0, cmd_create, &ROLES },
    { "roles update", "ID [--name NAME] [--permission PERM...]", "rename a role or replace its "
      "permissions", FL(ROLE_UPDATE_FLAGS), 1, 1, cmd_update, &ROLES },
    { "roles delete", "ID", "delete a role (refused while it is assigned)", FL(IFMATCH_FLAGS), 1,
      1, cmd_delete, &ROLES },
    { "assignments list", "[--user ID | --team ID]", "list role assignments",
      FL(ASSIGN_LIST_FLAGS), 0, 0, cmd_assignments_list, &ASSIGNMENTS },
    { "assignments create", "(--user ID | --team ID) --role ID --in REGION --resource RES",
      "assign a role to a user or team, in a region, on a resource", FL(ASSIGN_CREATE_FLAGS), 0,
      0, cmd_assignments_create, &ASSIGNMENTS },
    { "assignments delete", "ID", "delete a role assignment", FL(IFMATCH_FLAGS), 1, 1,
      cmd_delete, &ASSIGNMENTS },
};
const size_t ctl_identity_ncommands = N(ctl_identity_commands);
