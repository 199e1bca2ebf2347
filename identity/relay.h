/*
 * Outbox relay: publishes identity.outbox rows to the region's Kafka topic
 * in seq order, marks them published after their delivery reports, and
 * emits heartbeats (DESIGN section 4). Runs on its own thread with its own
 * PostgreSQL connection and idempotent producer.
 *
 * Guarantees: a committed event reaches Kafka, in seq order; after a crash
 * the relay resumes at the first row not marked published, so a duplicate
 * is possible and a gap is not. Only one relay per region publishes at a
 * time: the active one holds a session advisory lock, others wait. It
 * publishes nothing while the topic's tail disagrees with the outbox (lost
 * commits at the origin; see relay.c and docs/identity.md).
 */
#ifndef ID_RELAY_H
#define ID_RELAY_H

#include <stddef.h>

#include "common/err.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/metrics.h"

typedef struct id_relay_config {
    const char *pg_url;
    const azc_kafka_conn *kafka;  /* borrowed; must outlive the relay */
    const char *topic;            /* identity-events.<region> */
    const char *origin;           /* this region */
    int heartbeat_ms;             /* idle heartbeat interval */
    int max_in_flight;            /* produced but not yet acknowledged */
    azc_log *log;                 /* borrowed; must outlive the relay */
    azc_metrics *metrics;         /* borrowed, may be NULL */
} id_relay_config;

typedef struct id_relay id_relay;

/* New relay (not started); strings are copied. NULL + e on failure. */
id_relay *id_relay_new(const id_relay_config *cfg, azc_err *e);

/* Starts the relay thread. */
int id_relay_start(id_relay *r, azc_err *e) AZC_WARN_UNUSED;

/* Asks the thread to stop, waits for it, and frees everything. In-flight
 * messages get a bounded time to be acknowledged and marked; what is not
 * marked is published again by the next relay (a duplicate, never a gap).
 * NULL is a no-op. */
void id_relay_free(id_relay *r);

/* 1 when this relay is the active one and its database link is up. */
int id_relay_active(id_relay *r);

/*
 * 1 while the relay publishes nothing because the topic holds events the
 * outbox does not (tail.h); then `why` (may be NULL) receives the reason,
 * naming both sides. Thread-safe: the readiness check calls it from the
 * HTTP workers. 0 for NULL.
 */
int id_relay_diverged(id_relay *r, char *why, size_t size);

#endif
