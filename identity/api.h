/*
 * Handler toolkit of the identity REST API: transactions that end in the
 * outbox, Idempotency-Key replay, ETag / If-Match, pagination, strict body
 * checks and the error replies, so each handler holds only its own SQL.
 *
 * Functions that may answer the request themselves are named ..._or_reply
 * and return 1 to go on, 0 when they have replied (the handler then just
 * returns). Any reply on error first rolls back an open transaction.
 */
#ifndef ID_API_H
#define ID_API_H

#include <jansson.h>
#include <libpq-fe.h>

#include "common/err.h"
#include "identity/service.h"

#define ID_PAGE_DEFAULT 100
#define ID_PAGE_MAX 500

/* 400 {"error":{"code":"invalid_field","message":...,"field":field}}. */
void id_reply_invalid(id_call *c, const char *field, const char *fmt, ...) AZC_PRINTF(3, 4);
/* Any error status; rolls back first. */
void id_reply_error(id_call *c, int status, const char *code, const char *fmt, ...)
    AZC_PRINTF(4, 5);
/* Maps a failed database call: 409 for a uniqueness conflict (with
 * `conflict_msg`), 503 when the database is unreachable, else 500. */
void id_reply_db_error(id_call *c, int rc, const azc_err *e, const char *conflict_msg);

/* Opens the transaction of a mutation. For a POST with Idempotency-Key it
 * first looks the key up: a stored response for the same request is
 * replayed (0), one for another request is 422 (0). */
int id_begin_or_reply(id_call *c);

/* Runs one statement inside the handler; on failure replies (see
 * id_reply_db_error) and returns 0. *res may be NULL. */
int id_query_or_reply(id_call *c, const char *sql, int n, const char *const *p, PGresult **res,
                      const char *conflict_msg);

/* Records an event of the mutation; steals data. 0 after replying 500. */
int id_emit_or_reply(id_call *c, azc_event_type type, json_t *data);

/* Appends the events to the outbox, stores the idempotent response,
 * commits, then replies `status` with `body` (stolen) plus the revision in
 * "revision" and the Authz-Revision header. `location` (may be NULL) sets
 * Location. With no events (a no-op), the revision is the origin's latest. */
void id_commit_and_reply(id_call *c, int status, json_t *body, const char *location);

/* The request body as an object whose members are all in `allowed` (NULL
 * terminated) and include every name in `required`; 0 after replying 400. */
json_t *id_body_or_reply(id_call *c, const char *const *allowed, const char *const *required);

/* String member of a checked body: NULL if absent; replies 400 (0 via
 * *ok) when present but not a string. */
const char *id_body_string(id_call *c, json_t *body, const char *name, int *ok);

/* If-Match against the current `version`: 1 to go on, 0 after 412. */
int id_if_match_or_reply(id_call *c, const char *version);
/* Sets ETag from a version. */
void id_set_etag(id_call *c, const char *version);

/* A path parameter that must be a UUID: NULL after replying 404. */
const char *id_param_uuid_or_reply(id_call *c, const char *name, const char *what);

/* limit and cursor query parameters: 1 to go on (*after "" for the first
 * page), 0 after 400. */
int id_page_or_reply(id_call *c, int *limit, char *after, size_t after_len);
/* {"items": items, "next_cursor": ...}: items (stolen) holds up to
 * limit + 1 rows; the extra row, if any, is dropped and its predecessor's
 * "id_key" member becomes the cursor. */
json_t *id_page_body(json_t *items, int limit, const char *id_key);

/* Column `col` of a row, which holds JSON text built by PostgreSQL, as a
 * new reference; NULL if it does not parse (a server bug). */
json_t *id_row_json(PGresult *res, int row, int col);

/* Runs a page query whose parameters are $1 = the cursor id ('' for the
 * first page), $2 = limit + 1, then `extra`, and replies with the page. */
void id_reply_page(id_call *c, const char *sql, int nextra, const char *const *extra,
                   const char *id_key);

/* Runs `sql` ($1 = id; returns the row's version, locked FOR UPDATE) and
 * checks If-Match: 1 to go on, 0 after 404 ("no such <what>") or 412. */
int id_lock_row_or_reply(id_call *c, const char *sql, const char *id, const char *what);

/* GET of one row: `sql` ($1 = the {id} path parameter) returns the row's
 * JSON; 200 with its ETag, or 404 "no such <what>". */
void id_reply_get(id_call *c, const char *sql, const char *what);

/* Replies 200/201 with one JSON row of a read, with its ETag. */
void id_reply_row(id_call *c, int status, PGresult *res);

/* Handlers, by resource (users.c, teams.c, roles.c, assignments.c). */
void id_user_create(id_call *c);
void id_user_list(id_call *c);
void id_user_get(id_call *c);
void id_user_patch(id_call *c);
void id_user_delete(id_call *c);
void id_team_create(id_call *c);
void id_team_list(id_call *c);
void id_team_get(id_call *c);
void id_team_patch(id_call *c);
void id_team_delete(id_call *c);
void id_member_put(id_call *c);
void id_member_delete(id_call *c);
void id_member_list(id_call *c);
void id_role_create(id_call *c);
void id_role_list(id_call *c);
void id_role_get(id_call *c);
void id_role_patch(id_call *c);
void id_role_delete(id_call *c);
void id_assignment_create(id_call *c);
void id_assignment_list(id_call *c);
void id_assignment_delete(id_call *c);

/* Removes every membership and assignment of a principal inside the open
 * transaction, emitting their events (used by user and team deletes). */
int id_remove_principal_or_reply(id_call *c, const char *type, const char *id);

#endif
