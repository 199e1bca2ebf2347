/*
 * The filter's link to its region's authz-server: a thread of its own
 * that loads the policy snapshot into the index, then follows the change
 * feed as a stream (stream=1&watermarks=1), applying each line as one
 * index generation. On 410 or a "cursor_expired" line it reloads the
 * snapshot (the index keeps answering from the old generation until the
 * new one is whole); on any failure it reconnects after a full-jitter
 * backoff, from the cursor of the last line applied, and the index keeps
 * serving what it has (its watermarks stop, so staleness shows).
 */
#ifndef AF_FEED_H
#define AF_FEED_H

#include <stdint.h>

#include "common/err.h"
#include "common/log.h"
#include "gateway-filter/index.h"

typedef struct af_feed af_feed;

typedef struct af_feed_opts {
    const char *url;             /* the authz-server's base URL (copied) */
    const char *token_file;      /* bearer token file, or NULL (copied) */
    long long backoff_max_ms;
    long long stream_timeout_ms; /* a silent stream is reopened after it */
    long long snapshot_max_bytes;
    af_index *ix;                /* borrowed; written only by the feed thread */
    azc_log *log;                /* borrowed */
    /* After each publication, on the feed thread: `changed` is 1 when
     * rows changed (a snapshot, or a line with changes), 0 for a
     * watermark-only line. */
    void (*on_publish)(void *arg, int changed);
    void *arg;
} af_feed_opts;

typedef struct af_feed_stats {
    uint64_t snapshots;          /* snapshots loaded */
    uint64_t lines;              /* stream lines applied */
    uint64_t errors;             /* failed requests, bad answers */
    int connected;               /* a stream's 200 NDJSON answer is being read */
    int64_t last_line_ms;        /* wall clock of the last applied line, 0: never */
} af_feed_stats;

/* Starts the thread. NULL with e filled on failure. */
af_feed *af_feed_new(const af_feed_opts *o, azc_err *e);
/* Stops and joins the thread, frees everything. NULL is a no-op. */
void af_feed_free(af_feed *fd);
void af_feed_get_stats(af_feed *fd, af_feed_stats *st);

#endif
