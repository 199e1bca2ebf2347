/*
 * libauthzfilter's handle and its decision (authzfilter.h, DESIGN section
 * 6): route, token, index lookup, then whether a deny may be called final
 * yet, from the watermarks of the very generation that answered.
 *
 * Waiters: a transient deny registers (af_wait) what it waits for, one
 * origin's applied HLC or every origin's; after each publication the feed
 * thread wakes those whose condition now holds, and all of them when rows
 * changed (a grant may have arrived: allows never wait longer than the
 * data takes to arrive). Callbacks run under the waiters' lock, so once
 * af_wait_cancel has answered, a callback is either gone or finished.
 */
#include "gateway-filter/authzfilter.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu-bp.h>

#include "common/config.h"
#include "common/hlc.h"
#include "common/jwt.h"
#include "common/revision.h"
#include "common/url.h"
#include "gateway-filter/feed.h"
#include "gateway-filter/filter_internal.h"
#include "gateway-filter/index.h"
#include "gateway-filter/route.h"
#include "gateway-filter/token.h"

extern char **environ;

#define MAX_REGIONS AF_STATS_MAX_ORIGINS

struct af_waiter {
    af_waiter *prev, *next;
    void (*cb)(void *arg);
    void *arg;
    int origin;                 /* index in regions, -1: every region */
    uint64_t hlc;
};

struct authzfilter {
    azc_log *log;
    azc_log *own_log;
    char region[AZC_REGION_MAX + 1];
    char regions[MAX_REGIONS][AZC_REGION_MAX + 1];
    size_t nregions;
    /* settings */
    char *routes_file;
    int unmapped_allow;
    af_path_opts paths;
    int deny_after_arrival;
    long long clock_tolerance_ms, silence_ms, max_staleness_ms, revision_ahead_ms;
    long long retry_after_ms, retry_budget_ms;
    int serve_stale;
    size_t max_waiters;
    uint64_t start_ms;
    /* state */
    af_routes *routes;          /* RCU-published; swapped by af_reload */
    af_tokens *tokens;
    af_index *ix;
    af_feed *feed;
    pthread_mutex_t wlock;
    af_waiter *waiters;
    size_t nwaiters;
};

static const azc_config_key keys[] = {
    { "service", "region" },         { "service", "regions" },
    { "policy", "url" },             { "policy", "token_file" },
    { "policy", "max_staleness_ms" }, { "policy", "on_stale" },
    { "policy", "backoff_max_ms" },  { "policy", "stream_timeout_ms" },
    { "policy", "snapshot_max_bytes" },
    { "routes", "file" },            { "routes", "unmapped" },
    { "paths", "slashes" },          { "paths", "dot_segments" },
    { "paths", "encoded_separators" },
    { "jwt", "keys_file" },          { "jwt", "jwks_file" },
    { "jwt", "issuer" },             { "jwt", "audience" },
    { "jwt", "leeway_secs" },        { "jwt", "max_lifetime_secs" },
    { "jwt", "cache_entries" },
    { "decision", "deny_after" },    { "decision", "clock_tolerance_ms" },
    { "decision", "heartbeat_ms" },  { "decision", "silence_heartbeats" },
    { "decision", "revision_ahead_ms" }, { "decision", "retry_after_ms" },
    { "decision", "retry_budget_ms" }, { "decision", "max_waiters" },
};

const azc_config_key *af__config_keys(size_t *n)
{
    *n = sizeof keys / sizeof keys[0];
    return keys;
}

long long af_retry_budget_ms(const authzfilter *f)
{
    return f->retry_budget_ms;
}

const char *af_outcome_name(enum af_outcome o)
{
    switch (o) {
    case AF_ALLOW: return "allow";
    case AF_DENY: return "deny";
    case AF_DENY_TRANSIENT: return "deny-transient";
    case AF_UNAVAILABLE: return "unavailable";
    }
    return "unknown";
}

/* ---- configuration ---------------------------------------------------- */

static int get_choice(const azc_config *cfg, const char *section, const char *key,
                      const char *const *choices, int def, int *out, azc_err *e)
{
    const char *s;
    int i, rc;

    if ((rc = azc_config_get_string(cfg, section, key, NULL, &s, e)) != AZC_OK)
        return rc;
    if (s == NULL) {
        *out = def;
        return AZC_OK;
    }
    for (i = 0; choices[i] != NULL; i++)
        if (strcmp(s, choices[i]) == 0) {
            *out = i;
            return AZC_OK;
        }
    return azc_err_set(e, AZC_EINVAL, "configuration: %s.%s must be %s or %s", section, key,
                       choices[0], choices[1]);
}

static int read_paths(const azc_config *cfg, af_path_opts *p, azc_err *e)
{
    static const char *const slashes[] = { "merge", "refuse", NULL };
    static const char *const dots[] = { "refuse", "resolve", NULL };
    static const char *const seps[] = { "refuse", "keep", NULL };
    int v, rc;

    memset(p, 0, sizeof *p);
    if ((rc = get_choice(cfg, "paths", "slashes", slashes, 0, &v, e)) != AZC_OK)
        return rc;
    p->slashes = v ? AF_SLASHES_REFUSE : AF_SLASHES_MERGE;
    if ((rc = get_choice(cfg, "paths", "dot_segments", dots, 0, &v, e)) != AZC_OK)
        return rc;
    p->dots = v ? AF_DOTS_RESOLVE : AF_DOTS_REFUSE;
    if ((rc = get_choice(cfg, "paths", "encoded_separators", seps, 0, &v, e)) != AZC_OK)
        return rc;
    p->encoded_sep = v ? AF_ENCSEP_KEEP : AF_ENCSEP_REFUSE;
    return AZC_OK;
}

static int read_tokens(const azc_config *cfg, af_tokens **out, azc_err *e)
{
    af_token_config tc;
    long long leeway, lifetime, entries;
    int rc;

    memset(&tc, 0, sizeof tc);
    if ((rc = azc_config_get_string(cfg, "jwt", "keys_file", NULL, &tc.keys_file, e)) ||
        (rc = azc_config_get_string(cfg, "jwt", "jwks_file", NULL, &tc.jwks_file, e)) ||
        (rc = azc_config_get_string(cfg, "jwt", "issuer", NULL, &tc.issuer, e)) ||
        (rc = azc_config_get_string(cfg, "jwt", "audience", NULL, &tc.audience, e)) ||
        (rc = azc_config_get_int(cfg, "jwt", "leeway_secs", 30, 0, 3600, &leeway, e)) ||
        (rc = azc_config_get_int(cfg, "jwt", "max_lifetime_secs", AZC_JWT_DEFAULT_MAX_LIFETIME,
                                 60, 366LL * 86400, &lifetime, e)) ||
        (rc = azc_config_get_int(cfg, "jwt", "cache_entries", 4096, 1, 1 << 24, &entries, e)))
        return rc;
    if (tc.keys_file == NULL && tc.jwks_file == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: jwt.keys_file or jwt.jwks_file is required");
    if (tc.issuer == NULL || tc.audience == NULL)
        return azc_err_set(e, AZC_EINVAL,
                           "configuration: jwt.issuer and jwt.audience are required");
    tc.leeway_secs = (long)leeway;
    tc.max_lifetime_secs = lifetime;
    tc.cache_entries = (size_t)entries;
    if ((rc = af_tokens_new(&tc, out, e)) != AZC_OK && rc != AZC_ENOMEM)
        rc = AZC_EINVAL; /* a key set that does not load is a configuration error */
    return rc;
}

static void on_publish(void *arg, int changed);

/* Everything af_open does; with start 0 (af_config_test) it stops before
 * the feed thread, once every setting, key and route has loaded. */
static int open_config(const azc_config *cfg, azc_log *log, int start, authzfilter **out,
                       azc_err *e)
{
    static const char *const unmapped[] = { "deny", "allow", NULL };
    static const char *const deny_after[] = { "arrival", "revision", NULL };
    static const char *const on_stale[] = { "deny", "serve", NULL };
    authzfilter *f;
    const char *region, *url, *token_file;
    long long hb, silence_n, backoff, stream_timeout, snap_max, waiters;
    af_feed_opts fo;
    int v, rc;

    *out = NULL;
    if ((f = calloc(1, sizeof *f)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    f->log = log;
    f->start_ms = azc_wall_ms();
    if (pthread_mutex_init(&f->wlock, NULL) != 0) {
        free(f);
        return azc_err_set(e, AZC_ERROR, "cannot create a mutex");
    }
    if ((rc = azc_config_regions(cfg, &region, &f->regions[0][0], sizeof f->regions[0],
                                 MAX_REGIONS, &f->nregions, e)) != AZC_OK)
        goto fail;
    snprintf(f->region, sizeof f->region, "%s", region);
    if ((rc = azc_config_get_string(cfg, "policy", "url", NULL, &url, e)) ||
        (rc = azc_config_get_string(cfg, "policy", "token_file", NULL, &token_file, e)) ||
        (rc = azc_config_get_int(cfg, "policy", "max_staleness_ms", 30000, 100, 86400000LL,
                                 &f->max_staleness_ms, e)) ||
        (rc = get_choice(cfg, "policy", "on_stale", on_stale, 0, &f->serve_stale, e)) ||
        (rc = azc_config_get_int(cfg, "policy", "backoff_max_ms", 5000, 50, 600000, &backoff,
                                 e)) ||
        (rc = azc_config_get_int(cfg, "policy", "stream_timeout_ms", 45000, 100, 3600000,
                                 &stream_timeout, e)) ||
        (rc = azc_config_get_int(cfg, "policy", "snapshot_max_bytes", 4LL << 30, 1024,
                                 64LL << 30, &snap_max, e)) ||
        (rc = get_choice(cfg, "routes", "unmapped", unmapped, 0, &f->unmapped_allow, e)) ||
        (rc = read_paths(cfg, &f->paths, e)) ||
        (rc = get_choice(cfg, "decision", "deny_after", deny_after, 0, &v, e)) ||
        (rc = azc_config_get_int(cfg, "decision", "clock_tolerance_ms", 0, 0, 60000,
                                 &f->clock_tolerance_ms, e)) ||
        (rc = azc_config_get_int(cfg, "decision", "heartbeat_ms", 200, 10, 60000, &hb, e)) ||
        (rc = azc_config_get_int(cfg, "decision", "silence_heartbeats", 5, 1, 1000, &silence_n,
                                 e)) ||
        (rc = azc_config_get_int(cfg, "decision", "revision_ahead_ms", 1000, 0, 3600000,
                                 &f->revision_ahead_ms, e)) ||
        (rc = azc_config_get_int(cfg, "decision", "retry_after_ms", 1000, 1, 3600000,
                                 &f->retry_after_ms, e)) ||
        (rc = azc_config_get_int(cfg, "decision", "retry_budget_ms", 2000, 0, 600000,
                                 &f->retry_budget_ms, e)) ||
        (rc = azc_config_get_int(cfg, "decision", "max_waiters", 10000, 0, 1000000, &waiters,
                                 e)))
        goto fail;
    f->deny_after_arrival = v == 0;
    f->silence_ms = hb * silence_n;
    f->max_waiters = (size_t)waiters;
    if (url == NULL) {
        rc = azc_err_set(e, AZC_EINVAL, "configuration: policy.url is required");
        goto fail;
    }
    if ((rc = azc_config_get_string(cfg, "routes", "file", NULL, &region, e)) != AZC_OK)
        goto fail;
    if (region == NULL) {
        rc = azc_err_set(e, AZC_EINVAL, "configuration: routes.file is required");
        goto fail;
    }
    if ((f->routes_file = strdup(region)) == NULL) {
        rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = af_routes_load_file(f->routes_file, &f->routes, e)) != AZC_OK) {
        rc = rc == AZC_ENOMEM ? rc : AZC_EINVAL;
        goto fail;
    }
    if ((rc = read_tokens(cfg, &f->tokens, e)) != AZC_OK)
        goto fail;
    if ((f->ix = af_index_new(f->region)) == NULL) {
        rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
        goto fail;
    }
    if (!start) {
        azc_base_url u;
        FILE *fp;

        if ((rc = azc_base_url_parse(url, "policy.url", &u, e)) != AZC_OK)
            goto fail;
        if (token_file != NULL && (fp = fopen(token_file, "r")) == NULL) {
            rc = azc_err_set(e, AZC_EINVAL, "cannot read policy.token_file %s: %s", token_file,
                             strerror(errno));
            goto fail;
        } else if (token_file != NULL) {
            fclose(fp);
        }
        af_close(f);
        return AZC_OK;
    }
    memset(&fo, 0, sizeof fo);
    fo.url = url;
    fo.token_file = token_file;
    fo.backoff_max_ms = backoff;
    fo.stream_timeout_ms = stream_timeout;
    fo.snapshot_max_bytes = snap_max;
    fo.ix = f->ix;
    fo.log = f->log;
    fo.on_publish = on_publish;
    fo.arg = f;
    if ((f->feed = af_feed_new(&fo, e)) == NULL) {
        rc = e != NULL && e->code != AZC_OK ? e->code : AZC_ERROR;
        goto fail;
    }
    *out = f;
    return AZC_OK;
fail:
    af_close(f);
    return rc;
}

int af__open_config(const azc_config *cfg, azc_log *log, authzfilter **out, azc_err *e)
{
    return open_config(cfg, log, 1, out, e);
}

static int open_file(const char *config_file, int start, authzfilter **out, char *err,
                     size_t errlen)
{
    azc_config *cfg = NULL;
    azc_config_key known[sizeof keys / sizeof keys[0] + 1];
    azc_log *log = NULL;
    azc_log_level lvl = AZC_LOG_INFO;
    const char *level;
    azc_err e;
    int rc;

    azc_err_clear(&e);
    *out = NULL;
    memcpy(known, keys, sizeof keys);
    known[sizeof keys / sizeof keys[0]] = (azc_config_key){ "log", "level" };
    if ((rc = azc_config_load(&cfg, config_file, environ, &e)) != AZC_OK ||
        (rc = azc_config_check(cfg, known, sizeof known / sizeof known[0], &e)) != AZC_OK ||
        (rc = azc_config_get_string(cfg, "log", "level", "info", &level, &e)) != AZC_OK ||
        (rc = azc_log_level_parse(level, &lvl, &e)) != AZC_OK)
        goto out;
    if ((log = azc_log_new("authzfilter", lvl, stderr)) == NULL) {
        rc = azc_err_set(&e, AZC_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = open_config(cfg, log, start, out, &e)) == AZC_OK && start) {
        (*out)->own_log = log;
        log = NULL;
    }
out:
    azc_log_free(log);
    azc_config_free(cfg);
    if (rc != AZC_OK && err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", e.msg);
    return rc == AZC_OK ? 0 : -1;
}

int af_open(const char *config_file, authzfilter **out, char *err, size_t errlen)
{
    return open_file(config_file, 1, out, err, errlen);
}

int af_config_test(const char *config_file, char *err, size_t errlen)
{
    authzfilter *unused = NULL;

    return open_file(config_file, 0, &unused, err, errlen);
}

void af_close(authzfilter *f)
{
    af_waiter *w, *next;

    if (f == NULL)
        return;
    af_feed_free(f->feed);    /* first: no publication runs after this */
    for (w = f->waiters; w != NULL; w = next) {
        next = w->next;
        free(w);
    }
    af_index_free(f->ix);
    af_tokens_free(f->tokens);
    af_routes_free(f->routes);
    free(f->routes_file);
    pthread_mutex_destroy(&f->wlock);
    azc_log_free(f->own_log);
    free(f);
}

int af_ready(authzfilter *f)
{
    return af_index_cursor(f->ix) >= 0;
}

int af_reload(authzfilter *f, char *err, size_t errlen)
{
    af_routes *fresh, *old;
    azc_err e;
    int rc = 0;

    if (af_tokens_reload(f->tokens, 0, &e) != AZC_OK) {
        azc_logf(f->log, AZC_LOG_ERROR, "keys not reloaded, the old ones stay: %s", e.msg);
        if (err != NULL)
            snprintf(err, errlen, "%s", e.msg);
        rc = -1;
    }
    if (af_routes_load_file(f->routes_file, &fresh, &e) != AZC_OK) {
        azc_logf(f->log, AZC_LOG_ERROR, "routes not reloaded, the old ones stay: %s", e.msg);
        if (err != NULL)
            snprintf(err, errlen, "%s", e.msg);
        return -1;
    }
    old = rcu_xchg_pointer(&f->routes, fresh);
    synchronize_rcu(); /* no check still matches against the old table */
    af_routes_free(old);
    azc_logf(f->log, AZC_LOG_INFO, "routes reloaded: %zu routes", af_routes_count(fresh));
    return rc;
}

/* ---- the decision ----------------------------------------------------- */

static void set_text(char *dst, size_t n, const char *src)
{
    size_t len = strlen(src);

    if (len >= n)
        len = n - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void finish(af_decision *d, enum af_outcome o, const char *reason)
{
    d->outcome = o;
    d->reason = reason;
}

static const af_origin_mark *mark_of(const af_result *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->n_origins; i++)
        if (strcmp(r->marks[i].name, name) == 0)
            return &r->marks[i];
    return NULL;
}

static int stale(const authzfilter *f, const af_origin_mark *m, uint64_t now)
{
    uint64_t applied_ms = m != NULL ? AZC_HLC_MS(m->applied) : 0;

    if (m == NULL || m->applied == 0)
        return now - f->start_ms > (uint64_t)f->max_staleness_ms;
    return now > applied_ms && now - applied_ms > (uint64_t)f->max_staleness_ms;
}

/* An allow depends on the origins of the rows that granted it. */
static void decide_allow(const authzfilter *f, const af_result *r, uint64_t now, af_decision *d)
{
    const af_origin_mark *m = r->origin >= 0 ? &r->marks[r->origin] : NULL;
    const af_origin_mark *via = r->via_origin >= 0 ? &r->marks[r->via_origin] : NULL;

    if (m != NULL)
        set_text(d->origin, sizeof d->origin, m->name);
    if (!f->serve_stale && ((m != NULL && stale(f, m, now)) || (via != NULL && stale(f, via, now)))) {
        const af_origin_mark *s = m != NULL && stale(f, m, now) ? m : via;

        set_text(d->origin, sizeof d->origin, s->name);
        snprintf(d->message, sizeof d->message, "the data of origin %s is older than %lld ms",
                 s->name, f->max_staleness_ms);
        d->retry_after_ms = (int)f->retry_after_ms;
        finish(d, AF_UNAVAILABLE, "stale_policy");
        return;
    }
    finish(d, AF_ALLOW, "allowed");
}

static void transient(const authzfilter *f, af_decision *d, const char *reason, size_t origin,
                      int wait_origin, uint64_t wait_hlc)
{
    set_text(d->origin, sizeof d->origin, f->regions[origin]);
    d->wait_origin = wait_origin;
    d->wait_hlc = wait_hlc;
    d->retry_after_ms = (int)f->retry_after_ms;
    finish(d, AF_DENY_TRANSIENT, reason);
}

/* A deny depends on every origin: any of them may have granted it. */
static void decide_deny(const authzfilter *f, const af_result *r, const azc_revision *rev,
                        uint64_t now, uint64_t arrival, af_decision *d)
{
    const af_origin_mark *m;
    uint64_t floor_ms = arrival > (uint64_t)f->clock_tolerance_ms
                            ? arrival - (uint64_t)f->clock_tolerance_ms : 0;
    size_t i;

    for (i = 0; i < f->nregions; i++) {
        m = mark_of(r, f->regions[i]);
        if (!f->serve_stale && stale(f, m, now)) {
            set_text(d->origin, sizeof d->origin, f->regions[i]);
            snprintf(d->message, sizeof d->message,
                     "the data of origin %s is older than %lld ms", f->regions[i],
                     f->max_staleness_ms);
            d->retry_after_ms = (int)f->retry_after_ms;
            finish(d, AF_UNAVAILABLE, "stale_policy");
            return;
        }
    }
    if (rev != NULL) {
        for (i = 0; i < f->nregions && strcmp(f->regions[i], rev->origin) != 0; i++)
            ;
        m = mark_of(r, rev->origin);
        if (m == NULL || m->applied < rev->hlc) {
            uint64_t known_ms = m != NULL ? AZC_HLC_MS(m->known) : 0;
            uint64_t bound = (known_ms > now ? known_ms : now) + (uint64_t)f->revision_ahead_ms;

            /* A revision no origin could have issued yet (forged, or
             * from another deployment) would keep the answer transient
             * forever: it is ignored, and the deny judged without it. */
            if (AZC_HLC_MS(rev->hlc) <= bound) {
                snprintf(d->message, sizeof d->message,
                         "revision of origin %s not applied in this region yet", rev->origin);
                transient(f, d, "revision_pending", i, (int)i, rev->hlc);
                return;
            }
        }
    }
    for (i = 0; i < f->nregions; i++) {
        m = mark_of(r, f->regions[i]);
        if (m != NULL && m->known > m->applied) {
            snprintf(d->message, sizeof d->message, "origin %s lags by %llu ms", f->regions[i],
                     (unsigned long long)(AZC_HLC_MS(m->known) - AZC_HLC_MS(m->applied)));
            transient(f, d, "origin_lagging", i, (int)i, m->known);
            return;
        }
    }
    for (i = 0; i < f->nregions; i++) {
        m = mark_of(r, f->regions[i]);
        if (m == NULL || m->applied == 0 ||
            (now > AZC_HLC_MS(m->applied) &&
             now - AZC_HLC_MS(m->applied) > (uint64_t)f->silence_ms)) {
            snprintf(d->message, sizeof d->message, "origin %s not heard from for over %lld ms",
                     f->regions[i], f->silence_ms);
            transient(f, d, "origin_silent", i, (int)i, m != NULL ? m->applied + 1 : 1);
            return;
        }
    }
    if (f->deny_after_arrival) {
        for (i = 0; i < f->nregions; i++) {
            m = mark_of(r, f->regions[i]);
            if (m == NULL || AZC_HLC_MS(m->applied) < floor_ms) {
                snprintf(d->message, sizeof d->message,
                         "origin %s not applied up to the request's arrival yet",
                         f->regions[i]);
                transient(f, d, "arrival_pending", i, -1, AZC_HLC_MAKE(floor_ms, 0));
                return;
            }
        }
    }
    finish(d, AF_DENY, "no_grant");
}

void af_check(authzfilter *f, const af_request *rq, af_decision *d)
{
    char path[AF_PATH_MAX + 1];
    size_t plen, tlen;
    af_route_match rm;
    af_routes *rt;
    af_token_info ti;
    const char *token;
    azc_revision rev;
    af_query q;
    af_result r;
    azc_err e;
    uint64_t now = azc_wall_ms();
    uint64_t arrival = rq->arrival_ms > 0 ? (uint64_t)rq->arrival_ms : now;
    int matched;

    d->reason = "";
    d->unauthenticated = 0;
    d->subject[0] = d->origin[0] = d->action[0] = d->resource[0] = d->message[0] = '\0';
    d->retry_after_ms = 0;
    d->generation = 0;
    d->wait_hlc = 0;
    d->wait_origin = -1;
    if (rq->method == NULL || rq->path == NULL ||
        af_path_normalize(rq->path, rq->path_len > 0 ? rq->path_len : strlen(rq->path),
                          &f->paths, path, sizeof path, &plen, &e) != AZC_OK) {
        set_text(d->message, sizeof d->message, rq->path == NULL ? "no path" : e.msg);
        finish(d, AF_DENY, "bad_path");
        return;
    }
    rcu_read_lock();
    rt = rcu_dereference(f->routes);
    matched = af_routes_match(rt, rq->method, path, plen, &rm);
    rcu_read_unlock();
    if (matched != 1) {
        if (matched == 0 && f->unmapped_allow) {
            finish(d, AF_ALLOW, "no_route");
            return;
        }
        /* 0: nothing maps it; an error: the path's parameters do not
         * make a valid resource (a '*' in an id must never become a
         * wildcard), so no policy could be meant for it. */
        set_text(d->message, sizeof d->message,
                 matched == 0 ? "no route for this method and path"
                              : "the path does not name a valid resource");
        finish(d, AF_DENY, matched == 0 ? "no_route" : "bad_path");
        return;
    }
    set_text(d->action, sizeof d->action, rm.action);
    set_text(d->resource, sizeof d->resource, rm.resource);
    if (!azc_jwt_bearer(rq->authorization, &token)) {
        d->unauthenticated = 1;
        set_text(d->message, sizeof d->message, "no bearer token");
        finish(d, AF_DENY, "no_token");
        return;
    }
    tlen = strlen(token);
    if (af_tokens_verify(f->tokens, token, tlen, 0, &ti, &e) != AZC_OK) {
        d->unauthenticated = 1;
        set_text(d->message, sizeof d->message, e.msg);
        finish(d, AF_DENY, "bad_token");
        return;
    }
    set_text(d->subject, sizeof d->subject, ti.subject);
    if (rq->revision_count > 1 ||
        (rq->revision != NULL && azc_revision_decode(rq->revision, &rev, &e) != AZC_OK)) {
        set_text(d->message, sizeof d->message,
                 rq->revision_count > 1 ? "more than one Authz-Revision" : e.msg);
        finish(d, AF_DENY, "bad_revision");
        return;
    }
    if (rq->revision != NULL) {
        size_t i;

        for (i = 0; i < f->nregions && strcmp(f->regions[i], rev.origin) != 0; i++)
            ;
        if (i == f->nregions) {
            snprintf(d->message, sizeof d->message, "revision names unknown origin %s",
                     rev.origin);
            finish(d, AF_DENY, "bad_revision");
            return;
        }
    }
    q.subject = d->subject;
    q.action = d->action;
    q.resource = d->resource;
    af_index_check(f->ix, &q, &r);
    if (!r.loaded) {
        set_text(d->message, sizeof d->message, "no policy loaded yet");
        d->retry_after_ms = (int)f->retry_after_ms;
        finish(d, AF_UNAVAILABLE, "no_policy");
        return;
    }
    d->generation = r.generation;
    if (r.allowed)
        decide_allow(f, &r, now, d);
    else
        decide_deny(f, &r, rq->revision != NULL ? &rev : NULL, now, arrival, d);
}

/* ---- waiters ---------------------------------------------------------- */

static int satisfied(const authzfilter *f, const af_waiter *w, const af_result *r)
{
    const af_origin_mark *m;
    size_t i;

    if (w->origin >= 0) {
        m = mark_of(r, f->regions[w->origin]);
        return m != NULL && m->applied >= w->hlc;
    }
    for (i = 0; i < f->nregions; i++) {
        m = mark_of(r, f->regions[i]);
        if (m == NULL || m->applied < w->hlc)
            return 0;
    }
    return 1;
}

static void unlink_waiter(authzfilter *f, af_waiter *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        f->waiters = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    f->nwaiters--;
}

/* Wakes (calls and forgets) what `r` satisfies, or every waiter. */
static void wake(authzfilter *f, const af_result *r, int all)
{
    af_waiter *w, *next;

    for (w = f->waiters; w != NULL; w = next) {
        next = w->next;
        if (all || satisfied(f, w, r)) {
            unlink_waiter(f, w);
            w->cb(w->arg);
            free(w);
        }
    }
}

static void current(authzfilter *f, af_result *r)
{
    af_query q = { "", "", "" };

    af_index_check(f->ix, &q, r);
}

static void on_publish(void *arg, int changed)
{
    authzfilter *f = arg;
    af_result r;

    current(f, &r);
    pthread_mutex_lock(&f->wlock);
    wake(f, &r, changed);
    pthread_mutex_unlock(&f->wlock);
}

int af_wait(authzfilter *f, const af_decision *d, void (*cb)(void *arg), void *arg,
            af_waiter **handle)
{
    af_waiter *w;
    af_result r;

    *handle = NULL;
    if (d->outcome != AF_DENY_TRANSIENT || cb == NULL)
        return -1;
    pthread_mutex_lock(&f->wlock);
    if (f->nwaiters >= f->max_waiters || (w = calloc(1, sizeof *w)) == NULL) {
        pthread_mutex_unlock(&f->wlock);
        return -1;
    }
    w->cb = cb;
    w->arg = arg;
    w->origin = d->wait_origin;
    w->hlc = d->wait_hlc;
    w->next = f->waiters;
    if (f->waiters != NULL)
        f->waiters->prev = w;
    f->waiters = w;
    f->nwaiters++;
    *handle = w;
    /* A publication between the decision and this registration would
     * otherwise be missed: wake at once when the index moved on. */
    current(f, &r);
    if (r.generation != d->generation) {
        unlink_waiter(f, w);
        w->cb(w->arg);
        free(w);
    }
    pthread_mutex_unlock(&f->wlock);
    return 0;
}

int af_wait_cancel(authzfilter *f, af_waiter *handle)
{
    af_waiter *w;
    int found = 0;

    pthread_mutex_lock(&f->wlock);
    for (w = f->waiters; w != NULL; w = w->next)
        if (w == handle) {
            unlink_waiter(f, w);
            free(w);
            found = 1;
            break;
        }
    pthread_mutex_unlock(&f->wlock);
    return found;
}

/* ---- stats ------------------------------------------------------------ */

void af_get_stats(authzfilter *f, af_stats *st)
{
    af_index_stats is;
    af_feed_stats fs;
    af_result r;
    uint64_t now = azc_wall_ms();
    size_t i;

    memset(st, 0, sizeof *st);
    af_index_get_stats(f->ix, &is);
    af_feed_get_stats(f->feed, &fs);
    current(f, &r);
    st->loaded = r.loaded;
    st->generation = is.generation;
    st->cursor = is.cursor;
    st->users = is.users;
    st->teams = is.teams;
    st->memberships = is.memberships;
    st->assignments = is.assignments;
    st->index_bytes = is.bytes;
    rcu_read_lock();
    st->routes = af_routes_count(rcu_dereference(f->routes));
    rcu_read_unlock();
    pthread_mutex_lock(&f->wlock);
    st->waiters = f->nwaiters;
    pthread_mutex_unlock(&f->wlock);
    st->snapshots_loaded = fs.snapshots;
    st->feed_errors = fs.errors;
    st->feed_connected = fs.connected;
    st->last_update_age_ms = fs.last_line_ms > 0 ? (int64_t)now - fs.last_line_ms : -1;
    for (i = 0; i < f->nregions && i < AF_STATS_MAX_ORIGINS; i++) {
        const af_origin_mark *m = r.loaded ? mark_of(&r, f->regions[i]) : NULL;
        af_origin_stat *o = &st->origins[i];

        set_text(o->name, sizeof o->name, f->regions[i]);
        if (m != NULL) {
            o->applied_hlc = m->applied;
            o->known_hlc = m->known;
            o->lag_ms = m->known > m->applied
                            ? (int64_t)(AZC_HLC_MS(m->known) - AZC_HLC_MS(m->applied)) : 0;
        }
        o->staleness_ms = m != NULL && m->applied > 0
                              ? (int64_t)now - (int64_t)AZC_HLC_MS(m->applied)
                              : (int64_t)(now - f->start_ms);
    }
    st->n_origins = i;
}
