/*
 * The origin's history on both sides: what the region's Kafka topic ends
 * with, and whether the outbox agrees with it (docs/identity.md, "Lost
 * commits at the origin").
 *
 * The outbox is the origin's record of what it has published. When the
 * database loses commits (an asynchronous standby promoted, a restore from
 * backup, fsync=off and a crash), the topic can hold events the outbox no
 * longer has, and the outbox would hand their seqs to new events that every
 * consumer skips as duplicates. The relay reads the topic's last message
 * before it publishes and stops when the two sides disagree; the resync
 * (identity/resync.c) starts a new epoch above the topic's tail.
 */
#ifndef ID_TAIL_H
#define ID_TAIL_H

#include <stdint.h>

#include <libpq-fe.h>

#include "common/err.h"
#include "common/event.h"
#include "common/kafka.h"
#include "common/log.h"

typedef struct id_tail {
    int empty;                 /* the topic holds no message: nothing to compare */
    int undecodable;           /* the last message is not an envelope; why in `error` */
    char error[AZC_ERRMSG_MAX];
    int64_t offset;            /* of the last message */
    azc_event_type type;
    uint64_t epoch, seq, hlc;
    /* The event id the outbox must have at `seq`: the message's own id, or
     * for a heartbeat its data.last_id ("" when the heartbeat has none). */
    char id[AZC_UUID_LEN];
} id_tail;

/* The origin's counters (identity.outbox_state). */
typedef struct id_origin {
    uint64_t epoch, epoch_start_seq, last_seq, last_hlc;
} id_origin;

/*
 * Reads the last message of partition 0 of `topic`: queries the watermark
 * offsets and consumes offset high - 1 with a short-lived consumer, all
 * within about `timeout_ms`. An empty topic sets out->empty. A message that
 * does not decode sets out->undecodable (not an error: the check below
 * calls that diverged). AZC_EUNAVAIL when Kafka does not answer in time,
 * AZC_ENOTFOUND when the topic does not exist, AZC_EINVAL for a bad
 * bootstrap list or security setting. `lg` receives librdkafka's own log lines (may be NULL).
 */
int id_tail_read(const azc_kafka_conn *kafka, const char *topic, int timeout_ms, azc_log *lg,
                 id_tail *out, azc_err *e) AZC_WARN_UNUSED;

/* Reads identity.outbox_state into *o (no lock taken). */
int id_origin_read(PGconn *c, id_origin *o, azc_err *e) AZC_WARN_UNUSED;

/*
 * Compares the topic's tail with the outbox (DESIGN contract, docs/events.md):
 * diverged when the tail's epoch is above the origin's; or in the same
 * epoch, its seq is above last_seq or the outbox row at that seq has
 * another event id; or in an older epoch, its seq is at or above the
 * current epoch's first seq; or the message does not decode.
 * Returns AZC_OK when they agree, AZC_ECONFLICT when diverged with `why`
 * naming both sides, another code when the database fails. *o receives the
 * origin's counters either way (when they could be read).
 */
int id_tail_check(PGconn *c, const id_tail *t, id_origin *o, azc_err *why) AZC_WARN_UNUSED;

#endif
