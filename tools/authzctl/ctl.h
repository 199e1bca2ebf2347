/*
 * What authzctl's commands share: the context of one run (streams,
 * output mode, endpoints, the retrying client), the command table entry,
 * and the calls to the services with their error messages (ctl.c).
 *
 * Exit codes (docs/authzctl.md): 0 ok, 1 failure (an error answer, an
 * unreachable endpoint, a deny from `check`), 2 usage, 3 timeout (`wait`
 * past --timeout, a call whose retries ran out of time).
 */
#ifndef CTL_CTL_H
#define CTL_CTL_H

#include <stdio.h>

#include <jansson.h>

#include "common/client.h"
#include "tools/authzctl/args.h"
#include "tools/authzctl/env.h"

enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2, CTL_TIMEOUT = 3 };

typedef struct ctl ctl;

typedef struct ctl_command {
    const char *words;          /* "users create" */
    const char *synopsis;       /* positional arguments and required flags */
    const char *summary;        /* one line */
    const ctl_flag *flags;      /* the command's own flags */
    size_t nflags;
    size_t min_pos, max_pos;    /* positional arguments after the words */
    int (*run)(ctl *c);
    const void *data;           /* the command's table entry (identity resources) */
} ctl_command;

struct ctl {
    FILE *out, *err;
    const char *prog;
    const ctl_command *cmd;
    ctl_args a;
    int json, verbose, tty;
    ctl_env env;
    azc_client *client;         /* made on first use */
    const char *regions[CTL_MAX_REGIONS];
    size_t nregions;
    char regions_store[512];
    char token[8192];           /* "" when none */
    long budget_ms, attempts;
};

/* The command tables of each file. */
extern const ctl_command ctl_identity_commands[];
extern const size_t ctl_identity_ncommands;
extern const ctl_command ctl_check_command;    /* check.c */
extern const ctl_command ctl_status_command;   /* status.c */
extern const ctl_command ctl_wait_command;     /* wait.c */
extern const ctl_command ctl_call_command;     /* call.c */

/* Prints "authzctl: <message>" on c->err; returns `code`. */
int ctl_fail(ctl *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The retrying client, made with the run's token and bounds; NULL after
 * printing why. */
azc_client *ctl_client(ctl *c);

/* A service of a region to call: its base URL and how messages name it. */
typedef struct ctl_target {
    char base[512];
    char what[128];             /* "the identity service of us" */
} ctl_target;

/*
 * Resolves the base URL of `service` ("IDENTITY", "AUTHZ", "REPLICATOR")
 * for `region` (NULL: the run's default region): the flag `flag` (e.g.
 * "identity-url", may be NULL), else <SERVICE>_URL_<REGION> from the
 * environment or the env file. CTL_OK, or CTL_USAGE after a message
 * saying which variable is missing.
 */
int ctl_target_get(ctl *c, const char *service, const char *label, const char *flag,
                   const char *region, ctl_target *t);

/* The default region: --region, AUTHZ_REGION, else the first of the
 * regions; NULL after a message. */
const char *ctl_region(ctl *c);

/*
 * One call through the client: `method` on t->base + path with `body`
 * (borrowed, may be NULL) and extra headers. On a 2xx answer *out gets
 * its JSON (NULL for an empty body; may be NULL to ignore) and CTL_OK is
 * returned; otherwise a message naming the target and the answer's error
 * code is printed and CTL_FAIL or CTL_TIMEOUT returned. `res` (may be
 * NULL) receives the client's result, for its headers; clear it after.
 */
int ctl_call(ctl *c, const ctl_target *t, const char *method, const char *path, json_t *body,
             const azc_client_header *hdrs, size_t nh, json_t **out, azc_client_result *res);

/* Prints j compact on one line (the --json output). */
void ctl_print_json(ctl *c, const json_t *j);

/* A JSON value as a table cell into buf[len]: strings as they are,
 * arrays joined with ",", null as "-", others as compact JSON. */
const char *ctl_cell(const json_t *v, char *buf, size_t len);

/* "15:04:05.123" (UTC) of an HLC's milliseconds into buf, "-" for 0. */
const char *ctl_hlc_time(uint64_t hlc, char *buf, size_t len);

/* Reads the revision token of flag `name` into *rev and merges it into
 * the client's, so the run's requests carry it. CTL_OK (also when the
 * flag is absent and not `required`), CTL_USAGE for a malformed token. */
int ctl_revision_flag(ctl *c, const char *name, azc_revision *rev, int required);

/* Percent-encodes s for a query string or path segment (caller frees). */
char *ctl_encode(const char *s);

#endif
