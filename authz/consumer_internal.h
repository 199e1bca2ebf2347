/*
 * What the consumer's two files share, and nothing else should use:
 * consumer.c runs the thread (Kafka, the batch transaction, the stored
 * position and watermarks); order.c decides what one message of the
 * origin's history means (apply, duplicate, gap, divergence, epoch,
 * resync) inside that transaction.
 */
#ifndef AZ_CONSUMER_INTERNAL_H
#define AZ_CONSUMER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>

#include "authz/consumer.h"
#include "authz/resync.h"
#include "common/err.h"
#include "common/event.h"
#include "common/uuid.h"

/* The part of the state a transaction changes: copied before a batch and
 * restored when it rolls back. */
typedef struct cstate {
    int64_t next_offset;     /* -1: none stored yet */
    uint64_t epoch;          /* the origin's epoch of applied_seq */
    uint64_t applied_seq, applied_hlc, known_hlc;
    char applied_id[AZC_UUID_LEN]; /* the event at applied_seq; "" unknown */
    az_resync rs;            /* a resync being staged */

    /* Stopped by the origin's history: a gap, a divergence, a resync that
     * cannot be applied. While halted nothing is applied and no position
     * is stored, until a resync.begin of an epoch above halt_epoch. */
    int halted;
    uint64_t halt_epoch;
    char stop_error[256];    /* non-empty: the status is "stopped" */
    int diverged;
    uint64_t div_seq;
    char div_applied[AZC_UUID_LEN], div_received[AZC_UUID_LEN];
    int64_t div_offset;
} cstate;

struct az_consumer {
    az_shared *sh;
    pthread_t thread;
    int started;
    atomic_int stop;

    /* Owned by the consumer thread (the Kafka error callback runs in it,
     * from rd_kafka_consumer_poll). */
    PGconn *pg;
    rd_kafka_t *rk;
    cstate st;
    int need_seek;
    int backoff_ms;
    int dead_letter_failed;  /* the batch rolled back on a dead letter */
    int kafka_fatal;
    char kafka_fatal_msg[256];
};

typedef enum { BATCH_OK, BATCH_DB, BATCH_STOP } batch_result;

/* What one batch did, counted after it commits. */
typedef struct batch_stats {
    uint64_t applied, duplicates, resyncs;
    uint64_t by_type[AZC_EV__COUNT];
    uint64_t ages[64];
    size_t nages;
} batch_stats;

static inline uint64_t az__max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/*
 * Handles message m inside the open batch transaction on c->pg and
 * updates c->st (and bs). BATCH_DB when the database failed (the caller
 * rolls the batch back; c->dead_letter_failed says whether a dead letter
 * could not be stored); BATCH_OK otherwise, also when the message stopped
 * the consumer (c->st.halted).
 */
batch_result az__consumer_message(az_consumer *c, const rd_kafka_message_t *m, batch_stats *bs,
                                  azc_err *e) AZC_WARN_UNUSED;

#endif
