/*
 * authzctl's shared plumbing (ctl.h): the client with the run's token and
 * bounds, endpoint resolution, and turning an answer into either JSON for
 * the command or one clear message for the admin.
 */
#include "tools/authzctl/ctl.h"

#include <stdarg.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "common/hlc.h"
#include "common/revision.h"
#include "common/text.h"

int ctl_fail(ctl *c, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    azc_text_vfmt(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(c->err, "%s: %s\n", c->prog, msg);
    return code;
}

static void on_retry(void *arg, int attempt, uint64_t delay_ms, const char *reason)
{
    ctl *c = arg;

    if (c->verbose)
        fprintf(c->err, "%s: attempt %d: %s; retrying in %llu ms\n", c->prog, attempt, reason,
                (unsigned long long)delay_ms);
}

azc_client *ctl_client(ctl *c)
{
    azc_client_options o;
    azc_err e;

    if (c->client != NULL)
        return c->client;
    azc_client_options_init(&o);
    o.token = c->token[0] != '\0' ? c->token : NULL;
    o.ca_file = ctl_arg(&c->a, "ca-file");
    o.budget_ms = (int)c->budget_ms;
    if (o.attempt_timeout_ms > o.budget_ms)
        o.attempt_timeout_ms = o.budget_ms;
    o.max_attempts = (int)c->attempts;
    o.on_retry = on_retry;
    o.on_retry_arg = c;
    if (azc_client_new(&o, &c->client, &e) != AZC_OK) {
        ctl_fail(c, CTL_FAIL, "%s", e.msg);
        return NULL;
    }
    return c->client;
}

const char *ctl_region(ctl *c)
{
    const char *r = ctl_arg(&c->a, "region");

    if (r == NULL)
        r = ctl_env_get(&c->env, "AUTHZ_REGION");
    if (r == NULL && c->nregions > 0)
        r = c->regions[0];
    if (r == NULL) {
        ctl_fail(c, CTL_USAGE, "no region: pass --region R (or set AUTHZ_REGIONS, as "
                               "tools/local-cluster env does)");
        return NULL;
    }
    if (!azc_region_valid(r)) {
        ctl_fail(c, CTL_USAGE, "\"%s\" is not a region name", r);
        return NULL;
    }
    return r;
}

int ctl_target_get(ctl *c, const char *service, const char *label, const char *flag,
                   const char *region, ctl_target *t)
{
    const char *url = flag != NULL ? ctl_arg(&c->a, flag) : NULL;
    char name[96];
    size_t n;

    /* A URL given as a flag needs no region. */
    if (url == NULL && region == NULL && (region = ctl_region(c)) == NULL)
        return CTL_USAGE;
    if (url == NULL) {
        if (ctl_env_url_name(service, region, name, sizeof name) != 0)
            return ctl_fail(c, CTL_USAGE, "region name too long");
        url = ctl_env_get(&c->env, name);
        if (url == NULL)
            return ctl_fail(c, CTL_USAGE,
                            "no %s URL for region %s: set %s%s%s, or run `eval \"$(tools/"
                            "local-cluster env)\"` with the cluster up",
                            label, region, name, flag != NULL ? " or pass --" : "",
                            flag != NULL ? flag : "");
    }
    n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (n >= sizeof t->base)
        return ctl_fail(c, CTL_USAGE, "the %s URL is too long", label);
    memcpy(t->base, url, n);
    t->base[n] = '\0';
    if (region != NULL)
        azc_text_fmt(t->what, sizeof t->what, "the %s of %s", label, region);
    else
        azc_text_fmt(t->what, sizeof t->what, "the %s", label);
    return CTL_OK;
}

/* The error of an answer body: "code: message (field x)". */
static void error_text(const azc_client_result *res, char *buf, size_t len)
{
    json_t *j = res->body != NULL ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    json_t *err = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *field = json_string_value(json_object_get(err, "field"));

    if (code != NULL || msg != NULL)
        azc_text_fmt(buf, len, "%s%s%s%s%s%s", code != NULL ? code : "",
                     code != NULL ? ": " : "", msg != NULL ? msg : "",
                     field != NULL ? " (field " : "", field != NULL ? field : "",
                     field != NULL ? ")" : "");
    else
        azc_text_fmt(buf, len, "%.*s", (int)azc_utf8_cut(res->body != NULL ? res->body : "", 200),
                     res->body != NULL ? res->body : "");
    json_decref(j);
}

static int gave_up_on_time(const azc_client_result *res)
{
    return strncmp(res->stop, "budget exhausted", 16) == 0 ||
           (res->nretries > 0 && strstr(res->retries[res->nretries - 1].reason, "timed out"));
}

int ctl_call(ctl *c, const ctl_target *t, const char *method, const char *path, json_t *body,
             const azc_client_header *hdrs, size_t nh, json_t **out, azc_client_result *res)
{
    azc_client *cl = ctl_client(c);
    azc_client_result local;
    azc_client_request rq = { 0 };
    char url[2048], why[600];
    char *text = NULL;
    azc_err e;
    int rc, code = CTL_OK;

    if (out != NULL)
        *out = NULL;
    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof *res);
    if (cl == NULL)
        return CTL_FAIL;
    if ((size_t)snprintf(url, sizeof url, "%s%s", t->base, path) >= sizeof url)
        return ctl_fail(c, CTL_USAGE, "URL too long");
    if (body != NULL && (text = json_dumps(body, JSON_COMPACT)) == NULL)
        return ctl_fail(c, CTL_FAIL, "out of memory");
    rq.method = method;
    rq.url = url;
    rq.body = text;
    rq.body_len = text != NULL ? strlen(text) : 0;
    rq.headers = hdrs;
    rq.nheaders = nh;
    rc = azc_client_do(cl, &rq, res, &e);
    free(text);
    if (rc == AZC_EUNAVAIL) {
        code = ctl_fail(c, strstr(e.msg, "timed out") != NULL ? CTL_TIMEOUT : CTL_FAIL,
                        "cannot reach %s at %s: %s%s", t->what, t->base, e.msg,
                        strstr(e.msg, "refused") != NULL
                            ? "; is it running? (tools/local-cluster status)"
                            : "");
    } else if (rc != AZC_OK) {
        code = ctl_fail(c, rc == AZC_EINVAL ? CTL_USAGE : CTL_FAIL, "%s", e.msg);
    } else if (res->status < 200 || res->status > 299) {
        error_text(res, why, sizeof why);
        if (res->status == 401)
            code = ctl_fail(c, CTL_FAIL,
                            "%s refused the token (401 %s)%s", t->what, why,
                            c->token[0] == '\0'
                                ? ": no token given; pass --token, --token-file or set AUTHZ_TOKEN "
                                  "(local cluster: export AUTHZ_TOKEN=$(tools/dev-token --sub me "
                                  "--admin))"
                                : ": check that it is an admin token for this service and not "
                                  "expired");
        else if (res->status == 403)
            code = ctl_fail(c, CTL_FAIL, "%s denied the request (403 %s)", t->what, why);
        else
            code = ctl_fail(c, gave_up_on_time(res) ? CTL_TIMEOUT : CTL_FAIL,
                            "%s answered %d %s%s%s", t->what, res->status, why,
                            res->nretries > 0 ? "; gave up: " : "",
                            res->nretries > 0 ? res->stop : "");
    } else if (out != NULL && res->body_len > 0) {
        json_error_t je;

        *out = json_loadb(res->body, res->body_len, 0, &je);
        if (*out == NULL)
            code = ctl_fail(c, CTL_FAIL, "%s answered something that is not JSON: %s", t->what,
                            je.text);
    }
    if (res == &local)
        azc_client_result_clear(&local);
    return code;
}

void ctl_print_json(ctl *c, const json_t *j)
{
    if (json_dumpf(j, c->out, JSON_COMPACT | JSON_ENCODE_ANY) == 0)
        fputc('\n', c->out);
}

const char *ctl_cell(const json_t *v, char *buf, size_t len)
{
    char *s;
    size_t i, o = 0;

    if (v == NULL || json_is_null(v))
        return "-";
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_array(v)) {
        buf[0] = '\0';
        for (i = 0; i < json_array_size(v); i++) {
            const char *x = json_string_value(json_array_get(v, i));
            int w = snprintf(buf + o, len - o, "%s%s", i > 0 ? "," : "", x != NULL ? x : "?");

            if (w < 0 || (size_t)w >= len - o)
                break;
            o += (size_t)w;
        }
        return buf;
    }
    s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    azc_text_fmt(buf, len, "%s", s != NULL ? s : "?");
    free(s);
    return buf;
}

char *ctl_encode(const char *s)
{
    return evhttp_uriencode(s, -1, 0);
}

/* "15:04:05.123" (UTC) of an HLC's milliseconds; "-" for 0. */
const char *ctl_hlc_time(uint64_t hlc, char *buf, size_t len)
{
    uint64_t ms = AZC_HLC_MS(hlc);
    time_t s = (time_t)(ms / 1000u);
    struct tm tm;

    if (hlc == 0 || gmtime_r(&s, &tm) == NULL)
        return "-";
    snprintf(buf, len, "%02d:%02d:%02d.%03u", tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(ms % 1000u));
    return buf;
}

int ctl_revision_flag(ctl *c, const char *name, azc_revision *rev, int required)
{
    const char *tok = ctl_arg(&c->a, name);
    azc_err e;

    if (tok == NULL) {
        if (required)
            return ctl_fail(c, CTL_USAGE, "--%s TOKEN is required", name);
        return CTL_OK;
    }
    if (azc_revision_decode(tok, rev, &e) != AZC_OK)
        return ctl_fail(c, CTL_USAGE, "--%s: \"%s\" is not a revision token (v1.<origin>.<16 hex>)",
                        name, tok);
    if (ctl_client(c) == NULL || azc_client_merge_revision(c->client, tok, &e) != AZC_OK)
        return CTL_FAIL;
    return CTL_OK;
}

