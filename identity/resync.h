/*
 * `authz-identity resync`: the repair for lost commits at the origin, the
 * disaster-recovery path and the bulk bootstrap of a new region
 * (docs/identity.md, "Resync"; docs/events.md, "Epochs and resync").
 *
 * It starts a new origin epoch above everything the topic holds and puts
 * the origin's whole authorization state into the outbox as that epoch's
 * first events, between resync.begin and resync.end, in one transaction
 * under the outbox lock. The relay publishes them like any other rows; the
 * authz consumer replaces the origin's rows with that state when
 * resync.end arrives. Older rows not yet published are superseded.
 */
#ifndef ID_RESYNC_H
#define ID_RESYNC_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/kafka.h"
#include "common/log.h"

typedef struct id_resync_config {
    const char *pg_url;
    const azc_kafka_conn *kafka; /* Kafka bootstrap and security, borrowed */
    const char *topic;         /* the region's identity topic */
    const char *origin;        /* this region */
    int kafka_timeout_ms;      /* for reading the topic's tail; <= 0: 10 s */
    azc_log *log;              /* borrowed */
} id_resync_config;

typedef struct id_resync_result {
    uint64_t epoch;            /* the new epoch */
    uint64_t first_seq;        /* seq of resync.begin */
    uint64_t last_seq;         /* seq of resync.end */
    uint64_t superseded;       /* older rows that will never be published */
    size_t users, roles, teams, memberships, assignments;
} id_resync_result;

/*
 * Runs one resync. Reads the topic's tail first (nothing is written when
 * Kafka cannot be read), then writes everything in one transaction: on any
 * failure nothing is written. Safe while the service and its relay run.
 */
int id_resync_run(const id_resync_config *cfg, id_resync_result *out, azc_err *e) AZC_WARN_UNUSED;

#endif
