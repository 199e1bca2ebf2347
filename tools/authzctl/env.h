/*
 * Where authzctl's endpoints and token come from, in this order: flags,
 * the process environment, then the env file of a local cluster
 * (`tools/local-cluster env` prints the same lines to eval: NAME=value or
 * NAME='value'), so authzctl works after `eval "$(tools/local-cluster
 * env)"` whether or not the variables were exported. The file is
 * --env-file, else $AUTHZ_RUN_DIR/env, else the checkout's .run/env.
 *
 * Names: AUTHZ_REGIONS (comma-separated), and per region R (upper case)
 * IDENTITY_URL_R, AUTHZ_URL_R, REPLICATOR_URL_R; AUTHZ_TOKEN (or
 * AUTHZ_ADMIN_TOKEN) for the bearer token.
 */
#ifndef CTL_ENV_H
#define CTL_ENV_H

#include <stddef.h>

#define CTL_ENV_MAX 256
#define CTL_MAX_REGIONS 16

typedef struct ctl_env {
    char *keys[CTL_ENV_MAX];
    char *vals[CTL_ENV_MAX];
    size_t n;
    char path[512];               /* the file read, "" when none */
    /* Lookups of the process environment, getenv unless a test sets it. */
    const char *(*get)(void *arg, const char *name);
    void *get_arg;
} ctl_env;

/* An empty env reading the process environment. */
void ctl_env_init(ctl_env *e);

/* Reads an env file. 0; -1 with a message in err[len] when it cannot be
 * read or a line is malformed (the line's number is named). */
int ctl_env_load(ctl_env *e, const char *path, char *err, size_t len);

void ctl_env_clear(ctl_env *e);

/* Parses one line of an env file: NAME=value or NAME='value' with '\''
 * for a quote. Returns 1 with *name and *value malloc'ed, 0 for a blank
 * line or a comment, -1 when malformed or out of memory. */
int ctl_env_parse_line(const char *line, char **name, char **value);

/* The value of `name`: the process environment first, then the file;
 * NULL when neither has a non-empty one. */
const char *ctl_env_get(const ctl_env *e, const char *name);

/* The variable name of a service URL of a region: "IDENTITY", "eu" ->
 * "IDENTITY_URL_EU" into buf[len]; 0, or -1 when it does not fit. */
int ctl_env_url_name(const char *service, const char *region, char *buf, size_t len);

/* Splits a comma-separated region list into out[max] (copied into
 * store[storelen]); returns how many, or -1 when a name is not a region
 * name, the list is empty, names repeat or there are more than max. */
int ctl_regions_split(const char *list, char *store, size_t storelen, const char **out,
                      size_t max);

#endif
