/*
 * The gateway filter's in-memory policy index (DESIGN sections 3 and 6).
 *
 * It holds a region's users, memberships and assignments, loaded from the
 * authz-server's snapshot and kept current by its change feed, and answers
 * check(subject, action, resource, region) without any lock: the state is a
 * chain of immutable generations; the writer (one thread at a time) builds
 * a new generation for each snapshot or feed answer, sharing everything
 * that did not change with the previous one, publishes it with one atomic
 * pointer store (rcu_assign_pointer, liburcu's "bulletproof" flavour, so
 * any thread may read without registering), and frees what the new
 * generation no longer uses only after every reader that could still see
 * it has left (call_rcu). A reader therefore never waits on the writer and
 * always sees one whole generation: a feed answer applied entirely or not
 * at all, and watermarks that belong to exactly the rows it sees (a reader
 * that sees applied[O] >= h sees every change of O up to h).
 *
 * Cost of a check: one hash lookup of the subject, then a scan of the
 * compact assignment entries of that user and of each of its teams; it
 * does not grow with the number of users, teams or assignments in the
 * region.
 */
#ifndef AF_INDEX_H
#define AF_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "common/revision.h"

#define AF_MAX_ORIGINS 16

typedef struct af_index af_index;

typedef struct af_origin_mark {
    char name[AZC_REGION_MAX + 1];
    uint64_t applied;   /* HLC: every change of this origin up to it is in */
    uint64_t known;     /* HLC: the newest this origin has announced */
} af_origin_mark;

/* A new, empty index (nothing loaded: checks answer loaded = 0) for the
 * region `region` (copied). NULL when out of memory. */
af_index *af_index_new(const char *region);
/* Frees everything; no reader may be inside af_index_check any more. */
void af_index_free(af_index *ix);

/* ---- writer side: one thread at a time -------------------------------- */

/*
 * Replaces the whole state with `snapshot`, the object GET
 * /v1/policy/snapshot answers ({"region", "cursor", "watermarks", "users",
 * "memberships", "policies"}; rows with "deleted": true are skipped). The
 * new generation is built completely before it is published, so readers
 * keep the old one until then; on any error (a malformed row, a region
 * other than this index's) nothing changes and e names the row.
 */
int af_index_load_snapshot(af_index *ix, const json_t *snapshot, azc_err *e) AZC_WARN_UNUSED;

/*
 * The same load one row at a time, for a snapshot read as it arrives
 * (format=ndjson) instead of parsed whole: _new takes the head ({"region",
 * "cursor", "watermarks"}), _row each row with its change-feed kind
 * ("user", "membership" or "policy"), in any order, and _commit publishes
 * the whole and frees the loader, once the rows received match `counts`
 * ({"users": U, "memberships": M, "policies": P}, the NDJSON end line;
 * NULL: not checked). Until then readers see the previous state; after a
 * failed _row or _commit the loader is good only for _free, which drops
 * everything it built. The loader (owned by the caller until a successful
 * _commit, or _free) belongs to the writer thread.
 */
typedef struct af_index_loader af_index_loader;
int af_index_loader_new(af_index *ix, const json_t *head, af_index_loader **out,
                        azc_err *e) AZC_WARN_UNUSED;
int af_index_loader_row(af_index_loader *l, const char *kind, const json_t *row,
                        azc_err *e) AZC_WARN_UNUSED;
int af_index_loader_commit(af_index_loader *l, const json_t *counts, azc_err *e) AZC_WARN_UNUSED;
void af_index_loader_free(af_index_loader *l);

/*
 * Applies one change-feed answer (a long-poll answer or one stream line:
 * {"changes": [{"seq", "kind": "user"|"membership"|"policy", "row"}],
 * "cursor": "N", "more": bool, "watermarks": {...}}) as one new
 * generation: every row by its key (a row with "deleted": true removes
 * it), then the watermarks when present (they never go down). Seqs must be
 * above the current cursor and increasing, and the answer's cursor at
 * least the last seq; otherwise, or on any malformed row, nothing is
 * applied (AZC_EINVAL naming it). AZC_ECONFLICT when nothing is loaded yet.
 * An answer that changes nothing (same cursor, same watermarks) publishes
 * nothing.
 */
int af_index_apply(af_index *ix, const json_t *answer, azc_err *e) AZC_WARN_UNUSED;

/* The cursor of the newest generation, -1 before the first snapshot. */
long long af_index_cursor(const af_index *ix);

/* ---- reader side: any thread, any number ------------------------------ */

typedef struct af_query {
    const char *subject;    /* the JWT sub */
    const char *action;     /* "<type>:<verb>" */
    const char *resource;   /* "<type>/<id>" */
} af_query;

typedef struct af_result {
    int loaded;             /* 0: no snapshot loaded yet; nothing else is set */
    int allowed;
    int origin;             /* allowed: marks[] index of the granting
                             * assignment's origin; -1 when denied */
    int via_origin;         /* allowed through a team: marks[] index of the
                             * membership's origin; -1 otherwise */
    uint64_t generation;    /* increases with every publication */
    long long cursor;
    uint64_t published_ms;  /* wall clock (ms) when this generation was published */
    size_t n_origins;
    af_origin_mark marks[AF_MAX_ORIGINS]; /* this generation's watermarks,
                                           * every origin seen in rows or
                                           * watermarks */
} af_result;

/*
 * check(subject, action, resource) in this index's region (DESIGN section
 * 3: an assignment of the user, or of a team the user is a member of,
 * whose permissions hold the action, "<type>:*" or "*", whose region is
 * this region or "*", and whose resource is the resource, its type
 * wildcard ("<type>/" then "*") or "*"). Malformed input is simply a deny. Lock-free, thread-safe.
 */
void af_index_check(af_index *ix, const af_query *q, af_result *out);

typedef struct af_index_stats {
    uint64_t generation;
    long long cursor;
    size_t users, teams, memberships, assignments;
    size_t bytes;           /* memory the newest generation holds, approximately */
} af_index_stats;

void af_index_get_stats(af_index *ix, af_index_stats *st);

#endif
