/*
 * The authz server's context, shared by its files: settings, logger,
 * metrics, and the consumer's status (written by the consumer thread, read
 * by the HTTP workers under its mutex). Each HTTP worker has its own event
 * loop, database connections and long-poll waiters (feed.h).
 */
#ifndef AZ_SERVICE_H
#define AZ_SERVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/jwt.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/revision.h"

#define AZ_MAX_REGIONS 32

typedef struct az_settings {
    const char *region;
    char regions[AZ_MAX_REGIONS][AZC_REGION_MAX + 1];
    size_t nregions;
    const char *pg_url;
    azc_kafka_conn *kafka;      /* bootstrap list and security; owned */
    const char *topic;
    const char *http_addr;
    int http_port;
    int workers;
    int batch;                  /* most messages per consumer transaction */
    long long transient_lag_ms; /* lag above which a deny is transient */
    long long heartbeat_ms;     /* the origins' heartbeat interval */
    long long silence_heartbeats; /* unheard for more intervals: the origin lags */
    long long clock_tolerance_ms; /* revision HLCs further ahead are impossible */
    long long feed_retain;      /* change-feed rows kept */
    long long prune_interval_ms;
    long long prune_batch;      /* most feed rows one prune removes */
    long long stream_keepalive_ms; /* longest a feed stream goes without a line */
    long long snapshot_max;     /* concurrent snapshot streams */
    long long applied_ids_retain; /* applied event ids kept per origin */
    long long stall_ms;         /* no progress for longer: not ready */
    int expect_regions;         /* every configured region without a
                                   watermark row counts as never heard */
    int collect_tombstones;     /* the tick removes tombstones every region
                                   has applied (docs/authz.md) */
    /* Peer authentication of the feed and the snapshot: off while
     * keys_file is NULL. */
    const char *keys_file;
    const char *issuer;
    const char *audience;
    const char *required_scope; /* a name the token's scope claim lists */
    long long leeway_secs;
    long long max_token_lifetime_secs;
    /* "{us,eu,ap}": the configured regions as a text[] literal, and the
     * same without this region (names are [a-z][a-z0-9-]*: no quoting). */
    char regions_array[AZ_MAX_REGIONS * (AZC_REGION_MAX + 1) + 3];
    char peers_array[AZ_MAX_REGIONS * (AZC_REGION_MAX + 1) + 3];
} az_settings;

typedef enum az_consumer_state {
    AZ_CONSUMER_STARTING = 0,
    AZ_CONSUMER_RUNNING,
    /* A gap, a divergence, a failed resync, a dead letter that cannot be
     * stored or a fatal Kafka error: see error. */
    AZ_CONSUMER_STOPPED,
    /* Never stored: derived by az_consumer_status_get from a running
     * consumer that makes no progress (see stall_reason). */
    AZ_CONSUMER_STALLED
} az_consumer_state;

/* What /v1/status and /readyz show of the consumer. */
typedef struct az_consumer_status {
    az_consumer_state state;
    char error[256];
    int64_t next_offset;        /* -1 before the first stored position */
    uint64_t applied_seq;
    uint64_t epoch;             /* the origin's current epoch */
    uint64_t events_applied;    /* since start */
    uint64_t duplicates;        /* since start */

    /* A different event (or a heartbeat that contradicts the applied
     * history) at an applied seq; ids are "" when unknown. */
    int diverged;
    uint64_t div_seq;
    char div_applied_id[40], div_received_id[40];
    int64_t div_offset;

    /* A resync being staged (resync_epoch 0: none). */
    uint64_t resync_epoch;
    uint64_t resync_staged;

    /* Progress, in CLOCK_MONOTONIC milliseconds (0: never). */
    int64_t last_message_ms;    /* any message, heartbeats included */
    int64_t rollback_since_ms;  /* first of the batches rolling back now */
    char rollback_error[256];
    char kafka_error[160];      /* the last error librdkafka reported */

    /* Derived by az_consumer_status_get. */
    int64_t last_message_age_ms; /* -1 before the first message */
    char stall_reason[320];
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
    azc_metric *m_stalled;      /* authz_consumer_stalled */
    azc_metric *m_rollbacks;    /* authz_consumer_rollbacks_total */
    azc_metric *m_divergences;  /* authz_consumer_divergences_total */
    azc_metric *m_resyncs;      /* authz_resyncs_applied_total */
    azc_metric *m_checks;       /* authz_checks_total{decision} */

    atomic_int snapshots;       /* snapshot streams open, all workers */
    atomic_int links_up;        /* workers whose database link is up */
    azc_metric *m_silence;      /* authz_origin_silence_seconds{origin} */
    azc_metric *m_tombstones;   /* authz_tombstones_collected_total{origin} */

    /* Peer authentication: swapped whole on SIGHUP, so a verifier in
     * flight never sees a half-loaded set. NULL while auth is off. */
    pthread_rwlock_t keys_lock;
    azc_jwt_keys *keys;         /* guarded by keys_lock */
} az_shared;

#endif
