/*
 * The identity REST API's dispatcher and handler toolkit (see api.h).
 *
 * id_dispatch runs before every handler: it authenticates the admin
 * (Bearer JWT, strict checks in common/jwt.c), checks the admin rule and
 * answers 503 at once while the worker's database link is down
 * (common/pg_link.h), so no handler repeats it.
 */
#include "identity/api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "common/digest.h"
#include "common/pg.h"
#include "common/text.h"
#include "common/uuid.h"
#include "identity/dispatch.h"

static const char SQL_IDEM_LOCK[] = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
static const char SQL_IDEM_GET[] =
    "SELECT request_sha256, status, response, revision FROM identity.idempotency_keys"
    " WHERE key = $1 AND caller = $2 AND created_at > now() - make_interval(secs => $3::int)";
static const char SQL_IDEM_PUT[] =
    "INSERT INTO identity.idempotency_keys"
    " (key, caller, method, path, request_sha256, status, response, revision)"
    " VALUES ($1, $2, 'POST', $3, $4, $5::int, $6, $7)"
    " ON CONFLICT (key, caller) DO UPDATE SET request_sha256 = EXCLUDED.request_sha256,"
    "   status = EXCLUDED.status, response = EXCLUDED.response, revision = EXCLUDED.revision,"
    "   path = EXCLUDED.path, created_at = now()";
static const char SQL_IDEM_EXPIRE[] =
    "DELETE FROM identity.idempotency_keys WHERE ctid IN (SELECT ctid FROM identity.idempotency_keys"
    " WHERE created_at < now() - make_interval(secs => $1::int) LIMIT 100)";
static const char SQL_LAST_HLC[] = "SELECT last_hlc FROM identity.outbox_state";

/* ---- replies ---------------------------------------------------------- */

static void rollback(id_call *c)
{
    if (c->in_tx) {
        azc_pg_rollback(c->pg);
        c->in_tx = 0;
    }
}

void id_reply_invalid(id_call *c, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    rollback(c);
    va_start(ap, fmt);
    (void)azc_text_vfmt(msg, sizeof msg, fmt, ap);   /* cut on a character: the body must encode */
    va_end(ap);
    azc_http_reply_json(c->r, 400, json_pack("{s:{s:s, s:s, s:s}}", "error", "code",
                                             "invalid_field", "message", msg, "field", field));
}

void id_reply_error(id_call *c, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    rollback(c);
    va_start(ap, fmt);
    (void)azc_text_vfmt(msg, sizeof msg, fmt, ap);   /* cut on a character: the body must encode */
    va_end(ap);
    azc_http_reply_error(c->r, status, code, "%s", msg);
}

void id_reply_db_error(id_call *c, int rc, const azc_err *e, const char *conflict_msg)
{
    if (rc == AZC_ECONFLICT && conflict_msg != NULL) {
        id_reply_error(c, 409, "conflict", "%s", conflict_msg);
        return;
    }
    rollback(c);
    {
        azc_err u;

        /* The shared mapping (503 + Retry-After, or 500) wants the code
         * in the record; callers pass it separately. */
        azc_err_set(&u, rc, "%s", e != NULL ? e->msg : "");
        azc_pg_reply_error(c->db, c->r, &u, c->sh->log);
    }
    /* The link may have closed a broken connection just now. */
    c->pg = azc_pg_link_conn(c->db);
}

int id_query_or_reply(id_call *c, const char *sql, int n, const char *const *p, PGresult **res,
                      const char *conflict_msg)
{
    azc_err e;
    int rc;

    azc_err_clear(&e);
    rc = azc_pg_query(c->pg, sql, n, p, res, &e);
    if (rc != AZC_OK) {
        id_reply_db_error(c, rc, &e, conflict_msg);
        return 0;
    }
    return 1;
}

/* ---- transactions and idempotency ------------------------------------- */

static int idem_header_or_reply(id_call *c)
{
    const char *k = azc_http_req_header(c->r, "Idempotency-Key");
    size_t len, i, blen;
    const char *body;
    char *buf;

    c->idem_key[0] = '\0';
    if (k == NULL || azc_http_req_method(c->r) != AZC_HTTP_POST)
        return 1;
    len = strlen(k);
    for (i = 0; i < len; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e)
            break;
    if (len == 0 || len >= sizeof c->idem_key || i < len) {
        id_reply_error(c, 400, "invalid_header",
                       "Idempotency-Key must be 1-255 printable ASCII characters");
        return 0;
    }
    memcpy(c->idem_key, k, len + 1);
    /* The fingerprint covers the route and the exact body bytes. */
    {
        const char *route = azc_http_req_route(c->r);
        size_t rlen = strlen(route);

        body = azc_http_req_body(c->r, &blen);
        buf = malloc(rlen + 1 + blen);
        if (buf == NULL) {
            id_reply_error(c, 500, "internal", "out of memory");
            return 0;
        }
        memcpy(buf, route, rlen);
        buf[rlen] = '\n';
        memcpy(buf + rlen + 1, body, blen);
        if (azc_sha256_hex(buf, rlen + 1 + blen, c->idem_hash) != AZC_OK) {
            free(buf);
            id_reply_error(c, 500, "internal", "digest failed");
            return 0;
        }
    }
    free(buf);
    return 1;
}

static void replay(id_call *c, PGresult *res)
{
    int status = atoi(PQgetvalue(res, 0, 1));
    json_t *body = json_loads(PQgetvalue(res, 0, 2), 0, NULL);

    if (!PQgetisnull(res, 0, 3))
        (void)azc_http_req_add_header(c->r, "Authz-Revision", PQgetvalue(res, 0, 3));
    (void)azc_http_req_add_header(c->r, "Idempotent-Replayed", "true");
    azc_http_reply_json(c->r, status, body);
}

int id_begin_or_reply(id_call *c)
{
    char lock_key[600], ttl[24];
    PGresult *res = NULL;
    azc_err e;
    int rc;

    if (!idem_header_or_reply(c))
        return 0;
    if ((rc = azc_pg_begin(c->pg, &e)) != AZC_OK) {
        id_reply_db_error(c, rc, &e, NULL);
        return 0;
    }
    c->in_tx = 1;
    if (c->idem_key[0] == '\0')
        return 1;
    snprintf(lock_key, sizeof lock_key, "%s\n%s", c->caller, c->idem_key);
    snprintf(ttl, sizeof ttl, "%lld", c->sh->set.idempotency_ttl_secs);
    {
        const char *p1[1] = { lock_key };
        const char *p2[3] = { c->idem_key, c->caller, ttl };
        if (!id_query_or_reply(c, SQL_IDEM_LOCK, 1, p1, NULL, NULL) ||
            !id_query_or_reply(c, SQL_IDEM_GET, 3, p2, &res, NULL))
            return 0;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 1;
    }
    if (strcmp(PQgetvalue(res, 0, 0), c->idem_hash) != 0) {
        PQclear(res);
        id_reply_error(c, 422, "idempotency_key_reused",
                       "this Idempotency-Key was used with another request");
        return 0;
    }
    rollback(c);
    replay(c, res);
    PQclear(res);
    return 0;
}

int id_emit_or_reply(id_call *c, azc_event_type type, json_t *data)
{
    int rc = id_events_add(c->events, type, data);

    if (rc != AZC_OK) {
        id_reply_error(c, rc == AZC_ETOOBIG ? 413 : 500, rc == AZC_ETOOBIG ? "too_many_changes"
                                                                           : "internal",
                       "cannot record the change event");
        return 0;
    }
    return 1;
}

static int current_revision(id_call *c, azc_revision *rev)
{
    PGresult *res = NULL;

    if (!id_query_or_reply(c, SQL_LAST_HLC, 0, NULL, &res, NULL))
        return 0;
    snprintf(rev->origin, sizeof rev->origin, "%s", c->sh->set.region);
    rev->hlc = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    if (rev->hlc == 0)
        rev->hlc = 1;
    PQclear(res);
    return 1;
}

void id_commit_and_reply(id_call *c, int status, json_t *body, const char *location)
{
    char token[AZC_REVISION_MAX], st[8], ttl[24];
    azc_revision rev;
    azc_err e;
    int rc;

    if (body == NULL) {
        id_reply_error(c, 500, "internal", "cannot build the response");
        return;
    }
    azc_err_clear(&e);
    if (id_events_count(c->events) > 0) {
        rc = id_outbox_append(c->pg, c->sh->set.region, c->events, &rev, &e);
        if (rc != AZC_OK) {
            json_decref(body);
            id_reply_db_error(c, rc, &e, NULL);
            return;
        }
    } else if (!current_revision(c, &rev)) {
        json_decref(body);
        return;
    }
    if (azc_revision_encode(&rev, token, sizeof token, &e) != AZC_OK ||
        json_object_set_new(body, "revision", json_string(token)) != 0) {
        json_decref(body);
        id_reply_error(c, 500, "internal", "cannot encode the revision");
        return;
    }
    if (c->idem_key[0] != '\0') {
        char *text = json_dumps(body, JSON_COMPACT);
        const char *p[7] = { c->idem_key, c->caller, azc_http_req_route(c->r), c->idem_hash, st,
                             text, token };
        const char *pe[1] = { ttl };

        snprintf(st, sizeof st, "%d", status);
        snprintf(ttl, sizeof ttl, "%lld", c->sh->set.idempotency_ttl_secs);
        rc = text != NULL && id_query_or_reply(c, SQL_IDEM_PUT, 7, p, NULL, NULL) &&
             id_query_or_reply(c, SQL_IDEM_EXPIRE, 1, pe, NULL, NULL);
        free(text);
        if (!rc) {
            json_decref(body);
            return;            /* replied */
        }
    }
    rc = azc_pg_commit(c->pg, &e);
    c->in_tx = 0;
    if (rc != AZC_OK) {
        json_decref(body);
        id_reply_db_error(c, rc, &e, NULL);
        return;
    }
    if (c->sh->m_mutations != NULL &&
        azc_metric_inc(c->sh->m_mutations, (const char *const[]){ azc_http_req_route(c->r), NULL },
                       1) != AZC_OK)
        azc_logf(c->sh->log, AZC_LOG_WARN, "metrics: cannot count mutation");
    (void)azc_http_req_add_header(c->r, "Authz-Revision", token);
    if (location != NULL)
        (void)azc_http_req_add_header(c->r, "Location", location);
    azc_http_reply_json(c->r, status, body);
}

/* ---- request helpers -------------------------------------------------- */

static int in_list(const char *const *list, const char *s)
{
    for (; list != NULL && *list != NULL; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

json_t *id_body_or_reply(id_call *c, const char *const *allowed, const char *const *required)
{
    json_t *body = azc_http_req_json(c->r), *v;
    const char *key;

    if (!json_is_object(body)) {
        id_reply_error(c, 400, "invalid_body", "the body must be a JSON object");
        return NULL;
    }
    json_object_foreach(body, key, v) {
        if (!in_list(allowed, key)) {
            id_reply_invalid(c, key, "unknown field \"%s\"", key);
            return NULL;
        }
    }
    for (; required != NULL && *required != NULL; required++) {
        if (json_object_get(body, *required) == NULL) {
            id_reply_invalid(c, *required, "missing field \"%s\"", *required);
            return NULL;
        }
    }
    return body;
}

const char *id_body_string(id_call *c, json_t *body, const char *name, int *ok)
{
    json_t *v = json_object_get(body, name);

    *ok = 1;
    if (v == NULL)
        return NULL;
    if (!json_is_string(v)) {
        *ok = 0;
        id_reply_invalid(c, name, "\"%s\" must be a string", name);
        return NULL;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        *ok = 0;
        id_reply_invalid(c, name, "\"%s\" must not contain NUL characters", name);
        return NULL;
    }
    return json_string_value(v);
}

/* ETags are the row version in quotes: "7". */
int id_if_match_or_reply(id_call *c, const char *version)
{
    const char *h = azc_http_req_header(c->r, "If-Match");
    char want[32];
    const char *p;

    if (h == NULL)
        return 1;
    snprintf(want, sizeof want, "\"%s\"", version);
    for (p = h; *p;) {
        size_t n;
        while (*p == ' ' || *p == ',')
            p++;
        n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if ((n == 1 && *p == '*') || (n == strlen(want) && strncmp(p, want, n) == 0) ||
            (n == strlen(want) + 2 && strncmp(p, "W/", 2) == 0 && strncmp(p + 2, want, n - 2) == 0))
            return 1;
        p += strcspn(p, ",");
    }
    id_reply_error(c, 412, "precondition_failed",
                   "If-Match does not match the current version %s", want);
    return 0;
}

void id_set_etag(id_call *c, const char *version)
{
    char tag[32];

    snprintf(tag, sizeof tag, "\"%s\"", version);
    (void)azc_http_req_add_header(c->r, "ETag", tag);
}

const char *id_param_uuid_or_reply(id_call *c, const char *name, const char *what)
{
    const char *v = azc_http_req_param(c->r, name);

    if (!azc_uuid_valid(v)) {
        id_reply_error(c, 404, "not_found", "no such %s", what);
        return NULL;
    }
    return v;
}

/* Cursors are the last id of the previous page, base64url-encoded: opaque
 * to clients, cheap to check. */
static int cursor_decode(const char *cur, char *out, size_t len)
{
    unsigned char raw[64];
    char b64[64];
    size_t n = strlen(cur), i;
    int got;

    if (n == 0 || n > 48 || n % 4 != 0)
        return 0;
    for (i = 0; i < n; i++)
        b64[i] = cur[i] == '-' ? '+' : cur[i] == '_' ? '/' : cur[i];
    b64[n] = '\0';
    got = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
    if (got != 36)
        return 0;
    raw[36] = '\0';
    if (!azc_uuid_valid((const char *)raw) || len < 37)
        return 0;
    memcpy(out, raw, 37);
    return 1;
}

static void cursor_encode(const char *id, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)id, 36);
    int i;

    for (i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[n] = '\0';
}

int id_page_or_reply(id_call *c, int *limit, char *after, size_t after_len)
{
    const char *l = azc_http_req_query(c->r, "limit");
    const char *cur = azc_http_req_query(c->r, "cursor");

    *limit = ID_PAGE_DEFAULT;
    after[0] = '\0';
    if (l != NULL) {
        char *end;
        long v = strtol(l, &end, 10);
        if (*l == '\0' || *end != '\0' || v < 1 || v > ID_PAGE_MAX || !isdigit((unsigned char)*l)) {
            id_reply_error(c, 400, "invalid_query", "limit must be an integer from 1 to %d",
                           ID_PAGE_MAX);
            return 0;
        }
        *limit = (int)v;
    }
    if (cur != NULL && !cursor_decode(cur, after, after_len)) {
        id_reply_error(c, 400, "invalid_query", "cursor is not one this server issued");
        return 0;
    }
    return 1;
}

json_t *id_page_body(json_t *items, int limit, const char *id_key)
{
    char cur[64];
    json_t *next = json_null();

    if (items == NULL)
        return NULL;
    if (json_array_size(items) > (size_t)limit) {
        const char *last = json_string_value(
            json_object_get(json_array_get(items, (size_t)limit - 1), id_key));
        json_array_remove(items, (size_t)limit);
        if (last != NULL && strlen(last) == 36) {
            cursor_encode(last, cur);
            next = json_string(cur);
        }
    }
    return json_pack("{s:o, s:o}", "items", items, "next_cursor", next);
}

json_t *id_row_json(PGresult *res, int row, int col)
{
    return json_loads(PQgetvalue(res, row, col), 0, NULL);
}

void id_reply_row(id_call *c, int status, PGresult *res)
{
    json_t *row = id_row_json(res, 0, 0);
    json_t *v = json_object_get(row, "version");

    if (json_is_integer(v)) {
        char ver[24];
        snprintf(ver, sizeof ver, "%lld", (long long)json_integer_value(v));
        id_set_etag(c, ver);
    }
    azc_http_reply_json(c->r, status, row);
}

void id_reply_page(id_call *c, const char *sql, int nextra, const char *const *extra,
                   const char *id_key)
{
    const char *p[8];
    char after[AZC_UUID_LEN], lim[16];
    PGresult *res = NULL;
    json_t *items;
    int limit, i;

    if (nextra > 6 || !id_page_or_reply(c, &limit, after, sizeof after))
        return;
    snprintf(lim, sizeof lim, "%d", limit + 1);
    p[0] = after;
    p[1] = lim;
    for (i = 0; i < nextra; i++)
        p[2 + i] = extra[i];
    if (!id_query_or_reply(c, sql, 2 + nextra, p, &res, NULL))
        return;
    items = json_array();
    for (i = 0; items != NULL && i < PQntuples(res); i++) {
        if (json_array_append_new(items, id_row_json(res, i, 0)) != 0) {
            json_decref(items);
            items = NULL;
        }
    }
    PQclear(res);
    azc_http_reply_json(c->r, 200, id_page_body(items, limit, id_key));
}

void id_reply_get(id_call *c, const char *sql, const char *what)
{
    const char *id = id_param_uuid_or_reply(c, "id", what);
    PGresult *res = NULL;
    const char *p[1];

    if (id == NULL)
        return;
    p[0] = id;
    if (!id_query_or_reply(c, sql, 1, p, &res, NULL))
        return;
    if (PQntuples(res) == 0)
        id_reply_error(c, 404, "not_found", "no such %s", what);
    else
        id_reply_row(c, 200, res);
    PQclear(res);
}

int id_lock_row_or_reply(id_call *c, const char *sql, const char *id, const char *what)
{
    const char *p[1] = { id };
    PGresult *res = NULL;
    int ok;

    if (!id_query_or_reply(c, sql, 1, p, &res, NULL))
        return 0;
    if (PQntuples(res) == 0) {
        PQclear(res);
        id_reply_error(c, 404, "not_found", "no such %s", what);
        return 0;
    }
    ok = id_if_match_or_reply(c, PQgetvalue(res, 0, 0));
    PQclear(res);
    return ok;
}

/* ---- dispatcher ------------------------------------------------------- */

static int is_admin(const id_shared *sh, json_t *claims, const char *sub)
{
    size_t i;

    for (i = 0; i < sh->set.nadmins; i++)
        if (strcmp(sh->set.admin_subjects[i], sub) == 0)
            return 1;
    return sh->set.admin_claim[0] != '\0' &&
           json_is_true(json_object_get(claims, sh->set.admin_claim));
}

static void unauthorized(id_call *c, const char *why)
{
    azc_log_reqf(c->sh->log, AZC_LOG_INFO, azc_http_req_id(c->r), "auth: rejected: %s", why);
    (void)azc_http_req_add_header(c->r, "WWW-Authenticate",
                                  "Bearer realm=\"authz-identity\", error=\"invalid_token\"");
    azc_http_reply_error(c->r, 401, "unauthorized", "a valid bearer token is required");
}

/*
 * The bearer JWT and the admin rule: 0 with *claims (the caller's
 * reference), or -1 with the 401/403 sent.
 */
static int authenticate_or_reply(azc_http_req *r, const id_bound *b, json_t **claims)
{
    id_call c;
    const char *token = NULL, *sub;
    azc_jwt_policy policy;
    azc_err e;
    int rc;

    memset(&c, 0, sizeof c);
    c.sh = b->sh;
    c.r = r;
    *claims = NULL;
    if (!azc_jwt_bearer(azc_http_req_header(r, "Authorization"), &token)) {
        unauthorized(&c, "no bearer token");
        return -1;
    }
    policy.issuer = c.sh->set.issuer;
    policy.audience = c.sh->set.audience;
    policy.leeway_secs = (long)c.sh->set.leeway_secs;
    policy.max_lifetime_secs = c.sh->set.max_token_lifetime_secs;
    policy.now = 0;
    azc_err_clear(&e);
    pthread_rwlock_rdlock(&c.sh->keys_lock);
    rc = azc_jwt_verify_cached(b->jwt_cache, c.sh->keys, token, &policy, claims, &e);
    pthread_rwlock_unlock(&c.sh->keys_lock);
    if (rc != AZC_OK) {
        unauthorized(&c, e.msg);
        return -1;
    }
    sub = json_string_value(json_object_get(*claims, "sub"));
    if (!is_admin(c.sh, *claims, sub)) {
        azc_log_reqf(c.sh->log, AZC_LOG_INFO, azc_http_req_id(r), "auth: %s is not an admin",
                     sub);
        azc_http_reply_error(r, 403, "forbidden", "this subject may not administer identities");
        json_decref(*claims);
        *claims = NULL;
        return -1;
    }
    return 0;
}

static void claims_free(void *claims)
{
    json_decref(claims);
}

/* The HTTP helper's auth callback: runs before its body checks, so an
 * anonymous client gets 401 and never 413, 415 or invalid_json. */
int id_authenticate(azc_http_req *r, void *route_arg, void *arg)
{
    json_t *claims;

    (void)arg;
    if (authenticate_or_reply(r, route_arg, &claims) != 0)
        return AZC_EINVAL;
    azc_http_req_set_ctx(r, claims, claims_free);
    return AZC_OK;
}

void id_dispatch(azc_http_req *r, void *arg)
{
    const id_bound *b = arg;
    id_call c;
    json_t *claims = azc_http_req_ctx(r);
    azc_err e;

    memset(&c, 0, sizeof c);
    c.sh = b->sh;
    c.r = r;
    c.db = b->db;
    /* Checked by id_authenticate already; without it, here (fail closed). */
    if (claims != NULL)
        json_incref(claims);
    else if (authenticate_or_reply(r, b, &claims) != 0)
        return;
    c.caller = json_string_value(json_object_get(claims, "sub"));
    /* Down: 503 at once; the link reconnects off this loop. */
    if ((c.pg = azc_pg_link_conn(c.db)) == NULL) {
        azc_err_set(&e, AZC_EUNAVAIL, "not connected");
        azc_pg_reply_error(c.db, r, &e, c.sh->log);
        json_decref(claims);
        return;
    }
    c.events = id_events_new();
    if (c.events == NULL) {
        azc_http_reply_error(r, 500, "internal", "out of memory");
        json_decref(claims);
        return;
    }
    b->handler(&c);
    if (c.in_tx) {
        /* A handler path that forgot to reply or commit: never leave a
         * transaction open on a pooled connection. */
        azc_pg_rollback(c.pg);
    }
    id_events_free(c.events);
    json_decref(claims);
}

/* ---- the route table -------------------------------------------------- */

#define JSON AZC_ROUTE_JSON_BODY
#define SMALL (64 * 1024)

const id_route id_routes[] = {
    { AZC_HTTP_POST, "/v1/users", id_user_create, JSON, SMALL },
    { AZC_HTTP_GET, "/v1/users", id_user_list, 0, 0 },
    { AZC_HTTP_GET, "/v1/users/{id}", id_user_get, 0, 0 },
    { AZC_HTTP_PATCH, "/v1/users/{id}", id_user_patch, JSON, SMALL },
    { AZC_HTTP_DELETE, "/v1/users/{id}", id_user_delete, 0, 0 },
    { AZC_HTTP_POST, "/v1/teams", id_team_create, JSON, SMALL },
    { AZC_HTTP_GET, "/v1/teams", id_team_list, 0, 0 },
    { AZC_HTTP_GET, "/v1/teams/{id}", id_team_get, 0, 0 },
    { AZC_HTTP_PATCH, "/v1/teams/{id}", id_team_patch, JSON, SMALL },
    { AZC_HTTP_DELETE, "/v1/teams/{id}", id_team_delete, 0, 0 },
    { AZC_HTTP_GET, "/v1/teams/{id}/members", id_member_list, 0, 0 },
    { AZC_HTTP_PUT, "/v1/teams/{id}/members/{user_id}", id_member_put, 0, 0 },
    { AZC_HTTP_DELETE, "/v1/teams/{id}/members/{user_id}", id_member_delete, 0, 0 },
    { AZC_HTTP_POST, "/v1/roles", id_role_create, JSON, SMALL },
    { AZC_HTTP_GET, "/v1/roles", id_role_list, 0, 0 },
    { AZC_HTTP_GET, "/v1/roles/{id}", id_role_get, 0, 0 },
    { AZC_HTTP_PATCH, "/v1/roles/{id}", id_role_patch, JSON, SMALL },
    { AZC_HTTP_DELETE, "/v1/roles/{id}", id_role_delete, 0, 0 },
    { AZC_HTTP_POST, "/v1/role-assignments", id_assignment_create, JSON, SMALL },
    { AZC_HTTP_GET, "/v1/role-assignments", id_assignment_list, 0, 0 },
    { AZC_HTTP_DELETE, "/v1/role-assignments/{id}", id_assignment_delete, 0, 0 },
};
const size_t id_routes_count = sizeof id_routes / sizeof id_routes[0];
