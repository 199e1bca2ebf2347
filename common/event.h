/*
 * Identity event envelope: the unit the identity service's relay writes to
 * a region's Kafka topic and the authz service reads back.
 *
 *   {"version":1,"id":"<uuid>","type":"team.member_added","origin":"us",
 *    "epoch":1,"seq":42,"hlc":123456789,"data":{...}}
 *
 * `seq` is the origin's outbox sequence (strictly increasing, no gaps
 * within an epoch, 0 only for a heartbeat sent before any change), `hlc`
 * its HLC. `epoch` counts the origin's resynchronisations (docs/events.md):
 * a new epoch starts with resync.begin, carries the origin's whole state,
 * and ends with resync.end; its seqs continue above every seq of the
 * epochs before it. An envelope without "epoch" is epoch 1. The decoder
 * is strict: unknown versions, types or members, wrong JSON types and
 * oversized input are errors with a message naming the field, because a
 * consumer must route anything it does not fully understand to its
 * dead-letter table rather than guess. Per-type checks of `data` belong to
 * the code that interprets it; here `data` must only be an object.
 */
#ifndef AZC_EVENT_H
#define AZC_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "common/revision.h"
#include "common/uuid.h"

#define AZC_EVENT_VERSION 1
#define AZC_EVENT_MAX_BYTES (256 * 1024)

typedef enum azc_event_type {
    AZC_EV_USER_CREATED = 0,
    AZC_EV_USER_UPDATED,
    AZC_EV_USER_DELETED,
    AZC_EV_TEAM_CREATED,
    AZC_EV_TEAM_UPDATED,
    AZC_EV_TEAM_DELETED,
    AZC_EV_TEAM_MEMBER_ADDED,
    AZC_EV_TEAM_MEMBER_REMOVED,
    AZC_EV_ROLE_CREATED,
    AZC_EV_ROLE_UPDATED,
    AZC_EV_ROLE_DELETED,
    AZC_EV_ASSIGNMENT_CREATED,
    AZC_EV_ASSIGNMENT_DELETED,
    AZC_EV_HEARTBEAT,
    AZC_EV_RESYNC_BEGIN,
    AZC_EV_RESYNC_END,
    AZC_EV__COUNT
} azc_event_type;

typedef struct azc_event {
    int version;
    char id[AZC_UUID_LEN];
    azc_event_type type;
    char origin[AZC_REGION_MAX + 1];
    uint64_t epoch;   /* >= 1 */
    uint64_t seq;
    uint64_t hlc;
    json_t *data;     /* owned by the event: azc_event_clear releases it */
} azc_event;

/* "team.member_added" etc.; NULL for an out-of-range value. */
const char *azc_event_type_name(azc_event_type t);

/* Name -> type. AZC_EINVAL for an unknown name. */
int azc_event_type_parse(const char *name, azc_event_type *out, azc_err *e) AZC_WARN_UNUSED;

/*
 * Decodes `len` bytes at `buf` (need not be NUL-terminated). On success *ev
 * holds the event and owns its data; call azc_event_clear. On error *ev is
 * left cleared (data NULL) and e says what is wrong.
 */
int azc_event_decode(const void *buf, size_t len, azc_event *ev, azc_err *e) AZC_WARN_UNUSED;

/*
 * Encodes ev as compact JSON. On success *out is a malloc'd NUL-terminated
 * string owned by the caller (free()) and *len its length. The event is
 * validated as azc_event_decode would (so nothing is produced that a
 * consumer would reject); a NULL data encodes as {}.
 */
int azc_event_encode(const azc_event *ev, char **out, size_t *len, azc_err *e) AZC_WARN_UNUSED;

/* Releases ev->data and zeroes ev. Safe on a cleared event. */
void azc_event_clear(azc_event *ev);

#endif
