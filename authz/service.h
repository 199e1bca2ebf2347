/*
 * The authz server's context, shared by its files: settings, logger,
 * metrics, and the consumer's status (written by the consumer thread, read
 * by the HTTP workers under its mutex). Each HTTP worker has its own event
 * loop, database connections and long-poll waiters (feed.h).
 */
#ifndef AZ_SERVICE_H
#define AZ_SERVICE_H

#include <pthread.h>
#include <stdint.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/revision.h"

#define AZ_MAX_REGIONS 32

typedef struct az_settings {
    const char *region;
    char regions[AZ_MAX_REGIONS][AZC_REGION_MAX + 1];
    size_t nregions;
    const char *pg_url;
    const char *bootstrap;
    const char *topic;
    const char *http_addr;
    int http_port;
    int workers;
    int batch;                  /* most messages per consumer transaction */
    long long transient_lag_ms; /* lag above which a deny is transient */
    long long feed_retain;      /* change-feed rows kept */
    long long prune_interval_ms;
} az_settings;

typedef enum az_consumer_state {
    AZ_CONSUMER_STARTING = 0,
    AZ_CONSUMER_RUNNING,
    AZ_CONSUMER_STOPPED   /* a gap, or a fatal Kafka error: see error */
} az_consumer_state;

/* What /v1/status and /readyz show of the consumer. */
typedef struct az_consumer_status {
    az_consumer_state state;
    char error[256];
    int64_t next_offset;        /* -1 before the first stored position */
    uint64_t applied_seq;
    uint64_t events_applied;    /* since start */
    uint64_t duplicates;        /* since start */
} az_consumer_status;

typedef struct az_shared {
    az_settings set;
    azc_log *log;
    azc_metrics *metrics;

    pthread_mutex_t status_lock;
    az_consumer_status status;  /* guarded by status_lock */

    azc_metric *m_applied;      /* authz_events_applied_total{type} */
    azc_metric *m_duplicates;   /* authz_events_duplicate_total */
    azc_metric *m_dead;         /* authz_dead_letters_total */
    azc_metric *m_batch;        /* authz_apply_batch_seconds */
    azc_metric *m_age;          /* authz_event_age_seconds */
    azc_metric *m_lag;          /* authz_lag_seconds{origin} */
    azc_metric *m_stopped;      /* authz_consumer_stopped */
    azc_metric *m_checks;       /* authz_checks_total{decision} */
} az_shared;

/* Copies the consumer status out under its lock. */
void az_status_get(az_shared *sh, az_consumer_status *out);

#endif
