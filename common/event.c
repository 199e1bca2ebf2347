/*
 * Identity event envelope codec; see event.h for the format and why the
 * decoder is strict.
 */
#include "common/event.h"

#include <stdlib.h>
#include <string.h>

#include "common/text.h"

static const char *const type_names[AZC_EV__COUNT] = {
    [AZC_EV_USER_CREATED] = "user.created",
    [AZC_EV_USER_UPDATED] = "user.updated",
    [AZC_EV_USER_DELETED] = "user.deleted",
    [AZC_EV_TEAM_CREATED] = "team.created",
    [AZC_EV_TEAM_UPDATED] = "team.updated",
    [AZC_EV_TEAM_DELETED] = "team.deleted",
    [AZC_EV_TEAM_MEMBER_ADDED] = "team.member_added",
    [AZC_EV_TEAM_MEMBER_REMOVED] = "team.member_removed",
    [AZC_EV_ROLE_CREATED] = "role.created",
    [AZC_EV_ROLE_UPDATED] = "role.updated",
    [AZC_EV_ROLE_DELETED] = "role.deleted",
    [AZC_EV_ASSIGNMENT_CREATED] = "assignment.created",
    [AZC_EV_ASSIGNMENT_DELETED] = "assignment.deleted",
    [AZC_EV_HEARTBEAT] = "heartbeat",
    [AZC_EV_RESYNC_BEGIN] = "resync.begin",
    [AZC_EV_RESYNC_END] = "resync.end",
};

static const char *const members[] = {
    "version", "id", "type", "origin", "epoch", "seq", "hlc", "data"
};

const char *azc_event_type_name(azc_event_type t)
{
    if ((unsigned)t >= AZC_EV__COUNT)
        return NULL;
    return type_names[t];
}

int azc_event_type_parse(const char *name, azc_event_type *out, azc_err *e)
{
    size_t i;

    for (i = 0; name != NULL && i < AZC_EV__COUNT; i++) {
        if (strcmp(name, type_names[i]) == 0) {
            *out = (azc_event_type)i;
            return AZC_OK;
        }
    }
    return azc_err_set(e, AZC_EINVAL, "event: unknown type \"%.*s\"",
                       (int)azc_utf8_cut(name, 64), name != NULL ? name : "");
}

void azc_event_clear(azc_event *ev)
{
    if (ev == NULL)
        return;
    json_decref(ev->data);
    memset(ev, 0, sizeof *ev);
}

/* Checks the fields shared by encode and decode. */
static int validate(const azc_event *ev, azc_err *e)
{
    if (ev->version != AZC_EVENT_VERSION)
        return azc_err_set(e, AZC_EINVAL, "event: unsupported version %d (this build reads %d)",
                           ev->version, AZC_EVENT_VERSION);
    if (!azc_uuid_valid(ev->id))
        return azc_err_set(e, AZC_EINVAL, "event: \"id\" must be a lower-case UUID");
    if (azc_event_type_name(ev->type) == NULL)
        return azc_err_set(e, AZC_EINVAL, "event: unknown type");
    if (!azc_region_valid(ev->origin))
        return azc_err_set(e, AZC_EINVAL, "event: \"origin\" must be a region name");
    if (ev->epoch == 0 || ev->epoch > (uint64_t)INT64_MAX)
        return azc_err_set(e, AZC_EINVAL, "event: \"epoch\" must be a positive 63-bit integer");
    if (ev->seq == 0 && ev->type != AZC_EV_HEARTBEAT)
        return azc_err_set(e, AZC_EINVAL, "event: \"seq\" must be at least 1");
    if (ev->seq > (uint64_t)INT64_MAX)
        return azc_err_set(e, AZC_EINVAL, "event: \"seq\" out of range");
    if (ev->hlc == 0 || ev->hlc > (uint64_t)INT64_MAX)
        return azc_err_set(e, AZC_EINVAL, "event: \"hlc\" must be a positive 63-bit integer");
    if (ev->data != NULL && !json_is_object(ev->data))
        return azc_err_set(e, AZC_EINVAL, "event: \"data\" must be an object");
    return AZC_OK;
}

static int get_uint(json_t *root, const char *name, uint64_t *out, azc_err *e)
{
    json_t *v = json_object_get(root, name);

    if (v == NULL)
        return azc_err_set(e, AZC_EINVAL, "event: missing \"%s\"", name);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return azc_err_set(e, AZC_EINVAL, "event: \"%s\" must be a non-negative integer", name);
    *out = (uint64_t)json_integer_value(v);
    return AZC_OK;
}

static int get_str(json_t *root, const char *name, char *buf, size_t len, azc_err *e)
{
    json_t *v = json_object_get(root, name);

    if (v == NULL)
        return azc_err_set(e, AZC_EINVAL, "event: missing \"%s\"", name);
    if (!json_is_string(v))
        return azc_err_set(e, AZC_EINVAL, "event: \"%s\" must be a string", name);
    if (json_string_length(v) >= len)
        return azc_err_set(e, AZC_EINVAL, "event: \"%s\" is too long", name);
    memcpy(buf, json_string_value(v), json_string_length(v) + 1);
    return AZC_OK;
}

static int decode_root(json_t *root, azc_event *ev, azc_err *e)
{
    const char *key;
    json_t *v;
    char type[64];
    uint64_t u;
    size_t i;
    int rc;

    if (!json_is_object(root))
        return azc_err_set(e, AZC_EINVAL, "event: top level must be an object");
    json_object_foreach(root, key, v) {
        int known = 0;
        for (i = 0; i < sizeof members / sizeof members[0]; i++)
            known |= strcmp(key, members[i]) == 0;
        if (!known)
            return azc_err_set(e, AZC_EINVAL, "event: unknown member \"%.*s\"",
                               (int)azc_utf8_cut(key, 64), key);
    }
    if ((rc = get_uint(root, "version", &u, e)) != AZC_OK)
        return rc;
    if (u != AZC_EVENT_VERSION)
        return azc_err_set(e, AZC_EINVAL, "event: unsupported version %llu (this build reads %d)",
                           (unsigned long long)u, AZC_EVENT_VERSION);
    ev->version = (int)u;
    if ((rc = get_str(root, "id", ev->id, sizeof ev->id, e)) != AZC_OK)
        return rc;
    if ((rc = get_str(root, "type", type, sizeof type, e)) != AZC_OK)
        return rc;
    if ((rc = azc_event_type_parse(type, &ev->type, e)) != AZC_OK)
        return rc;
    if ((rc = get_str(root, "origin", ev->origin, sizeof ev->origin, e)) != AZC_OK)
        return rc;
    ev->epoch = 1;   /* envelopes written before epochs existed */
    if (json_object_get(root, "epoch") != NULL &&
        (rc = get_uint(root, "epoch", &ev->epoch, e)) != AZC_OK)
        return rc;
    if ((rc = get_uint(root, "seq", &ev->seq, e)) != AZC_OK)
        return rc;
    if ((rc = get_uint(root, "hlc", &ev->hlc, e)) != AZC_OK)
        return rc;
    v = json_object_get(root, "data");
    if (v == NULL)
        return azc_err_set(e, AZC_EINVAL, "event: missing \"data\"");
    if (!json_is_object(v))
        return azc_err_set(e, AZC_EINVAL, "event: \"data\" must be an object");
    if ((rc = validate(ev, e)) != AZC_OK)
        return rc;
    ev->data = json_incref(v);
    return AZC_OK;
}

int azc_event_decode(const void *buf, size_t len, azc_event *ev, azc_err *e)
{
    json_error_t jerr;
    json_t *root;
    int rc;

    memset(ev, 0, sizeof *ev);
    if (buf == NULL || len == 0)
        return azc_err_set(e, AZC_EINVAL, "event: empty message");
    if (len > AZC_EVENT_MAX_BYTES)
        return azc_err_set(e, AZC_ETOOBIG, "event: %zu bytes is over the %d byte limit",
                           len, AZC_EVENT_MAX_BYTES);
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return azc_err_set(e, AZC_EINVAL, "event: invalid JSON at line %d column %d: %s",
                           jerr.line, jerr.column, jerr.text);
    rc = decode_root(root, ev, e);
    json_decref(root);
    if (rc != AZC_OK)
        azc_event_clear(ev);
    return rc;
}

int azc_event_encode(const azc_event *ev, char **out, size_t *len, azc_err *e)
{
    json_t *root;
    int rc;
    char *s;

    *out = NULL;
    if ((rc = validate(ev, e)) != AZC_OK)
        return rc;
    root = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:O?}",
                     "version", ev->version,
                     "id", ev->id,
                     "type", azc_event_type_name(ev->type),
                     "origin", ev->origin,
                     "epoch", (json_int_t)ev->epoch,
                     "seq", (json_int_t)ev->seq,
                     "hlc", (json_int_t)ev->hlc,
                     "data", ev->data);
    if (root == NULL)
        return azc_err_set(e, AZC_ENOMEM, "event: cannot build JSON");
    if (ev->data == NULL && json_object_set_new(root, "data", json_object()) != 0) {
        json_decref(root);
        return azc_err_set(e, AZC_ENOMEM, "event: cannot build JSON");
    }
    s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL)
        return azc_err_set(e, AZC_ENOMEM, "event: cannot serialise");
    *len = strlen(s);
    if (*len > AZC_EVENT_MAX_BYTES) {
        free(s);
        return azc_err_set(e, AZC_ETOOBIG, "event: %zu bytes is over the %d byte limit",
                           *len, AZC_EVENT_MAX_BYTES);
    }
    *out = s;
    return AZC_OK;
}
