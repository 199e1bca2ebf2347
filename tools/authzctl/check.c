/*
 * `authzctl check`: one decision of a region's authz-server
 * (POST /v1/check, docs/authz.md), optionally at least as new as a
 * revision; exit 0 when allowed, 1 when denied (final or transient).
 */
#include <string.h>

#include "tools/authzctl/ctl.h"
#include "tools/authzctl/table.h"

#define N(a) (sizeof a / sizeof a[0])

static int cmd_check(ctl *c)
{
    const char *sub = ctl_arg(&c->a, "sub"), *action = ctl_arg(&c->a, "action");
    const char *resource = ctl_arg(&c->a, "resource");
    azc_revision rev;
    ctl_target t;
    json_t *body, *ans = NULL;
    int rc, allowed;

    if (sub == NULL || action == NULL || resource == NULL)
        return ctl_fail(c, CTL_USAGE, "check needs --sub S --action A --resource X");
    if ((rc = ctl_revision_flag(c, "revision", &rev, 0)) != CTL_OK ||
        (rc = ctl_target_get(c, "AUTHZ", "authz-server", "authz-url", NULL, &t)) != CTL_OK)
        return rc;
    body = json_pack("{s:s, s:s, s:s}", "subject", sub, "action", action, "resource", resource);
    if (body == NULL)
        return ctl_fail(c, CTL_USAGE, "the flags must be UTF-8");
    rc = ctl_call(c, &t, "POST", "/v1/check", body, NULL, 0, &ans, NULL);
    json_decref(body);
    if (rc != CTL_OK)
        return rc;
    allowed = json_is_true(json_object_get(ans, "allowed"));
    if (c->json) {
        ctl_print_json(c, ans);
    } else {
        const char *d = json_string_value(json_object_get(ans, "decision"));
        const char *why = json_string_value(json_object_get(ans, "reason"));
        char clean[600];

        ctl_cell_clean(why != NULL ? why : "", clean, sizeof clean, 500);
        fprintf(c->out, "%s  %s\n", d != NULL ? d : (allowed ? "allow" : "deny"), clean);
    }
    json_decref(ans);
    return allowed ? CTL_OK : CTL_FAIL;
}

static const ctl_flag CHECK_FLAGS[] = {
    { "sub", "SUBJECT", "the subject (JWT sub) asking" },
    { "action", "ACTION", "TYPE:VERB, e.g. doc:read" },
    { "resource", "RES", "TYPE/ID, e.g. doc/42" },
    { "revision", "TOKEN", "decide at least as new as this revision (Authz-Revision)" },
};
const ctl_command ctl_check_command = {
    "check", "--region R --sub S --action A --resource X [--revision TOKEN]",
      "ask a region's authz-server for one decision (exit 0 allow, 1 deny)", CHECK_FLAGS,
      N(CHECK_FLAGS), 0, 0, cmd_check, NULL
};
