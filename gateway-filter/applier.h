/*
 * Stream lines applied to the index on a long-lived thread of their own
 * (af_index_apply, index.h), for the feed thread, which waits for each.
 *
 * Why a thread if the caller waits anyway: malloc arenas. glibc gives a
 * thread its own arena; on the feed thread the index's new records, grant
 * tables and bucket copies were allocated between the parsed tree of the
 * line they came from (tens of small blocks a row), which is freed right
 * after. Blocks that live for hours then sat between holes, and every
 * line made the arena's free lists longer: a filter's apply cost rose
 * from about 30 to 70-80 us a row over 600,000 applied rows (15 us a row
 * with the applier, docs/benchmarks.md). Here the index
 * grows in an arena that holds the index only, and the parsing churns one
 * that holds nothing that lasts.
 */
#ifndef AF_APPLIER_H
#define AF_APPLIER_H

#include <jansson.h>

#include "common/err.h"
#include "gateway-filter/index.h"

typedef struct af_applier af_applier;

/* Starts the thread. NULL when it cannot (out of memory, no thread):
 * af_applier_apply(NULL, ...) then applies on the caller's thread. */
af_applier *af_applier_new(void);

/* af_index_apply(ix, answer, e) run on the applier's thread; returns its
 * result once it is done. `answer` stays the caller's. One caller at a
 * time. */
int af_applier_apply(af_applier *a, af_index *ix, const json_t *answer,
                     azc_err *e) AZC_WARN_UNUSED;

/* Stops and joins the thread (none may be applying). NULL is a no-op. */
void af_applier_free(af_applier *a);

#endif
