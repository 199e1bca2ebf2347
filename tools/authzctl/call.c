/*
 * `authzctl call METHOD URL`: one request through the retrying client
 * (common/client.h, docs/client.md) for scripts: the body on stdout, each
 * retry and a summary on stderr, or the whole result as JSON.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tools/authzctl/ctl.h"

#define N(a) (sizeof a / sizeof a[0])

static int data_arg(ctl *c, const char *d, char **out)
{
    json_error_t je;
    json_t *j;

    *out = NULL;
    if (d == NULL)
        return CTL_OK;
    if (d[0] == '@') {
        j = json_load_file(d + 1, JSON_DECODE_ANY, &je);
        if (j == NULL)
            return ctl_fail(c, CTL_USAGE, "--data %s: %s", d, je.text);
        *out = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
        return *out != NULL ? CTL_OK : ctl_fail(c, CTL_FAIL, "out of memory");
    }
    j = json_loads(d, JSON_DECODE_ANY, &je);
    if (j == NULL)
        return ctl_fail(c, CTL_USAGE, "--data is not JSON: %s", je.text);
    json_decref(j);
    *out = strdup(d);
    return *out != NULL ? CTL_OK : ctl_fail(c, CTL_FAIL, "out of memory");
}

static json_t *result_json(const azc_client_result *res)
{
    json_t *o = json_object(), *h = json_object(), *rs = json_array(), *body;
    size_t i;
    int bad = o == NULL || h == NULL || rs == NULL;

    for (i = 0; !bad && i < res->nheaders; i++)
        bad = json_object_set_new(h, res->headers[i].name, json_string(res->headers[i].value));
    for (i = 0; !bad && i < res->nretries; i++)
        bad = json_array_append_new(
            rs, json_pack("{s:i, s:i, s:I, s:s}", "attempt", res->retries[i].attempt, "status",
                          res->retries[i].status, "delay_ms",
                          (json_int_t)res->retries[i].delay_ms, "reason",
                          res->retries[i].reason));
    body = res->body != NULL ? json_loadb(res->body, res->body_len, JSON_DECODE_ANY, NULL) : NULL;
    if (body == NULL && res->body != NULL)
        body = json_stringn(res->body, res->body_len);
    if (bad || json_object_set_new(o, "status", json_integer(res->status)) != 0 ||
        json_object_set_new(o, "attempts", json_integer(res->attempts)) != 0 ||
        json_object_set_new(o, "elapsed_ms", json_integer((json_int_t)res->elapsed_ms)) != 0 ||
        json_object_set_new(o, "stop", json_string(res->stop)) != 0 ||
        json_object_set_new(o, "idempotency_key", res->idempotency_key[0] != '\0'
                                                      ? json_string(res->idempotency_key)
                                                      : json_null()) != 0 ||
        json_object_set(o, "retries", rs) != 0 || json_object_set(o, "headers", h) != 0 ||
        json_object_set_new(o, "body", body != NULL ? body : json_null()) != 0) {
        json_decref(o);
        o = NULL;
    }
    json_decref(h);
    json_decref(rs);
    return o;
}

static int cmd_call(ctl *c)
{
    const char *method = c->a.pos[0], *url = c->a.pos[1];
    const char *hv[32];
    azc_client_header hdrs[32];
    char hstore[32][512];
    size_t nh = ctl_arg_all(&c->a, "header", hv, 32), i;
    azc_client_request rq = { 0 };
    azc_client_result res;
    azc_revision rev;
    char *data = NULL;
    azc_client *cl;
    azc_err e;
    int rc;

    for (i = 0; i < nh; i++) {
        char *colon;

        if (strlen(hv[i]) >= sizeof hstore[i] || (colon = strchr(hv[i], ':')) == NULL ||
            colon == hv[i])
            return ctl_fail(c, CTL_USAGE, "--header takes \"Name: value\"");
        snprintf(hstore[i], sizeof hstore[i], "%s", hv[i]);
        colon = hstore[i] + (colon - hv[i]);
        *colon++ = '\0';
        while (*colon == ' ')
            colon++;
        hdrs[i].name = hstore[i];
        hdrs[i].value = colon;
    }
    if ((rc = ctl_revision_flag(c, "revision", &rev, 0)) != CTL_OK ||
        (rc = data_arg(c, ctl_arg(&c->a, "data"), &data)) != CTL_OK)
        return rc;
    if ((cl = ctl_client(c)) == NULL) {
        free(data);
        return CTL_FAIL;
    }
    rq.method = method;
    rq.url = url;
    rq.body = data;
    rq.body_len = data != NULL ? strlen(data) : 0;
    rq.headers = hdrs;
    rq.nheaders = nh;
    rq.idempotency_key = ctl_arg(&c->a, "idempotency-key");
    rq.idempotency = ctl_arg_has(&c->a, "no-idempotency-key") ? AZC_IDEM_NONE : AZC_IDEM_AUTO;
    rc = azc_client_do(cl, &rq, &res, &e);
    free(data);
    if (rc == AZC_EINVAL) {
        azc_client_result_clear(&res);
        return ctl_fail(c, CTL_USAGE, "%s", e.msg);
    }
    if (c->json) {
        json_t *o = result_json(&res);

        if (o != NULL)
            ctl_print_json(c, o);
        json_decref(o);
    } else {
        if (res.body != NULL) {
            fwrite(res.body, 1, res.body_len, c->out);
            if (res.body_len > 0 && res.body[res.body_len - 1] != '\n')
                fputc('\n', c->out);
        }
        /* --verbose printed them as they happened */
        for (i = 0; !c->verbose && i < res.nretries; i++)
            fprintf(c->err, "attempt %d: %s; retried after %" PRIu64 " ms\n",
                    res.retries[i].attempt, res.retries[i].reason, res.retries[i].delay_ms);
        if (res.status != 0)
            fprintf(c->err, "%d after %d attempt%s in %" PRIu64 " ms (%s)\n", res.status,
                    res.attempts, res.attempts == 1 ? "" : "s", res.elapsed_ms, res.stop);
    }
    if (rc != AZC_OK)
        rc = ctl_fail(c, strstr(e.msg, "timed out") != NULL ? CTL_TIMEOUT : CTL_FAIL,
                      "cannot reach %s: %s", url, e.msg);
    else if (res.status >= 200 && res.status <= 299)
        rc = CTL_OK;
    else
        rc = strncmp(res.stop, "budget exhausted", 16) == 0 ? CTL_TIMEOUT : CTL_FAIL;
    azc_client_result_clear(&res);
    return rc;
}

static const ctl_flag CALL_FLAGS[] = {
    { "data", "JSON", "request body, JSON (or @FILE)" },
    { "header", "'NAME: VALUE'", "extra request header; repeat for more" },
    { "idempotency-key", "KEY", "the POST's Idempotency-Key (default: a new UUID)" },
    { "no-idempotency-key", NULL, "send a POST without one (then never resent after no answer)" },
    { "revision", "TOKEN", "send this Authz-Revision (newer ones from answers replace it)" },
};
const ctl_command ctl_call_command = {
    "call", "METHOD URL [--data JSON] [--header 'N: V']...",
      "one request through the retrying client (docs/client.md); the body on stdout, retries "
      "on stderr", CALL_FLAGS, N(CALL_FLAGS), 2, 2, cmd_call, NULL
};
