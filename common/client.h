/*
 * The retrying HTTP client for automated callers and authzctl (issue 13,
 * DESIGN sections 4 and 6); docs/client.md is the contract it implements,
 * for clients written in other languages too.
 *
 * One call is one logical request: the client sends it, and sends it again
 * only when doing so cannot apply anything twice and may give another
 * answer:
 *   - 403 with `Authz-Decision: transient` (the region has not applied a
 *     change yet), 429 and 503: the server did nothing; wait as its
 *     `Retry-After` says (delta-seconds or an HTTP-date), else back off;
 *   - no answer at all (connection refused, reset, timed out): only for
 *     GET, HEAD, PUT, DELETE, and a POST that carries an Idempotency-Key
 *     (every POST does unless the caller opts out), since the first try
 *     may have been applied;
 *   - anything else, a final 403 included, is the answer.
 * Backoff is exponential with full jitter (a random delay in [0, min(cap,
 * base * 2^(n-1))]), bounded by a number of attempts and a total time
 * budget; a Retry-After beyond what remains of the budget ends the call at
 * once rather than retrying earlier than the server asked.
 *
 * Revisions: the client keeps the newest `Authz-Revision` token any answer
 * carried and sends it with every later request, so a caller's own writes
 * are visible to its own next calls in any region.
 *
 * A client owns a private event_base and runs each call to completion on
 * the caller's thread: it is not thread-safe (one client per thread).
 * http:// and https:// URLs; https verifies the peer's certificate and
 * host name against the system CA store, or against `ca_file`.
 */
#ifndef AZC_CLIENT_H
#define AZC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/revision.h"

typedef struct azc_client azc_client;   /* opaque */

/* Time as the client sees it; tests substitute a fake clock so that
 * Retry-After of whole seconds costs no real time. */
typedef struct azc_client_clock {
    uint64_t (*mono_ms)(void *arg);            /* monotonic milliseconds */
    uint64_t (*wall_ms)(void *arg);            /* Unix time in ms (HTTP-date) */
    void (*sleep_ms)(void *arg, uint64_t ms);  /* waits between attempts */
    void *arg;
} azc_client_clock;

typedef struct azc_client_options {
    int max_attempts;           /* 1-100, default 5 (1: never retry) */
    int budget_ms;              /* total time of one call, default 10000 */
    int attempt_timeout_ms;     /* one attempt, connect to last byte, default 5000 */
    int backoff_base_ms;        /* default 50 */
    int backoff_cap_ms;         /* default 2000 */
    size_t max_body_bytes;      /* largest answer body, default 16 MiB */
    const char *token;          /* bearer token for every request, or NULL; copied */
    const char *ca_file;        /* PEM CA bundle for https, NULL: system store; copied */
    int insecure;               /* 1: https without certificate checks (tests only) */
    const azc_client_clock *clock;  /* NULL: the real clocks; copied */
    /* Called before each wait between attempts (a demo prints "retried
     * after 120 ms because 403 transient"); may be NULL. */
    void (*on_retry)(void *arg, int attempt, uint64_t delay_ms, const char *reason);
    void *on_retry_arg;
} azc_client_options;

/* Fills o with the defaults above. */
void azc_client_options_init(azc_client_options *o);

/* Creates a client. AZC_EINVAL for an option out of range or an unreadable
 * ca_file, AZC_ERROR when libevent or OpenSSL cannot be set up. */
int azc_client_new(const azc_client_options *o, azc_client **out, azc_err *e) AZC_WARN_UNUSED;

/* Frees the client; NULL is fine. */
void azc_client_free(azc_client *c);

/* The newest revision token seen (or set), "" when none; borrowed, valid
 * until the next call on c. */
const char *azc_client_revision(const azc_client *c);

/* Merges `token` into the client's revision: kept when it is newer (larger
 * HLC; on equal HLCs the one held stays) than the one held. AZC_EINVAL for
 * a malformed token. */
int azc_client_merge_revision(azc_client *c, const char *token, azc_err *e) AZC_WARN_UNUSED;

/* 1 if token a is newer than token b (both valid): a larger HLC. Tokens of
 * different origins compare by HLC too: HLCs are wall-clock milliseconds
 * and a counter, so the larger one is the later write within clock skew. */
int azc_revision_newer(const azc_revision *a, const azc_revision *b);

enum azc_client_idem {
    AZC_IDEM_AUTO = 0,   /* POST: the caller's key, else a new UUID */
    AZC_IDEM_NONE = 1    /* no key: a POST is then never resent after no answer */
};

typedef struct azc_client_header {
    const char *name;
    const char *value;
} azc_client_header;

typedef struct azc_client_request {
    const char *method;           /* GET, HEAD, POST, PUT, PATCH, DELETE */
    const char *url;              /* http[s]://host[:port]/path[?query] */
    const char *body;             /* NULL for none */
    size_t body_len;
    const char *content_type;     /* default application/json when there is a body */
    const char *idempotency_key;  /* POST with AZC_IDEM_AUTO: NULL generates one */
    int idempotency;              /* enum azc_client_idem */
    const azc_client_header *headers;  /* extra request headers, or NULL */
    size_t nheaders;
} azc_client_request;

/* One wait between two attempts. */
typedef struct azc_client_retry {
    int attempt;             /* the attempt that failed, 1-based */
    int status;              /* its HTTP status, 0 for no answer */
    uint64_t delay_ms;       /* how long the client waited before the next */
    char reason[160];        /* "403 transient", "503, Retry-After 1 s", "connection refused" */
} azc_client_retry;

#define AZC_CLIENT_MAX_RETRIES 100

typedef struct azc_client_result {
    int status;              /* final HTTP status; 0 when the last attempt got no answer */
    azc_client_header *headers;  /* the final answer's headers (owned by the result) */
    size_t nheaders;
    char *body;              /* the final answer's body, NUL-terminated, owned by the
                              * caller: freed by azc_client_result_clear unless taken
                              * (set to NULL) */
    size_t body_len;
    int attempts;
    azc_client_retry retries[AZC_CLIENT_MAX_RETRIES];
    size_t nretries;         /* attempts - 1 */
    uint64_t elapsed_ms;     /* the whole call */
    char idempotency_key[256];   /* the key sent, "" when none */
    char stop[160];          /* why the call ended: "answer", "final 403", "attempts
                              * exhausted", "budget exhausted", "not retryable: ..." */
} azc_client_result;

/*
 * Runs one call (see the top of this file) and fills `res` (cleared first;
 * free it with azc_client_result_clear even on error).
 * AZC_OK when an answer arrived, whatever its status (the caller judges a
 * 4xx or a 5xx); AZC_EUNAVAIL when the last attempt got no answer (e says
 * why: "connection refused", "timed out after 5000 ms", a TLS failure),
 * AZC_EINVAL for a malformed request (URL, method), AZC_ENOMEM.
 */
int azc_client_do(azc_client *c, const azc_client_request *rq, azc_client_result *res,
                  azc_err *e) AZC_WARN_UNUSED;

/* The value of header `name` (case-insensitive) in the result, or NULL. */
const char *azc_client_result_header(const azc_client_result *res, const char *name);

/* Frees what res holds and zeroes it; the body too unless taken. */
void azc_client_result_clear(azc_client_result *res);

/*
 * Parses a Retry-After value: delta-seconds, or an HTTP-date (IMF-fixdate,
 * RFC 850 or asctime form) relative to `now_wall_ms`; a date in the past
 * is 0. AZC_EINVAL for anything else. Exposed for tests.
 */
int azc_retry_after_parse(const char *value, uint64_t now_wall_ms, uint64_t *delay_ms);

#endif
