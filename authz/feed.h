/*
 * The change feed (GET /v1/policy/changes): per worker, the long polls
 * waiting for a change, the streams (stream=1) following it, and a LISTEN
 * connection whose notifications (authz_changes, authz_watermarks, sent at
 * COMMIT by whoever changed the policy set) wake them. No periodic
 * polling.
 */
#ifndef AZ_FEED_H
#define AZ_FEED_H

#include "authz/worker.h"

/* New feed for worker w (borrowed): connects its LISTEN connection and
 * watches it on w->base. NULL with e filled on failure. */
az_feed *az_feed_new(az_worker *w, azc_err *e);

/* GET /v1/policy/changes; arg is the az_worker. */
void az_changes_handler(azc_http_req *r, void *arg);

/* Frees the feed. Waiting requests must already be gone (azc_http_free
 * closes them first). NULL is a no-op. */
void az_feed_free(az_feed *f);

/* The longest a stream goes without a line (then it gets an empty one),
 * unless set otherwise (the feed.stream_keepalive_ms setting). */
#define AZ_FEED_STREAM_KEEPALIVE_MS 15000

/* Sets that interval (ms; not positive: the default) for the lines queued
 * from now on. Call from f's loop thread, or before it runs. */
void az_feed_set_stream_keepalive(az_feed *f, long long ms);

#endif
