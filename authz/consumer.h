/*
 * The consumer of the region's identity topic: one thread that reads
 * messages with librdkafka and applies them in seq order, in PostgreSQL
 * transactions that also store the Kafka position and the watermarks, so a
 * crash anywhere neither loses nor doubles an effect. Its rules for
 * duplicates, gaps, divergences, epochs and resyncs, and dead letters are
 * in docs/authz.md.
 */
#ifndef AZ_CONSUMER_H
#define AZ_CONSUMER_H

#include "authz/service.h"
#include "common/err.h"

typedef struct az_consumer az_consumer;

/* New consumer for sh's region (sh borrowed, must outlive it). NULL with e
 * filled on a bad Kafka configuration or lack of memory. */
az_consumer *az_consumer_new(az_shared *sh, azc_err *e);

/* Starts the thread. It connects to PostgreSQL and Kafka itself, retrying
 * while they are unavailable. */
int az_consumer_start(az_consumer *c, azc_err *e) AZC_WARN_UNUSED;

/* Stops the thread after the batch it is applying (committed or rolled
 * back whole), then frees everything. NULL is a no-op. */
void az_consumer_free(az_consumer *c);

#endif
