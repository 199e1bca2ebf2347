/*
 * What the change feed's files share, and nothing else should use:
 * feed.c (the handler, the waiters, the wake-ups and the per-worker
 * fan-out, the LISTEN connection), feed_read.c (one read of the feed and
 * the answers built from it) and feed_stream.c (stream=1 answers). The
 * design is in feed.c's opening comment.
 */
#ifndef AZ_FEED_INTERNAL_H
#define AZ_FEED_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <event2/util.h>
#include <jansson.h>

#include "authz/feed.h"
#include "common/revision.h"

#define NDJSON "application/x-ndjson"

/* Marks a malformed answer of the store: the reply is 500, never a retry
 * hint (503), since asking again gets the same text. */
#define MALFORMED AZC_EINVAL

/* Heartbeat answers go out paced (az__feed_pace): a rate per millisecond,
 * counted from the time of the previous slice. */
typedef struct az_pace {
    uint64_t last_us;          /* monotonic time of the last slice; 0: none yet */
} az_pace;

typedef struct waiter {
    az_feed *f;
    azc_http_req *r;
    struct event *timer;
    long long after;
    int limit;
    int want_watermarks;
    char exclude[AZC_REGION_MAX + 1];  /* exclude_origin: rows of it left out, "" for none */
    char *watermarks_seen;     /* the text when it started waiting */
    int wm_due;                /* new watermarks to answer with, at a slice (feed.c) */
    struct waiter *prev, *next;
} waiter;

/* One stream=1 answer. Owned by the feed from reply_start on; freed by
 * its close callback, its end, or the feed. */
typedef struct stream {
    az_feed *f;
    azc_http_req *r;
    struct event *keepalive;   /* re-armed by every line queued */
    long long cursor;          /* of the last message queued */
    int limit;
    int want_watermarks;
    char exclude[AZC_REGION_MAX + 1];  /* exclude_origin: rows of it left out, "" for none */
    char *watermarks_sent;     /* want_watermarks: the text of the last message that had them */
    int busy;                  /* a line is queued and not yet written out */
    int pending;               /* something may be due once it is (or a read failed) */
    struct stream *prev, *next;
} stream;

/* One read of the feed: rows after some cursor, and the feed's bounds and
 * watermarks in the same snapshot. */
typedef struct feed_read {
    long long last_seq, pruned;
    json_t *rows;              /* [{seq, kind, row}, ...], oldest first; NULL when n is 0 */
    long long *seq;            /* seq of each row */
    size_t n;
    int cut;                   /* the read's limit stopped it before last_seq */
    char *wm_text;             /* the watermarks as compact JSON, keys sorted */
    json_t *wm;
} feed_read;

struct az_feed {
    az_worker *w;
    azc_pg_link *link;         /* the LISTEN connection; reconnects by itself */
    PGconn *listen;            /* its connection while up, else NULL */
    struct event *listen_ev;
    waiter *head;
    size_t nwaiters, nwant_wm;
    /* The newest read (bounds and watermarks only, n = 0), and whether it
     * still covers every notification consumed. */
    feed_read last;
    int fresh;
    waiter **sorted;           /* wake-up scratch, capacity cap */
    size_t cap;
    stream *streams;
    size_t nstreams, nstream_wm;
    stream **ssorted;          /* wake-up scratch for streams, capacity scap */
    size_t scap;
    struct event *catch_up;    /* serves the streams that drained with something due */
    struct event *wm_due;      /* answers the waiters with wm_due set, paced */
    az_pace wm_pace, catch_up_pace;
    struct timeval keepalive;  /* the interval, and the common-timeout form of it */
    const struct timeval *keepalive_tv;
    struct evbuffer *out;      /* reply scratch */
    azc_metric *m_reads;       /* authz_feed_reads_total{for} */
    azc_metric *m_wakeups;     /* authz_feed_wakeups_total{channel} */
    azc_metric *m_waiters;     /* authz_feed_waiters{worker} */
    azc_metric *m_streams;     /* authz_feed_streams{worker} */
    char worker_label[16];
};

typedef enum {
    ANS_GONE,      /* 410: the cursor is outside the feed */
    ANS_SHORT,     /* the read stopped before this waiter's rows: read again */
    ANS_NONE,      /* no row after the cursor */
    ANS_ROWS
} answer_kind;

typedef struct answer {
    answer_kind kind;
    size_t start, count;   /* rd->rows[start .. start + count) */
    int more;
} answer;

/* ---- feed_read.c ---- */

void az__feed_read_clear(feed_read *rd);
void az__feed_metric_inc(az_feed *f, azc_metric *m, const char *label);
/* Reads the rows after `after` (at most `limit`), the bounds and the
 * watermarks into *rd (cleared first). `why` labels the read in
 * authz_feed_reads_total. MALFORMED when the store's JSON does not parse. */
int az__feed_read_feed(az_feed *f, long long after, int limit, const char *why, feed_read *rd,
                       azc_err *e);
/* The LISTEN connection hears every commit from now on. */
int az__feed_listening(const az_feed *f);
/* Keeps rd's bounds and watermarks as the worker's newest read. */
void az__feed_remember(az_feed *f, const feed_read *rd);
answer az__feed_answer_for(const feed_read *rd, long long after, int limit);
/* The JSON text of answer a (malloc'd), NULL when out of memory; rows of
 * origin `exclude` ("" for none) are left out, the cursor still passes
 * them. */
char *az__feed_body_text(const feed_read *rd, long long after, const answer *a,
                         const char *exclude);
void az__feed_send_text(az_feed *f, azc_http_req *r, const char *text);
void az__feed_send_gone(azc_http_req *r, const feed_read *rd, long long after);
void az__feed_send_answer(az_feed *f, azc_http_req *r, const feed_read *rd, long long after,
                          const answer *a, const char *exclude);
void az__feed_send_read_error(az_feed *f, azc_http_req *r, int rc, const azc_err *e);

/* ---- feed.c ---- */

void az__feed_count_waiters(az_feed *f);
int az__feed_grow_scratch(az_feed *f, size_t waiters, size_t streams);
/* Answers the waiters f->sorted[0..n) and the streams f->ssorted[0..m)
 * (each sorted by cursor) with as few reads as it takes. */
void az__feed_serve(az_feed *f, size_t n, size_t m, const char *why);

/* ---- feed_stream.c ---- */

void az__feed_count_streams(az_feed *f);
/* Forgets st without touching its request. */
void az__feed_stream_free(stream *st);
/* Sends each stream of list[0..n) (sorted by cursor, none busy) what rd
 * has for it; moves those rd stopped short of to the front and returns
 * how many. */
size_t az__feed_stream_answer_from(az_feed *f, const feed_read *rd, stream **list, size_t n);
int az__feed_by_stream_cursor(const void *a, const void *b);
/* The catch-up event's callback (arg: the feed). */
void az__feed_on_catch_up(evutil_socket_t fd, short what, void *arg);
/* Runs the catch-up at the next turn of the loop. */
void az__feed_catch_up_soon(az_feed *f);
/* Runs ev (a timer of f's loop) at the next turn of the loop; `what`
 * names it in the warning if it cannot be scheduled. */
void az__feed_run_soon(az_feed *f, struct event *ev, const char *what);
/* How many followers the slice that runs now answers, of at most `due`:
 * the pace's rate (AZ_PACE_PER_MS a millisecond, or enough to answer
 * `due` within AZ_PACE_SPREAD_MAX_MS) times the time since its previous
 * slice, up to
 * 4 ms (a 1 ms timer may fire late: the loop is busy, or its timers follow
 * the kernel's tick); one millisecond's worth for the first slice of a
 * pass, or after a longer gap, which must not turn into a burst. */
#define AZ_PACE_PER_MS 8
#define AZ_PACE_SPREAD_MAX_MS 100
size_t az__feed_pace(az_pace *p, size_t due);
/* Runs ev (a timer of f's loop) again in a millisecond. */
void az__feed_run_paced(az_feed *f, struct event *ev, const char *what);
/* Answers r as a stream (see feed.c). */
void az__feed_start_stream(az_feed *f, azc_http_req *r, long long after, int limit, int want_wm,
                           const char *exclude);

#endif
