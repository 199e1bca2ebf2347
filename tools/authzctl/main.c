/*
 * authzctl: the admin's command line (issue 13): everything the identity
 * API offers, plus check, status, wait and call, every request through
 * the retrying client (common/client.h). docs/authzctl.md is its manual.
 *
 * main() only wires: the command table lookup, the flags, the endpoints
 * and token (env.h), then the command's run function; its exit code is
 * the process's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "tools/authzctl/ctl.h"

#define PROG "authzctl"

static const ctl_flag GLOBAL_FLAGS[] = {
    { "json", NULL, "print JSON (one line) instead of tables, for scripts" },
    { "region", "R", "the region whose service to call (default: AUTHZ_REGION, else the first "
                     "of AUTHZ_REGIONS)" },
    { "regions", "R,...", "the regions of status and wait (default: AUTHZ_REGIONS)" },
    { "identity-url", "URL", "the identity service (default: IDENTITY_URL_<REGION>)" },
    { "authz-url", "URL", "the authz-server for check (default: AUTHZ_URL_<REGION>)" },
    { "token", "JWT", "bearer token (default: AUTHZ_TOKEN, AUTHZ_ADMIN_TOKEN)" },
    { "token-file", "FILE", "read the bearer token from FILE" },
    { "env-file", "FILE", "endpoints file (default: $AUTHZ_RUN_DIR/env, else the checkout's "
                          ".run/env)" },
    { "ca-file", "FILE", "PEM CA bundle for https (default: the system store)" },
    { "budget", "SECONDS", "time budget of one call, retries included (default 10)" },
    { "attempts", "N", "attempts per call, 1-100 (default 5)" },
    { "verbose", NULL, "print each retry on stderr" },
    { "help", NULL, "show help for the command and exit" },
};

#define N(a) (sizeof a / sizeof a[0])

typedef struct table_ref {
    const ctl_command *cmds;
    const size_t *n;
} table_ref;

static const size_t ONE = 1;

static const table_ref TABLES[] = {
    { ctl_identity_commands, &ctl_identity_ncommands },
    { &ctl_check_command, &ONE },
    { &ctl_status_command, &ONE },
    { &ctl_wait_command, &ONE },
    { &ctl_call_command, &ONE },
};

static const ctl_command *command_find(const char *words)
{
    size_t i, j;

    for (i = 0; i < N(TABLES); i++) {
        for (j = 0; j < *TABLES[i].n; j++) {
            if (strcmp(TABLES[i].cmds[j].words, words) == 0)
                return &TABLES[i].cmds[j];
        }
    }
    return NULL;
}

/* 1 if `group` is the first word of some command ("users"). */
static int group_known(const char *group)
{
    size_t i, j, n = strlen(group);

    for (i = 0; i < N(TABLES); i++) {
        for (j = 0; j < *TABLES[i].n; j++) {
            const char *w = TABLES[i].cmds[j].words;

            if (strncmp(w, group, n) == 0 && (w[n] == ' ' || w[n] == '\0'))
                return 1;
        }
    }
    return 0;
}

static void flags_help(FILE *f, const ctl_flag *flags, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char left[64];

        snprintf(left, sizeof left, "--%s%s%s", flags[i].name, flags[i].value != NULL ? " " : "",
                 flags[i].value != NULL ? flags[i].value : "");
        fprintf(f, "  %-26s %s\n", left, flags[i].help);
    }
}

static void usage_top(FILE *f, const char *group)
{
    size_t i, j;

    if (group == NULL)
        fputs(PROG ": the admin's command line of the authorization service\n\n"
              "usage: " PROG " [FLAGS] COMMAND [ARGS] [FLAGS]\n\ncommands:\n",
              f);
    else
        fprintf(f, "usage: " PROG " %s COMMAND [ARGS] [FLAGS]\n\ncommands:\n", group);
    for (i = 0; i < N(TABLES); i++) {
        for (j = 0; j < *TABLES[i].n; j++) {
            const ctl_command *c = &TABLES[i].cmds[j];
            size_t n = group != NULL ? strlen(group) : 0;

            if (group != NULL && !(strncmp(c->words, group, n) == 0 && c->words[n] == ' '))
                continue;
            fprintf(f, "  %-20s %s\n", c->words, c->summary);
        }
    }
    fputs("\nflags of every command:\n", f);
    flags_help(f, GLOBAL_FLAGS, N(GLOBAL_FLAGS));
    fputs("\n`" PROG " COMMAND --help` describes a command. Endpoints come from the flags, the\n"
          "environment, or the env file of tools/local-cluster. Exit status: 0 ok,\n"
          "1 failure, 2 usage, 3 timeout (docs/authzctl.md).\n",
          f);
}

static void usage_command(FILE *f, const ctl_command *c)
{
    fprintf(f, "usage: " PROG " %s%s%s [FLAGS]\n\n%s\n", c->words,
            c->synopsis[0] != '\0' ? " " : "", c->synopsis, c->summary);
    if (c->nflags > 0) {
        fputs("\nflags:\n", f);
        flags_help(f, c->flags, c->nflags);
    }
    fputs("\nflags of every command:\n", f);
    flags_help(f, GLOBAL_FLAGS, N(GLOBAL_FLAGS));
}

/* After a usage error: the synopsis and where the rest is. */
static void usage_short(FILE *f, const ctl_command *c)
{
    fprintf(f, "usage: " PROG " %s%s%s [FLAGS]\n(" PROG " %s --help for the flags)\n", c->words,
            c->synopsis[0] != '\0' ? " " : "", c->synopsis, c->words);
}

/* The token from --token, --token-file, AUTHZ_TOKEN or AUTHZ_ADMIN_TOKEN. */
static int token_load(ctl *c)
{
    const char *t = ctl_arg(&c->a, "token"), *file = ctl_arg(&c->a, "token-file");
    size_t n;

    if (t == NULL && file != NULL) {
        FILE *f = fopen(file, "r");

        if (f == NULL)
            return ctl_fail(c, CTL_USAGE, "--token-file %s: %s", file, strerror(errno));
        n = fread(c->token, 1, sizeof c->token - 1, f);
        fclose(f);
        c->token[n] = '\0';
        if (n == sizeof c->token - 1)
            return ctl_fail(c, CTL_USAGE, "--token-file %s: the token is too long", file);
    } else {
        if (t == NULL)
            t = ctl_env_get(&c->env, "AUTHZ_TOKEN");
        if (t == NULL)
            t = ctl_env_get(&c->env, "AUTHZ_ADMIN_TOKEN");
        if (t == NULL)
            return CTL_OK;
        if (strlen(t) >= sizeof c->token)
            return ctl_fail(c, CTL_USAGE, "the token is too long");
        memcpy(c->token, t, strlen(t) + 1);
    }
    n = strlen(c->token);
    while (n > 0 && (c->token[n - 1] == '\n' || c->token[n - 1] == '\r' || c->token[n - 1] == ' '))
        c->token[--n] = '\0';
    return CTL_OK;
}

static int env_load(ctl *c)
{
    const char *file = ctl_arg(&c->a, "env-file"), *run;
    char path[600], err[700];
    struct stat st;

    if (file != NULL) {
        if (ctl_env_load(&c->env, file, err, sizeof err) != 0)
            return ctl_fail(c, CTL_USAGE, "--env-file: %s", err);
        return CTL_OK;
    }
    run = getenv("AUTHZ_RUN_DIR");
    if (run != NULL && run[0] != '\0')
        snprintf(path, sizeof path, "%s/env", run);
    else
        snprintf(path, sizeof path, "%s/.run/env", AUTHZ_SOURCE_DIR);
    /* A cluster that is not up has no file: then the environment and the
     * flags are all there is. */
    if (stat(path, &st) != 0)
        return CTL_OK;
    if (ctl_env_load(&c->env, path, err, sizeof err) != 0)
        return ctl_fail(c, CTL_USAGE, "%s", err);
    return CTL_OK;
}

static int settings_load(ctl *c)
{
    const char *v;
    int rc, n;

    if ((rc = env_load(c)) != CTL_OK || (rc = token_load(c)) != CTL_OK)
        return rc;
    c->budget_ms = 10000;
    c->attempts = 5;
    if ((v = ctl_arg(&c->a, "budget")) != NULL && ctl_parse_secs(v, 3600000L, &c->budget_ms) != 0)
        return ctl_fail(c, CTL_USAGE, "--budget takes seconds, up to 3600");
    if ((v = ctl_arg(&c->a, "attempts")) != NULL && ctl_parse_long(v, 100, &c->attempts) != 0)
        return ctl_fail(c, CTL_USAGE, "--attempts takes 1-100");
    v = ctl_arg(&c->a, "regions");
    if (v == NULL)
        v = ctl_env_get(&c->env, "AUTHZ_REGIONS");
    if (v != NULL) {
        n = ctl_regions_split(v, c->regions_store, sizeof c->regions_store, c->regions,
                              CTL_MAX_REGIONS);
        if (n < 0)
            return ctl_fail(c, CTL_USAGE, "\"%s\" is not a comma-separated list of regions", v);
        c->nregions = (size_t)n;
    }
    return CTL_OK;
}

/* libevent warns on stderr about a refused connect the client reports
 * itself, in its own words. */
static void quiet_libevent(int severity, const char *msg)
{
    (void)severity;
    (void)msg;
}

static int run(int argc, char **argv, ctl *c)
{
    const ctl_flag *sets[2] = { GLOBAL_FLAGS, NULL };
    size_t nflags[2] = { N(GLOBAL_FLAGS), 0 }, nwords;
    char words[128], err[256];
    int idx[2] = { -1, -1 }, skip[2], nskip = 0, help, rc;

    nwords = ctl_args_words(argc, argv, GLOBAL_FLAGS, N(GLOBAL_FLAGS), idx);
    help = 0;
    for (rc = 1; rc < argc; rc++)
        help |= strcmp(argv[rc], "--help") == 0 || strcmp(argv[rc], "-h") == 0;
    if (nwords == 0) {
        usage_top(help ? c->out : c->err, NULL);
        return help ? CTL_OK : CTL_USAGE;
    }
    c->cmd = NULL;
    if (nwords == 2) {
        snprintf(words, sizeof words, "%s %s", argv[idx[0]], argv[idx[1]]);
        c->cmd = command_find(words);
        nskip = 2;
    }
    if (c->cmd == NULL) {
        c->cmd = command_find(argv[idx[0]]);
        nskip = 1;
    }
    if (c->cmd == NULL) {
        if (group_known(argv[idx[0]])) {
            if (nwords == 2 && !help)
                fprintf(c->err, PROG ": unknown command \"%s %s\"\n\n", argv[idx[0]],
                        argv[idx[1]]);
            usage_top(help ? c->out : c->err, argv[idx[0]]);
            return help ? CTL_OK : CTL_USAGE;
        }
        fprintf(c->err, PROG ": unknown command \"%s\" (see " PROG " --help)\n", argv[idx[0]]);
        return CTL_USAGE;
    }
    if (help) {
        usage_command(c->out, c->cmd);
        return CTL_OK;
    }
    skip[0] = idx[0];
    skip[1] = idx[1];
    sets[1] = c->cmd->flags;
    nflags[1] = c->cmd->nflags;
    if (ctl_args_parse(argc, argv, 1, skip, (size_t)nskip, sets, nflags, 2, &c->a, err,
                       sizeof err) != 0) {
        fprintf(c->err, PROG " %s: %s\n", c->cmd->words, err);
        usage_short(c->err, c->cmd);
        return CTL_USAGE;
    }
    if (c->a.npos < c->cmd->min_pos || c->a.npos > c->cmd->max_pos) {
        if (c->a.npos > c->cmd->max_pos)
            fprintf(c->err, PROG " %s: unexpected argument \"%s\"\n", c->cmd->words,
                    c->a.pos[c->cmd->max_pos]);
        else
            fprintf(c->err, PROG " %s: missing arguments\n", c->cmd->words);
        usage_short(c->err, c->cmd);
        return CTL_USAGE;
    }
    c->json = ctl_arg_has(&c->a, "json");
    c->verbose = ctl_arg_has(&c->a, "verbose");
    if ((rc = settings_load(c)) != CTL_OK)
        return rc;
    return c->cmd->run(c);
}

int main(int argc, char **argv)
{
    ctl *c = calloc(1, sizeof *c);
    int rc;

    if (c == NULL) {
        fputs(PROG ": out of memory\n", stderr);
        return CTL_FAIL;
    }
    c->out = stdout;
    c->err = stderr;
    c->prog = PROG;
    c->tty = isatty(STDOUT_FILENO);
    ctl_env_init(&c->env);
    event_set_log_callback(quiet_libevent);
    rc = run(argc, argv, c);
    azc_client_free(c->client);
    ctl_env_clear(&c->env);
    OPENSSL_cleanse(c->token, sizeof c->token);
    free(c);
    if (fflush(stdout) != 0 && rc == CTL_OK)
        rc = CTL_FAIL;
    return rc;
}
