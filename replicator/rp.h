/*
 * authz-replicator: what its parts share. The settings (read once by
 * main.c), the metric families, and the status every follower publishes
 * for /v1/status and /readyz under one lock (followers run on threads of
 * their own; the HTTP server on another).
 */
#ifndef RP_H
#define RP_H

#include <pthread.h>

#include "common/log.h"
#include "common/metrics.h"

#define RP_MAX_REGIONS 16
#define RP_REGION_LEN 64
#define RP_MAX_ORIGINS 64
#define RP_ERR_LEN 256

typedef struct rp_settings {
    const char *region;                          /* this region */
    char regions[RP_MAX_REGIONS][RP_REGION_LEN]; /* every region, this one included */
    size_t nregions;
    const char *pg_url;
    const char *migrations_dir;
    const char *http_addr;
    int http_port;
    const char *token_file;                      /* NULL: no Authorization header */
    long long wait_ms;                           /* long poll wait asked of the peer */
    long long limit;                             /* rows per feed answer */
    long long backoff_max_ms;
    int stream;                                  /* replication.mode: 1 "stream", 0 "poll" */
    long long stream_timeout_ms;                 /* a stream silent this long is reopened */
} rp_settings;

typedef struct rp_metrics {
    azc_metric *applied;    /* rp_rows_applied_total{peer,kind} */
    azc_metric *skipped;    /* rp_rows_skipped_total{peer,reason} */
    azc_metric *batch;      /* rp_batch_seconds{peer} */
    azc_metric *lag;        /* rp_lag_seconds{origin} */
    azc_metric *errors;     /* rp_peer_errors_total{peer,kind} */
    azc_metric *reconnects; /* rp_reconnects_total{peer} */
    azc_metric *dead;       /* rp_dead_letters_total{peer} */
    azc_metric *resyncs;    /* rp_resyncs_total{peer} */
} rp_metrics;

/* One origin's watermarks in this region, as last read by a follower. */
typedef struct rp_origin_status {
    char origin[RP_REGION_LEN];
    long long applied;
    long long known;
    char source[RP_REGION_LEN]; /* "" when NULL (own consumer) */
} rp_origin_status;

/* What a follower shows of itself; guarded by rp_shared.lock. */
typedef struct rp_peer_status {
    char name[RP_REGION_LEN];
    char url[512];
    long long cursor;           /* -1 before the first read of the stored one */
    const char *state;          /* static string: starting, resyncing, following, backoff */
    char last_error[RP_ERR_LEN];
    long long last_success_ms;  /* monotonic ms of the last applied answer; 0: never */
    int reached;                /* an answer was applied (or a bootstrap done) once */
    const char *mode;           /* static string: "stream" or "poll" */
    int stream_open;            /* a stream's 200 NDJSON answer is being read */
} rp_peer_status;

typedef struct rp_shared {
    rp_settings set;
    azc_log *log;
    azc_metrics *metrics;
    rp_metrics m;
    pthread_mutex_t lock;
    rp_peer_status peers[RP_MAX_REGIONS];
    size_t npeers;
    rp_origin_status origins[RP_MAX_ORIGINS];
    size_t norigins;
} rp_shared;

/* Monotonic clock in milliseconds. */
long long rp_now_ms(void);

#endif
