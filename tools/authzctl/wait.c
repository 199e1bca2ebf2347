/*
 * `authzctl wait`: polls every named region's /v1/status until its
 * applied watermark of the token's origin reaches the token's HLC (DESIGN
 * section 4: a region has applied a revision when applied[origin] >=
 * hlc), with a live line on a terminal and plain lines otherwise, and
 * prints how long each region took. Exit 3 past --timeout.
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "common/hlc.h"
#include "common/text.h"
#include "tools/authzctl/ctl.h"
#include "tools/authzctl/table.h"

#define N(a) (sizeof a / sizeof a[0])
#define WAIT_POLL_MS 20

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct wait_region {
    const char *name;
    ctl_target t;
    int done;
    uint64_t waited_ms;        /* from the start of the wait */
    int64_t after_write_ms;    /* wall clock at the poll that saw it, minus the HLC's ms */
    uint64_t applied;          /* last applied HLC seen of the origin */
    char error[200];           /* the last poll's failure, "" when it answered */
} wait_region;

/* One poll of a region's status; 0, or -1 with w->error set. */
static int wait_poll(azc_client *cl, wait_region *w, const azc_revision *rev)
{
    azc_client_request rq = { 0 };
    azc_client_result res;
    char url[600];
    json_t *j;
    azc_err e;
    int rc;

    snprintf(url, sizeof url, "%s/v1/status", w->t.base);
    rq.method = "GET";
    rq.url = url;
    rc = azc_client_do(cl, &rq, &res, &e);
    if (rc != AZC_OK || res.status != 200) {
        if (rc != AZC_OK)
            azc_text_fmt(w->error, sizeof w->error, "%s", e.msg);
        else
            azc_text_fmt(w->error, sizeof w->error, "status answered %d", res.status);
        azc_client_result_clear(&res);
        return -1;
    }
    j = json_loadb(res.body, res.body_len, 0, NULL);
    azc_client_result_clear(&res);
    if (j == NULL) {
        azc_text_fmt(w->error, sizeof w->error, "status is not JSON");
        return -1;
    }
    w->error[0] = '\0';
    w->applied = (uint64_t)json_integer_value(
        json_object_get(json_object_get(json_object_get(j, "origins"), rev->origin),
                        "applied_hlc"));
    json_decref(j);
    return 0;
}

static void wait_line(ctl *c, const wait_region *w, size_t n, const char *token, uint64_t now)
{
    size_t i;

    fprintf(c->out, "\r\033[Kwaiting for %s:", token);
    for (i = 0; i < n; i++) {
        if (w[i].done)
            fprintf(c->out, "  %s ok %" PRIu64 " ms", w[i].name, w[i].waited_ms);
        else if (w[i].error[0] != '\0')
            fprintf(c->out, "  %s unreachable", w[i].name);
        else
            fprintf(c->out, "  %s ... %" PRIu64 " ms", w[i].name, now);
    }
    fflush(c->out);
}

static int cmd_wait(ctl *c)
{
    const char *token = ctl_arg(&c->a, "revision"), *ts = ctl_arg(&c->a, "timeout");
    wait_region w[CTL_MAX_REGIONS];
    azc_client_options o;
    azc_client *cl = NULL;
    azc_revision rev;
    long timeout_ms = 30000;
    uint64_t start, now;
    size_t i, left;
    azc_err e;
    int rc;

    if ((rc = ctl_revision_flag(c, "revision", &rev, 1)) != CTL_OK)
        return rc;
    if (ts != NULL && ctl_parse_secs(ts, 86400000L, &timeout_ms) != 0)
        return ctl_fail(c, CTL_USAGE, "--timeout takes seconds (e.g. 30 or 0.5)");
    if (c->nregions == 0)
        return ctl_fail(c, CTL_USAGE, "no regions: pass --regions us,eu,... (or set "
                                      "AUTHZ_REGIONS, as tools/local-cluster env does)");
    memset(w, 0, sizeof w);
    for (i = 0; i < c->nregions; i++) {
        w[i].name = c->regions[i];
        if ((rc = ctl_target_get(c, "AUTHZ", "authz-server", NULL, w[i].name, &w[i].t)) != CTL_OK)
            return rc;
    }
    /* Polls are single attempts: the loop itself is the retry, bounded by
     * --timeout, and one slow region must not hold up the others' lines. */
    azc_client_options_init(&o);
    o.max_attempts = 1;
    o.budget_ms = timeout_ms < 2000 ? (int)timeout_ms : 2000;
    o.attempt_timeout_ms = o.budget_ms;
    o.ca_file = ctl_arg(&c->a, "ca-file");
    if (azc_client_new(&o, &cl, &e) != AZC_OK)
        return ctl_fail(c, CTL_FAIL, "%s", e.msg);
    start = mono_ms();
    for (left = c->nregions;;) {
        for (i = 0; i < c->nregions; i++) {
            if (w[i].done || wait_poll(cl, &w[i], &rev) != 0 || w[i].applied < rev.hlc)
                continue;
            w[i].done = 1;
            w[i].waited_ms = mono_ms() - start;
            w[i].after_write_ms = (int64_t)azc_wall_ms() - (int64_t)AZC_HLC_MS(rev.hlc);
            left--;
            if (!c->tty && !c->json)
                fprintf(c->out, "%s: applied after %" PRIu64 " ms (%" PRId64
                                " ms after the write)\n",
                        w[i].name, w[i].waited_ms, w[i].after_write_ms);
        }
        now = mono_ms() - start;
        if (c->tty && !c->json)
            wait_line(c, w, c->nregions, token, now);
        if (left == 0 || now >= (uint64_t)timeout_ms)
            break;
        {
            struct timespec d = { 0, WAIT_POLL_MS * 1000000L };

            nanosleep(&d, NULL);
        }
    }
    azc_client_free(cl);
    if (c->tty && !c->json)
        fputc('\n', c->out);
    if (c->json) {
        json_t *o2 = json_object(), *rs = json_object();

        for (i = 0; i < c->nregions && o2 != NULL && rs != NULL; i++)
            json_object_set_new(rs, w[i].name,
                                w[i].done ? json_pack("{s:b, s:I, s:I}", "applied", 1,
                                                      "waited_ms", (json_int_t)w[i].waited_ms,
                                                      "after_write_ms",
                                                      (json_int_t)w[i].after_write_ms)
                                          : json_pack("{s:b, s:I, s:s?}", "applied", 0,
                                                      "applied_hlc", (json_int_t)w[i].applied,
                                                      "error", w[i].error[0] != '\0' ? w[i].error
                                                                                     : NULL));
        if (o2 != NULL && rs != NULL &&
            json_object_set_new(o2, "revision", json_string(token)) == 0 &&
            json_object_set_new(o2, "timed_out", json_boolean(left > 0)) == 0 &&
            json_object_set(o2, "regions", rs) == 0)
            ctl_print_json(c, o2);
        json_decref(rs);
        json_decref(o2);
    } else if (left == 0) {
        static const char *const hdr[] = { "REGION", "WAITED_MS", "AFTER_WRITE_MS" };
        ctl_table *t = ctl_table_new(hdr, 3);

        for (i = 0; i < c->nregions && t != NULL; i++) {
            char a[32], b[32];
            const char *row[3] = { w[i].name, a, b };

            snprintf(a, sizeof a, "%" PRIu64, w[i].waited_ms);
            snprintf(b, sizeof b, "%" PRId64, w[i].after_write_ms);
            if (ctl_table_add(t, row) != 0)
                break;
        }
        if (t != NULL)
            ctl_table_print(t, c->out);
        ctl_table_free(t);
    }
    if (left == 0)
        return CTL_OK;
    for (i = 0; i < c->nregions; i++) {
        char at[32];

        if (w[i].done)
            continue;
        if (w[i].error[0] != '\0')
            ctl_fail(c, CTL_TIMEOUT, "timed out after %ld ms: %s is unreachable (%s)", timeout_ms,
                     w[i].name, w[i].error);
        else
            ctl_fail(c, CTL_TIMEOUT,
                     "timed out after %ld ms: %s has applied origin %s only up to %s (%" PRIu64
                     " ms before the revision)",
                     timeout_ms, w[i].name, rev.origin, ctl_hlc_time(w[i].applied, at, sizeof at),
                     w[i].applied != 0 ? AZC_HLC_MS(rev.hlc) - AZC_HLC_MS(w[i].applied) : 0);
    }
    return CTL_TIMEOUT;
}

static const ctl_flag WAIT_FLAGS[] = {
    { "revision", "TOKEN", "the revision to wait for (from a write's Authz-Revision)" },
    { "timeout", "SECONDS", "give up after this long (default 30), exit 3" },
};
const ctl_command ctl_wait_command = {
    "wait", "--revision TOKEN [--regions R,...] [--timeout SECONDS]",
      "wait until every region has applied a revision; print how long each took (exit 3 on "
      "timeout)", WAIT_FLAGS, N(WAIT_FLAGS), 0, 0, cmd_wait, NULL
};
