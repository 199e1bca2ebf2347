/*
 * Policy builder (DESIGN section 3): turns one identity event into changes
 * of the regional policy tables, inside the caller's transaction. Every
 * write is last-writer-wins on (hlc, origin), so the consumer and the
 * replicator may deliver rows in any order and still converge.
 */
#ifndef AZ_APPLY_H
#define AZ_APPLY_H

#include <libpq-fe.h>

#include "common/err.h"
#include "common/event.h"

/*
 * Checks ev->data against what its type needs (members, JSON types, uuid,
 * permission, region and resource syntax). AZC_EINVAL with the offending
 * member named in e. No I/O: unit-testable.
 */
int az_event_data_check(const azc_event *ev, azc_err *e) AZC_WARN_UNUSED;

/*
 * The kinds of state a resync carries, in the order of the members of
 * resync.end's data (counts): users, roles, teams, memberships,
 * assignments. az_resync_kind maps the one event type that may carry each
 * (user.created, role.created, team.created, team.member_added,
 * assignment.created) to its index, anything else to -1.
 */
#define AZ_RESYNC_KINDS 5
extern const char *const az_resync_kinds[AZ_RESYNC_KINDS];
int az_resync_kind(azc_event_type t);

/*
 * Applies ev (already checked, in seq order, not a heartbeat) on c inside
 * an open transaction. AZC_EINVAL when the event cannot be applied to the
 * current state (an assignment of a role this region does not know): the
 * caller dead-letters it. Other codes are database failures.
 */
int az_event_apply(PGconn *c, const azc_event *ev, azc_err *e) AZC_WARN_UNUSED;

#endif
