/*
 * ngx_http_authz_filter_module: the gateway filter inside nginx
 * (docs/gateway.md). Every request of a location with `authz_filter on` is
 * decided in the access phase by libauthzfilter, in the worker, without a
 * hop: allowed requests go on to the content phase with $authz_subject
 * set; denied ones are answered here exactly as authz-filterd's gateway
 * answers them (401 with WWW-Authenticate, 403 with Authz-Decision final
 * or transient and Retry-After, 503 when the policy is stale or missing).
 *
 * Each worker follows the policy itself: init_process opens one filter
 * per distinct authz_filter_config file (the library's own thread loads
 * the snapshot and follows the change feed), so the index is private to
 * the worker and checks never lock. A transient deny is held without
 * blocking the worker: the request is suspended (NGX_AGAIN) with a timer
 * for its retry budget, and the library's thread hands the wake-up over
 * through an eventfd in the worker's event loop, where the request is
 * decided again with its original arrival time.
 *
 * The configuration file is checked when nginx reads its configuration
 * (nginx -t, reload), so a bad file stops nginx instead of letting traffic
 * through; on a reload the new workers wait (bounded) for their policy
 * before they accept, while the old ones finish what they hold.
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>

#include <jansson.h>

#include "gateway-filter/authzfilter.h"

/* A filter as configured: one per distinct file; opened per worker. */
typedef struct {
    ngx_str_t file;           /* NUL-terminated */
    authzfilter *f;           /* in a worker only */
    long long budget_ms;      /* the file's decision.retry_budget_ms */
} ngx_http_authz_filter_t;

typedef struct ngx_http_authz_wait_s ngx_http_authz_wait_t;

typedef struct {
    ngx_array_t filters;              /* ngx_http_authz_filter_t */
    ngx_msec_t ready_timeout;         /* a worker waits this long for its policy */
    /* The worker's wake-up channel from the libraries' threads. */
    ngx_connection_t *wake_conn;
    pthread_mutex_t lock;
    ngx_http_authz_wait_t *woken;     /* under lock */
    unsigned lock_ready:1;
} ngx_http_authz_main_conf_t;

typedef struct {
    ngx_flag_t enable;
    ngx_int_t filter;                 /* index in the main conf, -1 none */
    ngx_msec_t budget;                /* NGX_CONF_UNSET_MSEC: the file's */
    u_char *conf_file;                /* where authz_filter on was set, for errors */
    ngx_uint_t conf_line;
} ngx_http_authz_loc_conf_t;

/*
 * One registration with af_wait. Allocated outside the request's pool:
 * once the library may call back, the record lives until the worker has
 * taken it back from the woken list, even if the request is gone.
 */
struct ngx_http_authz_wait_s {
    ngx_http_request_t *r;            /* NULL once the request has gone */
    af_waiter *waiter;
    ngx_http_authz_main_conf_t *mcf;
    ngx_http_authz_wait_t *next;      /* in the woken list */
};

typedef struct {
    af_request rq;                    /* strings copied into r->pool */
    af_decision d;
    authzfilter *f;
    ngx_msec_t budget;
    ngx_http_authz_wait_t *wait;      /* registered, not woken yet */
    ngx_event_t budget_ev;
    unsigned decided:1;
    unsigned holding:1;
    unsigned budget_spent:1;
} ngx_http_authz_ctx_t;

static ngx_int_t ngx_http_authz_preconf(ngx_conf_t *cf);
static ngx_int_t ngx_http_authz_postconf(ngx_conf_t *cf);
static void *ngx_http_authz_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_authz_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_authz_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
static char *ngx_http_authz_filter_flag(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_authz_filter_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_authz_filter_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_authz_init_process(ngx_cycle_t *cycle);
static void ngx_http_authz_exit_process(ngx_cycle_t *cycle);

static ngx_command_t ngx_http_authz_filter_commands[] = {
    { ngx_string("authz_filter"),
      NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG,
      ngx_http_authz_filter_flag, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL },
    { ngx_string("authz_filter_config"),
      NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
      ngx_http_authz_filter_config, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL },
    { ngx_string("authz_filter_retry_budget"),
      NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot, NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_authz_loc_conf_t, budget), NULL },
    { ngx_string("authz_filter_status"),
      NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
      ngx_http_authz_filter_status, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL },
    { ngx_string("authz_filter_ready_timeout"),
      NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot, NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_authz_main_conf_t, ready_timeout), NULL },
    ngx_null_command
};

static ngx_http_module_t ngx_http_authz_filter_module_ctx = {
    ngx_http_authz_preconf,            /* preconfiguration */
    ngx_http_authz_postconf,           /* postconfiguration */
    ngx_http_authz_create_main_conf,   /* create main configuration */
    NULL,                              /* init main configuration */
    NULL,                              /* create server configuration */
    NULL,                              /* merge server configuration */
    ngx_http_authz_create_loc_conf,    /* create location configuration */
    ngx_http_authz_merge_loc_conf      /* merge location configuration */
};

ngx_module_t ngx_http_authz_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_authz_filter_module_ctx,
    ngx_http_authz_filter_commands,
    NGX_HTTP_MODULE,
    NULL,                              /* init master */
    NULL,                              /* init module */
    ngx_http_authz_init_process,       /* init process */
    NULL,                              /* init thread */
    NULL,                              /* exit thread */
    ngx_http_authz_exit_process,       /* exit process */
    NULL,                              /* exit master */
    NGX_MODULE_V1_PADDING
};

/* ---- configuration ------------------------------------------------------- */

static void *ngx_http_authz_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_authz_main_conf_t *mcf = ngx_pcalloc(cf->pool, sizeof *mcf);

    if (mcf == NULL)
        return NULL;
    if (ngx_array_init(&mcf->filters, cf->pool, 2, sizeof(ngx_http_authz_filter_t)) != NGX_OK)
        return NULL;
    mcf->ready_timeout = NGX_CONF_UNSET_MSEC;
    return mcf;
}

static void *ngx_http_authz_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_authz_loc_conf_t *lcf = ngx_pcalloc(cf->pool, sizeof *lcf);

    if (lcf == NULL)
        return NULL;
    lcf->enable = NGX_CONF_UNSET;
    lcf->filter = NGX_CONF_UNSET;
    lcf->budget = NGX_CONF_UNSET_MSEC;
    return lcf;
}

static char *ngx_http_authz_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_authz_loc_conf_t *prev = parent, *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->filter, prev->filter, -1);
    ngx_conf_merge_msec_value(conf->budget, prev->budget, NGX_CONF_UNSET_MSEC);
    if (conf->conf_file == NULL) {
        conf->conf_file = prev->conf_file;
        conf->conf_line = prev->conf_line;
    }
    if (conf->enable && conf->filter < 0) {
        /* Allowing everything because a file is missing would be the
         * silent allow this module exists to prevent. */
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"authz_filter on\" without \"authz_filter_config\" in %s:%ui",
                      conf->conf_file, conf->conf_line);
        return NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}

static char *ngx_http_authz_filter_flag(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_authz_loc_conf_t *lcf = conf;
    char *rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    (void)cmd;
    if (rv != NGX_CONF_OK)
        return rv;
    /* Kept for the merge's message, which has no position of its own. */
    lcf->conf_file = cf->conf_file->file.name.data;
    lcf->conf_line = cf->conf_file->line;
    return NGX_CONF_OK;
}

static char *ngx_http_authz_filter_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_authz_loc_conf_t *lcf = conf;
    ngx_http_authz_main_conf_t *mcf;
    ngx_http_authz_filter_t *flt;
    ngx_str_t *value = cf->args->elts, file;
    ngx_uint_t i;
    char err[512];

    (void)cmd;
    if (lcf->filter != NGX_CONF_UNSET)
        return "is duplicate";
    file = value[1];
    if (file.len == 0)
        return "has an empty file name";
    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK)
        return NGX_CONF_ERROR;
    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_authz_filter_module);
    flt = mcf->filters.elts;
    for (i = 0; i < mcf->filters.nelts; i++) {
        if (flt[i].file.len == file.len && ngx_strncmp(flt[i].file.data, file.data, file.len) == 0) {
            lcf->filter = (ngx_int_t)i;
            return NGX_CONF_OK;
        }
    }
    /* ngx_conf_full_name leaves the name NUL-terminated. */
    if (af_config_test((const char *)file.data, err, sizeof err) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "authz_filter_config \"%V\": %s", &file, err);
        return NGX_CONF_ERROR;
    }
    if ((flt = ngx_array_push(&mcf->filters)) == NULL)
        return NGX_CONF_ERROR;
    ngx_memzero(flt, sizeof *flt);
    flt->file = file;
    lcf->filter = (ngx_int_t)(mcf->filters.nelts - 1);
    return NGX_CONF_OK;
}

/* ---- answers ------------------------------------------------------------- */

static ngx_int_t ngx_http_authz_header(ngx_http_request_t *r, const char *name,
                                       const char *value)
{
    ngx_table_elt_t *h;
    size_t n = ngx_strlen(value);

    if ((h = ngx_list_push(&r->headers_out.headers)) == NULL)
        return NGX_ERROR;
    h->hash = 1;
    h->key.data = (u_char *)name;
    h->key.len = ngx_strlen(name);
    if ((h->value.data = ngx_pnalloc(r->pool, n)) == NULL)
        return NGX_ERROR;
    ngx_memcpy(h->value.data, value, n);
    h->value.len = n;
    return NGX_OK;
}

static const char *ngx_http_authz_decision_name(const af_decision *d)
{
    switch (d->outcome) {
    case AF_ALLOW:
        return "allow";
    case AF_DENY_TRANSIENT:
        return "transient";
    case AF_UNAVAILABLE:
        return "unavailable";
    default:
        return "final";
    }
}

/*
 * Answers a deny, with the body and headers of the auth_request gateway
 * (docs/examples/nginx-gateway.conf), and finalises the request. The
 * reason strings are the library's own (letters and underscores), so they
 * go into the JSON body as they are.
 */
static void ngx_http_authz_deny(ngx_http_request_t *r, const af_decision *d)
{
    ngx_str_t type = ngx_string("application/json");
    ngx_http_complex_value_t cv;
    ngx_uint_t status;
    ngx_int_t rc;
    const char *decision = ngx_http_authz_decision_name(d);
    char retry[24];
    u_char *body, *end;
    size_t cap = 160 + ngx_strlen(d->reason);

    if ((rc = ngx_http_discard_request_body(r)) != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return;
    }
    if ((body = ngx_pnalloc(r->pool, cap)) == NULL)
        goto fail;
    if (d->unauthenticated) {
        status = NGX_HTTP_UNAUTHORIZED;
        end = ngx_snprintf(body, cap, "{\"error\":{\"code\":\"unauthorized\",\"reason\":\"%s\"}}\n",
                           d->reason);
        if (ngx_http_authz_header(r, "WWW-Authenticate",
                                  ngx_strcmp(d->reason, "no_token") == 0
                                      ? "Bearer realm=\"authz\""
                                      : "Bearer realm=\"authz\", error=\"invalid_token\"") != NGX_OK)
            goto fail;
    } else if (d->outcome == AF_UNAVAILABLE) {
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        end = ngx_snprintf(body, cap, "{\"error\":{\"code\":\"unavailable\",\"reason\":\"%s\"}}\n",
                           d->reason);
    } else {
        status = NGX_HTTP_FORBIDDEN;
        end = ngx_snprintf(body, cap,
                           "{\"error\":{\"code\":\"forbidden\",\"decision\":\"%s\",\"reason\":\"%s\"}}\n",
                           decision, d->reason);
    }
    if (ngx_http_authz_header(r, "Authz-Decision", decision) != NGX_OK ||
        ngx_http_authz_header(r, "Authz-Reason", d->reason) != NGX_OK ||
        (d->origin[0] != '\0' && ngx_http_authz_header(r, "Authz-Origin", d->origin) != NGX_OK))
        goto fail;
    if (d->outcome == AF_DENY_TRANSIENT || d->outcome == AF_UNAVAILABLE) {
        ngx_snprintf((u_char *)retry, sizeof retry, "%d%Z",
                     d->retry_after_ms > 0 ? (d->retry_after_ms + 999) / 1000 : 1);
        if (ngx_http_authz_header(r, "Retry-After", retry) != NGX_OK)
            goto fail;
    }
    ngx_memzero(&cv, sizeof cv);
    cv.value.data = body;
    cv.value.len = (size_t)(end - body);
    ngx_http_finalize_request(r, ngx_http_send_response(r, status, &type, &cv));
    return;
fail:
    ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
}

/* ---- held transient denies ---------------------------------------------- */

/* The library's thread: queue the record for the worker and wake it. */
static void ngx_http_authz_on_wake(void *arg)
{
    ngx_http_authz_wait_t *w = arg;
    ngx_http_authz_main_conf_t *mcf = w->mcf;
    uint64_t one = 1;
    int first;

    pthread_mutex_lock(&mcf->lock);
    first = mcf->woken == NULL;
    w->next = mcf->woken;
    mcf->woken = w;
    pthread_mutex_unlock(&mcf->lock);
    /* EAGAIN only when the counter is full, i.e. already readable. */
    if (first && write(mcf->wake_conn->fd, &one, sizeof one) < 0) {
        /* nothing to do: the worker is woken either way */
    }
}

/* Cancels what a request still has registered. The record is freed here
 * when the cancel wins; when the library's callback already runs, the
 * record reaches the woken list marked as gone and is freed there. */
static void ngx_http_authz_drop_wait(ngx_http_authz_ctx_t *ctx)
{
    ngx_http_authz_wait_t *w = ctx->wait;

    if (w == NULL)
        return;
    ctx->wait = NULL;
    if (af_wait_cancel(ctx->f, w->waiter))
        ngx_free(w);
    else
        w->r = NULL;
}

static void ngx_http_authz_cleanup(void *data)
{
    ngx_http_authz_ctx_t *ctx = data;

    ngx_http_authz_drop_wait(ctx);
    if (ctx->budget_ev.timer_set)
        ngx_del_timer(&ctx->budget_ev);
}

static void ngx_http_authz_resume(ngx_http_request_t *r)
{
    ngx_connection_t *c = r->connection;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        ngx_http_run_posted_requests(c);
        return;
    }
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}

static void ngx_http_authz_budget_spent(ngx_event_t *ev)
{
    ngx_http_request_t *r = ev->data;
    ngx_http_authz_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_authz_filter_module);

    ngx_http_authz_drop_wait(ctx);
    ctx->budget_spent = 1;
    ngx_http_authz_resume(r);
}

/* The worker's side of the eventfd: resume every woken request. */
static void ngx_http_authz_woken(ngx_event_t *ev)
{
    ngx_connection_t *c = ev->data;
    ngx_http_authz_main_conf_t *mcf = c->data;
    ngx_http_authz_wait_t *w, *next;
    ngx_http_authz_ctx_t *ctx;
    uint64_t n;

    while (read(c->fd, &n, sizeof n) > 0) {
    }
    pthread_mutex_lock(&mcf->lock);
    w = mcf->woken;
    mcf->woken = NULL;
    pthread_mutex_unlock(&mcf->lock);
    for (; w != NULL; w = next) {
        ngx_http_request_t *r = w->r;

        next = w->next;
        ngx_free(w);
        if (r == NULL)
            continue;
        ctx = ngx_http_get_module_ctx(r, ngx_http_authz_filter_module);
        ctx->wait = NULL;
        ngx_http_authz_resume(r);
    }
}

/* Registers a wait for the transient deny in ctx->d: NGX_AGAIN when
 * held, NGX_DECLINED when it must be answered now (waiters' cap). */
static ngx_int_t ngx_http_authz_hold(ngx_http_request_t *r, ngx_http_authz_ctx_t *ctx)
{
    ngx_http_authz_main_conf_t *mcf =
        ngx_http_get_module_main_conf(r, ngx_http_authz_filter_module);
    ngx_http_authz_wait_t *w = ngx_alloc(sizeof *w, r->connection->log);

    if (w == NULL)
        return NGX_DECLINED;
    w->r = r;
    w->mcf = mcf;
    w->next = NULL;
    ctx->wait = w;
    if (af_wait(ctx->f, &ctx->d, ngx_http_authz_on_wake, w, &w->waiter) != 0) {
        ctx->wait = NULL;
        ngx_free(w);
        return NGX_DECLINED;
    }
    if (!ctx->budget_ev.timer_set)
        ngx_add_timer(&ctx->budget_ev, ctx->budget);
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    ctx->holding = 1;
    return NGX_AGAIN;
}

/* ---- the access phase ----------------------------------------------------- */

static char *ngx_http_authz_cstr(ngx_pool_t *pool, const u_char *s, size_t n)
{
    char *d = ngx_pnalloc(pool, n + 1);

    if (d != NULL) {
        ngx_memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* The request as the library takes it, its strings copied into the pool
 * (nginx's are not NUL-terminated). */
static ngx_int_t ngx_http_authz_request(ngx_http_request_t *r, af_request *rq)
{
    ngx_list_part_t *part;
    ngx_table_elt_t *h;
    ngx_uint_t i;

    ngx_memzero(rq, sizeof *rq);
    if ((rq->method = ngx_http_authz_cstr(r->pool, r->method_name.data, r->method_name.len)) ==
            NULL ||
        (rq->path = ngx_http_authz_cstr(r->pool, r->unparsed_uri.data, r->unparsed_uri.len)) ==
            NULL)
        return NGX_ERROR;
    rq->path_len = r->unparsed_uri.len;
    /* nginx refuses a second Authorization header itself (400). */
    if (r->headers_in.authorization != NULL &&
        (rq->authorization = ngx_http_authz_cstr(r->pool, r->headers_in.authorization->value.data,
                                                 r->headers_in.authorization->value.len)) == NULL)
        return NGX_ERROR;
    for (part = &r->headers_in.headers.part; part != NULL; part = part->next) {
        h = part->elts;
        for (i = 0; i < part->nelts; i++) {
            if (h[i].key.len != sizeof "Authz-Revision" - 1 ||
                ngx_strncasecmp(h[i].key.data, (u_char *)"Authz-Revision", h[i].key.len) != 0)
                continue;
            if (rq->revision_count++ == 0 &&
                (rq->revision = ngx_http_authz_cstr(r->pool, h[i].value.data, h[i].value.len)) ==
                    NULL)
                return NGX_ERROR;
        }
    }
    rq->arrival_ms = (int64_t)r->start_sec * 1000 + (int64_t)r->start_msec;
    return NGX_OK;
}

static ngx_int_t ngx_http_authz_handler(ngx_http_request_t *r)
{
    ngx_http_authz_loc_conf_t *lcf = ngx_http_get_module_loc_conf(r, ngx_http_authz_filter_module);
    ngx_http_authz_main_conf_t *mcf;
    ngx_http_authz_filter_t *flt;
    ngx_http_authz_ctx_t *ctx;
    ngx_pool_cleanup_t *cln;

    if (!lcf->enable)
        return NGX_DECLINED;
    ctx = ngx_http_get_module_ctx(r, ngx_http_authz_filter_module);
    if (ctx != NULL && ctx->decided)
        /* Decided already (an internal redirect back into a protected
         * location): the same request is not decided twice. */
        return ctx->d.outcome == AF_ALLOW ? NGX_OK : NGX_HTTP_FORBIDDEN;
    if (ctx == NULL) {
        mcf = ngx_http_get_module_main_conf(r, ngx_http_authz_filter_module);
        flt = mcf->filters.elts;
        if ((ctx = ngx_pcalloc(r->pool, sizeof *ctx)) == NULL ||
            (cln = ngx_pool_cleanup_add(r->pool, 0)) == NULL)
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        ctx->f = flt[lcf->filter].f;
        if (ctx->f == NULL) {
            /* Not opened in this process (it failed at start-up: logged). */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "authz_filter: no filter open");
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }
        ctx->budget = lcf->budget != NGX_CONF_UNSET_MSEC ? lcf->budget
                                                         : (ngx_msec_t)flt[lcf->filter].budget_ms;
        ctx->budget_ev.handler = ngx_http_authz_budget_spent;
        ctx->budget_ev.data = r;
        ctx->budget_ev.log = r->connection->log;
        cln->handler = ngx_http_authz_cleanup;
        cln->data = ctx;
        ngx_http_set_ctx(r, ctx, ngx_http_authz_filter_module);
        if (ngx_http_authz_request(r, &ctx->rq) != NGX_OK)
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->holding = 0;
    af_check(ctx->f, &ctx->rq, &ctx->d);
    if (ctx->d.outcome == AF_DENY_TRANSIENT && !ctx->budget_spent && ctx->budget > 0 &&
        ngx_http_authz_hold(r, ctx) == NGX_AGAIN)
        return NGX_AGAIN;
    if (ctx->budget_ev.timer_set)
        ngx_del_timer(&ctx->budget_ev);
    ctx->decided = 1;
    if (ctx->d.outcome == AF_ALLOW)
        return NGX_OK;
    ngx_http_authz_deny(r, &ctx->d);
    return NGX_DONE;
}

/* ---- status ---------------------------------------------------------------- */

/*
 * authz_filter_status: this worker's view of each filter as JSON (the
 * worker that happens to take the request: each follows the policy on its
 * own), what authz-filterd's /metrics shows for its one filter.
 */
static json_t *ngx_http_authz_stats_json(ngx_http_authz_filter_t *flt)
{
    af_stats st;
    json_t *o, *origins;
    size_t i;

    af_get_stats(flt->f, &st);
    if ((origins = json_object()) == NULL)
        return NULL;
    for (i = 0; i < st.n_origins; i++) {
        const af_origin_stat *os = &st.origins[i];

        if (json_object_set_new(origins, os->name,
                                json_pack("{s:I, s:I, s:I, s:I}", "applied_hlc",
                                          (json_int_t)os->applied_hlc, "known_hlc",
                                          (json_int_t)os->known_hlc, "lag_ms",
                                          (json_int_t)os->lag_ms, "staleness_ms",
                                          (json_int_t)os->staleness_ms)) != 0) {
            json_decref(origins);
            return NULL;
        }
    }
    o = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:o}",
                  "config", (const char *)flt->file.data, "loaded", st.loaded, "generation",
                  (json_int_t)st.generation, "cursor", (json_int_t)st.cursor, "users",
                  (json_int_t)st.users, "teams", (json_int_t)st.teams, "memberships",
                  (json_int_t)st.memberships, "assignments", (json_int_t)st.assignments,
                  "index_bytes", (json_int_t)st.index_bytes, "routes", (json_int_t)st.routes,
                  "waiters", (json_int_t)st.waiters, "feed_errors",
                  (json_int_t)st.feed_errors, "feed_connected", st.feed_connected,
                  "last_update_age_ms", (json_int_t)st.last_update_age_ms, "origins",
                  origins);
    return o;
}

static ngx_int_t ngx_http_authz_status_handler(ngx_http_request_t *r)
{
    ngx_http_authz_main_conf_t *mcf =
        ngx_http_get_module_main_conf(r, ngx_http_authz_filter_module);
    ngx_http_authz_filter_t *flt = mcf->filters.elts;
    ngx_str_t type = ngx_string("application/json");
    ngx_http_complex_value_t cv;
    json_t *doc, *list, *one;
    char *text;
    ngx_uint_t i;
    ngx_int_t rc;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD)))
        return NGX_HTTP_NOT_ALLOWED;
    if ((rc = ngx_http_discard_request_body(r)) != NGX_OK)
        return rc;
    if ((list = json_array()) == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    for (i = 0; i < mcf->filters.nelts; i++) {
        if (flt[i].f == NULL)
            continue;
        if ((one = ngx_http_authz_stats_json(&flt[i])) == NULL ||
            json_array_append_new(list, one) != 0) {
            json_decref(list);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    if ((doc = json_pack("{s:I, s:o}", "pid", (json_int_t)ngx_pid, "filters", list)) == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text == NULL)
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    ngx_memzero(&cv, sizeof cv);
    cv.value.len = ngx_strlen(text) + 1;
    if ((cv.value.data = ngx_pnalloc(r->pool, cv.value.len)) == NULL) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_memcpy(cv.value.data, text, cv.value.len - 1);
    cv.value.data[cv.value.len - 1] = '\n';
    free(text);
    return ngx_http_send_response(r, NGX_HTTP_OK, &type, &cv);
}

static char *ngx_http_authz_filter_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t *clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    (void)cmd;
    (void)conf;
    clcf->handler = ngx_http_authz_status_handler;
    return NGX_CONF_OK;
}

/* ---- variables ------------------------------------------------------------ */

enum { AUTHZ_VAR_SUBJECT, AUTHZ_VAR_DECISION, AUTHZ_VAR_REASON, AUTHZ_VAR_ORIGIN };

static ngx_int_t ngx_http_authz_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
                                         uintptr_t which)
{
    ngx_http_authz_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_authz_filter_module);
    const char *s;

    if (ctx == NULL || !ctx->decided) {
        v->not_found = 1;
        return NGX_OK;
    }
    switch (which) {
    case AUTHZ_VAR_SUBJECT:
        s = ctx->d.outcome == AF_ALLOW ? ctx->d.subject : "";
        break;
    case AUTHZ_VAR_DECISION:
        s = ngx_http_authz_decision_name(&ctx->d);
        break;
    case AUTHZ_VAR_REASON:
        s = ctx->d.reason;
        break;
    default:
        s = ctx->d.origin;
        break;
    }
    v->data = (u_char *)s;
    v->len = ngx_strlen(s);
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    return NGX_OK;
}

static ngx_int_t ngx_http_authz_preconf(ngx_conf_t *cf)
{
    static const struct {
        ngx_str_t name;
        uintptr_t which;
    } vars[] = {
        { ngx_string("authz_subject"), AUTHZ_VAR_SUBJECT },
        { ngx_string("authz_decision"), AUTHZ_VAR_DECISION },
        { ngx_string("authz_reason"), AUTHZ_VAR_REASON },
        { ngx_string("authz_origin"), AUTHZ_VAR_ORIGIN },
    };
    ngx_http_variable_t *var;
    ngx_uint_t i;

    for (i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        ngx_str_t name = vars[i].name;

        if ((var = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE)) == NULL)
            return NGX_ERROR;
        var->get_handler = ngx_http_authz_variable;
        var->data = vars[i].which;
    }
    return NGX_OK;
}

static ngx_int_t ngx_http_authz_postconf(ngx_conf_t *cf)
{
    ngx_http_core_main_conf_t *cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    ngx_http_handler_pt *h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);

    if (h == NULL)
        return NGX_ERROR;
    *h = ngx_http_authz_handler;
    return NGX_OK;
}

/* ---- worker processes ----------------------------------------------------- */

static ngx_int_t ngx_http_authz_open_wake(ngx_cycle_t *cycle, ngx_http_authz_main_conf_t *mcf)
{
    ngx_connection_t *c;
    int fd;

    if (pthread_mutex_init(&mcf->lock, NULL) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "authz_filter: cannot create a mutex");
        return NGX_ERROR;
    }
    mcf->lock_ready = 1;
    if ((fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno, "authz_filter: eventfd() failed");
        return NGX_ERROR;
    }
    if ((c = ngx_get_connection(fd, cycle->log)) == NULL) {
        close(fd);
        return NGX_ERROR;
    }
    c->data = mcf;
    c->read->handler = ngx_http_authz_woken;
    c->read->log = cycle->log;
    mcf->wake_conn = c;
    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "authz_filter: cannot watch the eventfd");
        return NGX_ERROR;
    }
    return NGX_OK;
}

static ngx_int_t ngx_http_authz_init_process(ngx_cycle_t *cycle)
{
    ngx_http_authz_main_conf_t *mcf;
    ngx_http_authz_filter_t *flt;
    sigset_t all, old;
    ngx_msec_t waited = 0;
    ngx_uint_t i, ready;
    char err[512];
    int rc = 0;

    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE)
        return NGX_OK;
    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_authz_filter_module);
    if (mcf == NULL || mcf->filters.nelts == 0)
        return NGX_OK;
    if (ngx_http_authz_open_wake(cycle, mcf) != NGX_OK)
        return NGX_ERROR;
    /* The libraries' threads take no signal: nginx's handlers must run on
     * the worker's own thread, whose event loop they interrupt. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    flt = mcf->filters.elts;
    for (i = 0; i < mcf->filters.nelts && rc == 0; i++) {
        if ((rc = af_open((const char *)flt[i].file.data, &flt[i].f, err, sizeof err)) != 0) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "authz_filter_config \"%V\": %s",
                          &flt[i].file, err);
        } else {
            flt[i].budget_ms = af_retry_budget_ms(flt[i].f);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return NGX_ERROR;
    /* A new worker (start, reload) does not accept before its policy is
     * loaded, within ready_timeout: connections wait in the listen queue
     * while the old workers still serve, instead of meeting 503s. */
    if (mcf->ready_timeout == NGX_CONF_UNSET_MSEC)
        mcf->ready_timeout = 10000;
    for (;;) {
        for (i = 0, ready = 1; i < mcf->filters.nelts; i++)
            ready &= af_ready(flt[i].f) ? 1 : 0;
        if (ready || waited >= mcf->ready_timeout)
            break;
        ngx_msleep(5);
        waited += 5;
    }
    if (!ready)
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "authz_filter: no policy loaded after %M ms: answering 503 until it is",
                      mcf->ready_timeout);
    return NGX_OK;
}

static void ngx_http_authz_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_authz_main_conf_t *mcf;
    ngx_http_authz_filter_t *flt;
    ngx_http_authz_wait_t *w, *next;
    ngx_uint_t i;

    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE)
        return;
    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_authz_filter_module);
    if (mcf == NULL)
        return;
    flt = mcf->filters.elts;
    for (i = 0; i < mcf->filters.nelts; i++) {
        af_close(flt[i].f);  /* joins its thread: no callback after this */
        flt[i].f = NULL;
    }
    if (mcf->lock_ready) {
        for (w = mcf->woken; w != NULL; w = next) {
            next = w->next;
            ngx_free(w);
        }
        mcf->woken = NULL;
        pthread_mutex_destroy(&mcf->lock);
        mcf->lock_ready = 0;
    }
    if (mcf->wake_conn != NULL) {
        ngx_close_connection(mcf->wake_conn);
        mcf->wake_conn = NULL;
    }
}
