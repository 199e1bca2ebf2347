/*
 * libauthzfilter: local authorization decisions for a gateway (DESIGN
 * section 6). The public header; everything else is internal.
 *
 *   authzfilter *f;
 *   char err[256];
 *   if (af_open("filter.json", &f, err, sizeof err) != 0) ... ;
 *   af_request rq = { .method = "GET", .path = "/runtime-groups/42",
 *                     .authorization = "Bearer ...", .revision = NULL };
 *   af_decision d;
 *   af_check(f, &rq, &d);       // microseconds, never blocks
 *   ...
 *   af_close(f);
 *
 * af_open starts one thread of the library's own, which loads the region's
 * policy from its authz-server (GET /v1/policy/snapshot) and keeps it
 * current from the change feed (stream=1&watermarks=1; on 410 it reloads
 * the snapshot while the old policy keeps answering; on a lost connection
 * it reconnects with backoff and keeps serving the last state, whose
 * staleness then grows). af_check may be called from any number of
 * threads while updates apply: the policy index is a chain of immutable
 * generations published with liburcu (the "bulletproof" flavour, so no
 * thread has to register), so a check never waits on the writer and
 * always sees one feed answer applied entirely or not at all.
 *
 * A check: normalise the path once, match the route (action + resource),
 * verify the bearer token (cached until its expiry: a hit does no
 * signature work), look the subject up in the index, then decide whether a
 * deny is final: by default (deny_after "arrival") only once this region
 * has applied every origin's changes up to the request's arrival time less
 * the clock tolerance, so a client calling right after a grant made in
 * another region is allowed after about one network delay instead of
 * being refused. Until then the deny is AF_DENY_TRANSIENT; a caller that
 * can wait registers with af_wait and decides again when woken.
 */
#ifndef AUTHZFILTER_H
#define AUTHZFILTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct authzfilter authzfilter;

enum af_outcome {
    AF_ALLOW = 0,
    AF_DENY = 1,            /* final: nothing committed before arrival grants it */
    AF_DENY_TRANSIENT = 2,  /* may only mean "not replicated yet": retry */
    AF_UNAVAILABLE = 3      /* no policy loaded, or the data it needs is stale */
};

typedef struct af_request {
    const char *method;         /* "GET", ...; required */
    const char *path;           /* request target as received (query allowed) */
    size_t path_len;            /* 0: strlen(path) */
    const char *authorization;  /* the Authorization header, or NULL */
    const char *revision;       /* the Authz-Revision header, or NULL */
    int revision_count;         /* how many Authz-Revision headers (more than one is refused) */
    int64_t arrival_ms;         /* wall clock of arrival; 0: now. Keep it when deciding again. */
} af_request;

#define AF_SUBJECT_LEN 257
#define AF_ORIGIN_LEN 33
#define AF_ACTION_LEN 128
#define AF_RESOURCE_LEN 1024
#define AF_MESSAGE_LEN 256

typedef struct af_decision {
    enum af_outcome outcome;
    /* Machine-readable, a static string: allowed, no_grant, no_route,
     * bad_path, no_token, bad_token, bad_revision, revision_pending,
     * origin_lagging, origin_silent, arrival_pending, stale_policy,
     * no_policy. */
    const char *reason;
    int unauthenticated;        /* no_token / bad_token: answer 401 */
    char subject[AF_SUBJECT_LEN];
    char origin[AF_ORIGIN_LEN]; /* whose data decided it: the granting
                                 * assignment's origin, the origin a
                                 * transient deny waits for, or "" */
    char action[AF_ACTION_LEN];
    char resource[AF_RESOURCE_LEN];
    char message[AF_MESSAGE_LEN]; /* for logs: never a secret */
    int retry_after_ms;         /* transient / unavailable: when to try again */
    uint64_t generation;        /* the index generation it was decided on */
    /* What a transient deny waits for (af_wait reads them). */
    uint64_t wait_hlc;          /* every counted origin (or wait_origin) applied to it */
    int wait_origin;            /* -1: every origin */
} af_decision;

/*
 * Opens a filter from the JSON configuration file `config_file` (with
 * AUTHZ_<SECTION>_<KEY> environment overrides; sections service, policy,
 * routes, paths, jwt, decision, log; docs/gateway-filter.md). 0 with *out
 * set (owned by the caller: af_close), or -1 with `err` filled. The policy
 * loads in the background: until it has, af_check answers AF_UNAVAILABLE
 * (af_ready tells).
 */
int af_open(const char *config_file, authzfilter **out, char *err, size_t errlen);
/* Loads and checks `config_file` as af_open would (every setting, the key
 * files, the routes file, the policy URL) without starting anything, so a
 * host can refuse a bad configuration before it serves (nginx -t). 0, or
 * -1 with `err` filled. */
int af_config_test(const char *config_file, char *err, size_t errlen);
/* Stops the background thread, wakes nothing more, frees everything. No
 * other thread may be inside af_check or af_wait. */
void af_close(authzfilter *f);

/* 1 once a policy snapshot is loaded. */
int af_ready(authzfilter *f);

/* Decides `rq` now. Never blocks; thread-safe. */
void af_check(authzfilter *f, const af_request *rq, af_decision *d);

/*
 * Registers `cb(arg)` to be called once, from the library's thread, when a
 * transient deny `d` may have changed: its watermark has passed, or the
 * policy changed in a way that may now allow it. The caller then calls
 * af_check again with the same request (same arrival_ms) and, when it is
 * still transient, may wait again. A callback must not block and must not
 * call af_wait or af_wait_cancel itself; hand the work to your own thread
 * (e.g. event_active). Returns 0 with *handle set, or -1 when the waiters'
 * cap is reached (answer the transient deny at once). The handle is
 * invalid once the callback has started.
 */
typedef struct af_waiter af_waiter;
int af_wait(authzfilter *f, const af_decision *d, void (*cb)(void *arg), void *arg,
            af_waiter **handle);
/* Cancels a wait whose callback has not run: 1 cancelled (cb will never
 * run), 0 the callback has already run or is running (the handle is
 * gone). */
int af_wait_cancel(authzfilter *f, af_waiter *handle);

/* decision.retry_budget_ms: how long a host holds a transient deny for
 * (af_wait) before it answers it. */
long long af_retry_budget_ms(const authzfilter *f);

/* Re-reads the key files and the routes file (SIGHUP); a file that does
 * not load keeps what is in use. 0, or -1 with err filled. */
int af_reload(authzfilter *f, char *err, size_t errlen);

typedef struct af_origin_stat {
    char name[AF_ORIGIN_LEN];
    uint64_t applied_hlc, known_hlc;
    int64_t lag_ms;             /* known - applied */
    int64_t staleness_ms;       /* now - applied */
} af_origin_stat;

#define AF_STATS_MAX_ORIGINS 16

typedef struct af_stats {
    int loaded;
    uint64_t generation;
    long long cursor;
    size_t users, teams, memberships, assignments, index_bytes;
    size_t routes;
    size_t waiters;                 /* waiting now */
    uint64_t snapshots_loaded;      /* snapshot loads (first and after 410) */
    uint64_t feed_errors;           /* lost connections, bad answers */
    int feed_connected;             /* the change stream is open */
    int64_t last_update_age_ms;     /* since the last line from the feed, -1: never */
    size_t n_origins;
    af_origin_stat origins[AF_STATS_MAX_ORIGINS];
} af_stats;

void af_get_stats(authzfilter *f, af_stats *st);

/* The outcome's name: "allow", "deny", "deny-transient", "unavailable". */
const char *af_outcome_name(enum af_outcome o);

#ifdef __cplusplus
}
#endif

#endif
