/*
 * Transactional outbox of the identity service (DESIGN section 4).
 *
 * A mutation collects the events it causes and, as the last statement of
 * its transaction, appends them here: the outbox lock is taken, seq and HLC
 * are assigned from identity.outbox_state, the envelopes are encoded and
 * inserted (one statement for the whole batch), and the relay is notified,
 * all inside the caller's transaction.
 * The lock is transaction-scoped and held until commit, so commit order =
 * seq order = HLC order, and a reader following seq never skips a row.
 */
#ifndef ID_OUTBOX_H
#define ID_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "common/err.h"
#include "common/event.h"
#include "common/revision.h"

/* The advisory lock key serialising outbox writers and heartbeats. */
#define ID_OUTBOX_LOCK_KEY 0x6964656e74697479LL   /* "identity" */
#define ID_OUTBOX_CHANNEL "identity_outbox"
#define ID_OUTBOX_MAX_EVENTS 100000

/* Events a mutation has caused, in order, waiting for the commit. */
typedef struct id_events id_events;

/* New empty list, owned by the caller (id_events_free). NULL if out of memory. */
id_events *id_events_new(void);
void id_events_free(id_events *l);
size_t id_events_count(const id_events *l);

/* Adds an event; steals `data` (an object) even on failure. */
int id_events_add(id_events *l, azc_event_type type, json_t *data) AZC_WARN_UNUSED;

/*
 * Appends the events of `l` to the outbox inside the open transaction on
 * `c`, as its last statements before COMMIT. On success *rev names the
 * last event (origin and HLC), the revision the caller returns to its
 * client once the commit succeeds. An empty list is AZC_EINVAL: every
 * mutation emits at least one event.
 */
int id_outbox_append(PGconn *c, const char *origin, const id_events *l, azc_revision *rev,
                     azc_err *e) AZC_WARN_UNUSED;

/*
 * Encodes events [from, from + n) of `l` as epoch `epoch`, seqs seq0, seq0 + 1,
 * ... and HLCs hlc0, hlc0 + 1, ..., and inserts them with ONE statement
 * inside the open transaction on `c`. The caller holds the outbox lock and
 * has reserved the seqs and HLCs in identity.outbox_state (id_outbox_append
 * does both; a resync does its own). `l` stays owned by the caller.
 */
int id_outbox_insert(PGconn *c, const char *origin, uint64_t epoch, uint64_t seq0, uint64_t hlc0,
                     const id_events *l, size_t from, size_t n, azc_err *e) AZC_WARN_UNUSED;

/* Queues the relay's wake-up; PostgreSQL delivers it at commit. */
int id_outbox_notify(PGconn *c, azc_err *e) AZC_WARN_UNUSED;

#endif
