/*
 * The testable core of authz-netem-proxy (tools/netem-proxy.c): its
 * command line, the control protocol's commands and status line, and the
 * delay queue that holds each direction's bytes until their release time.
 * Nothing here touches a socket or an event loop, so tests/unit/test_netem.c
 * drives it with a fake clock.
 */
#ifndef NM_NETEM_H
#define NM_NETEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>

#include "common/err.h"

/* Longest one-way delay accepted on the command line and the control port:
 * ten minutes is far beyond any WAN the tests model, and bounds the memory a
 * mistyped delay could pin. */
#define NM_DELAY_MAX_MS 600000u

/* ---- command line ------------------------------------------------------ */

typedef struct nm_opts {
    struct sockaddr_in listen;
    struct sockaddr_in target;
    struct sockaddr_in control;
    int has_control;
    unsigned delay_ms;
    const char *log_level;     /* borrowed from argv; "info" by default */
    const char *label;         /* borrowed from argv; NULL if not given */
} nm_opts;

enum { NM_RUN = 0, NM_EXIT = 1 };

/* Parses argv. NM_RUN to go on; NM_EXIT after printing --help or --version
 * on `out` (exit 0); AZC_EINVAL after printing the error and a usage hint on
 * `err` (exit 2). */
int nm_opts_parse(int argc, char *const *argv, nm_opts *o, FILE *out, FILE *err) AZC_WARN_UNUSED;

/* "127.0.0.1:8080" -> address. Numeric IPv4 only, port 1..65535. */
int nm_addr_parse(const char *s, struct sockaddr_in *out, azc_err *e) AZC_WARN_UNUSED;

/* Strict decimal 0..NM_DELAY_MAX_MS. */
int nm_delay_parse(const char *s, unsigned *out, azc_err *e) AZC_WARN_UNUSED;

/* ---- control protocol -------------------------------------------------- */

typedef enum nm_mode {
    NM_MODE_PASS = 0,       /* forward, after the current one-way delay */
    NM_MODE_CUT,            /* reset every connection, refuse new ones */
    NM_MODE_BLACKHOLE       /* accept and read, forward nothing */
} nm_mode;

typedef enum nm_ctl_cmd {
    NM_CTL_PASS = 0,        /* "pass" or "heal", optionally "pass MS" */
    NM_CTL_DELAY,           /* "delay MS": the delay only, the mode stays */
    NM_CTL_CUT,
    NM_CTL_BLACKHOLE,
    NM_CTL_STATUS
} nm_ctl_cmd;

typedef struct nm_ctl {
    nm_ctl_cmd cmd;
    int has_delay;
    unsigned delay_ms;
} nm_ctl;

/* One control line (without its end of line; surrounding blanks ignored). */
int nm_ctl_parse(const char *line, nm_ctl *out, azc_err *e) AZC_WARN_UNUSED;

const char *nm_mode_name(nm_mode m);

typedef struct nm_stats {
    nm_mode mode;
    unsigned delay_ms;
    uint64_t connections;   /* open now */
    uint64_t accepted;      /* since start, forwarded or held */
    uint64_t refused;       /* accepted and closed at once while cut */
    uint64_t bytes_up;      /* client -> target, forwarded */
    uint64_t bytes_down;    /* target -> client, forwarded */
} nm_stats;

/* The status line: one JSON object and a '\n', malloc'd (caller frees).
 * NULL when out of memory. */
char *nm_status_line(const nm_stats *s);

/* ---- delay queue ------------------------------------------------------- */

/*
 * A FIFO of byte chunks, each due at (time read + delay). Release times
 * never decrease along the queue, even when the delay is lowered at run
 * time, so bytes always leave in the order they came in.
 */
typedef struct nm_chunk nm_chunk;

typedef struct nm_dq {
    nm_chunk *head;
    nm_chunk *tail;
    size_t bytes;           /* queued, not yet released */
    uint64_t last_due_us;   /* release time of the newest chunk */
} nm_dq;

void nm_dq_init(nm_dq *q);
/* Drops everything queued. */
void nm_dq_clear(nm_dq *q);

/* Copies len bytes (len > 0) in, due at now_us + delay_us (or at the
 * previous chunk's due time if that is later). AZC_ENOMEM leaves the queue
 * as it was. */
int nm_dq_push(nm_dq *q, uint64_t now_us, uint64_t delay_us, const void *data, size_t len)
    AZC_WARN_UNUSED;

/* Due time of the oldest chunk; AZC_ENOTFOUND when empty. */
int nm_dq_next_due(const nm_dq *q, uint64_t *due_us) AZC_WARN_UNUSED;

/* Receives released bytes; returns AZC_OK or a failure that stops the
 * release (the chunk stays queued). */
typedef int (*nm_sink)(void *arg, const void *data, size_t len);

/* Hands every chunk due at now_us to `sink`, oldest first, and frees it.
 * Returns AZC_OK or the sink's failure. `released` (may be NULL) gets the
 * byte count handed over. */
int nm_dq_release(nm_dq *q, uint64_t now_us, nm_sink sink, void *arg, size_t *released)
    AZC_WARN_UNUSED;

#endif
