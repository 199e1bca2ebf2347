/*
 * An NDJSON snapshot's rows loaded into the index on a thread of their
 * own (af_index_loader, index.h), so that parsing the next lines (on the
 * caller's thread) and building the index from the previous ones run at
 * the same time: a 1,000,000-row snapshot is about as much jansson
 * parsing as index building, one after the other on one thread.
 *
 * The caller's thread reads and parses lines and hands each parsed row
 * line over (_row takes ownership); the loading thread applies them in
 * the order given and frees them. _row blocks only while a bounded queue
 * (a few thousand rows) is full, so memory stays flat however fast the
 * answer arrives. A row the loader refuses stops the loading: the error
 * comes back from a later _row or from _commit, and what was built is
 * dropped. Without a thread (pthread_create failed) rows are loaded on
 * the caller's thread, with the same results.
 */
#ifndef AF_SNAPLOAD_H
#define AF_SNAPLOAD_H

#include <jansson.h>

#include "common/err.h"
#include "gateway-filter/index.h"

typedef struct af_snapload af_snapload;

/* Starts a load for `head` (af_index_loader_new's contract). *out is the
 * caller's until _commit succeeds or _free. */
int af_snapload_new(af_index *ix, const json_t *head, af_snapload **out,
                    azc_err *e) AZC_WARN_UNUSED;

/* Hands over one row line {"kind": K, "row": {...}}: the reference is
 * taken whatever the result. An error is that of an earlier row (or of
 * this one, without a thread): the load is over, only _free is left. */
int af_snapload_row(af_snapload *s, json_t *line, azc_err *e) AZC_WARN_UNUSED;

/* Waits for every row handed over to be loaded, then publishes the whole
 * once the rows match `counts` (af_index_loader_commit) and frees s. On
 * an error nothing is published and s is good only for _free. */
int af_snapload_commit(af_snapload *s, const json_t *counts, azc_err *e) AZC_WARN_UNUSED;

/* Stops the loading thread and drops everything: rows not yet loaded and
 * what was built. NULL is a no-op. */
void af_snapload_free(af_snapload *s);

#endif
