/*
 * authzctl's command line, without side effects (tests/unit/test_authzctl.c):
 * the command table lookup and the flags of one command.
 *
 *   authzctl [GLOBAL FLAGS] COMMAND [SUBCOMMAND] [ARGS] [FLAGS]
 *
 * Flags may come anywhere, as `--name value` or `--name=value`; `--` ends
 * them. Each command declares its flags; a flag it does not declare is a
 * usage error naming the command, never ignored.
 */
#ifndef CTL_ARGS_H
#define CTL_ARGS_H

#include <stddef.h>

#define CTL_MAX_ARGS 64

typedef struct ctl_flag {
    const char *name;        /* without the dashes: "limit" */
    const char *value;       /* the value's name in --help ("N"), NULL for a switch */
    const char *help;
} ctl_flag;

typedef struct ctl_args {
    const char *pos[CTL_MAX_ARGS];     /* positional words after the command's; borrowed */
    size_t npos;
    struct {
        const char *name;              /* the flag's declared name */
        const char *value;             /* borrowed from argv; "" for a switch */
    } set[CTL_MAX_ARGS];
    size_t nset;
} ctl_args;

/*
 * Parses argv[from..argc) against `nsets` flag tables (global and the
 * command's), skipping the `nskip` indices in `skip` (the command words).
 * Returns 0, or -1 with a message in err[len] (unknown flag, missing
 * value, a switch given a value, too many arguments).
 */
int ctl_args_parse(int argc, char *const *argv, int from, const int *skip, size_t nskip,
                   const ctl_flag *const *sets, const size_t *nflags, size_t nsets, ctl_args *out,
                   char *err, size_t len);

/* The last value of flag `name`, or NULL when not given. */
const char *ctl_arg(const ctl_args *a, const char *name);

/* 1 if flag `name` was given. */
int ctl_arg_has(const ctl_args *a, const char *name);

/* Every value of a repeatable flag, in order; returns how many (at most max). */
size_t ctl_arg_all(const ctl_args *a, const char *name, const char **out, size_t max);

/*
 * Finds the command words: the first one or two words of argv that are
 * not flags (a flag of `global` with a value skips its value too). Writes
 * their indices into idx[2] and returns how many there are (0-2).
 */
size_t ctl_args_words(int argc, char *const *argv, const ctl_flag *global, size_t nglobal,
                      int idx[2]);

/* Parses a positive decimal integer up to max; 0 or -1. */
int ctl_parse_long(const char *s, long max, long *out);

/* Parses seconds ("30", "1.5") into milliseconds up to max_ms; 0 or -1. */
int ctl_parse_secs(const char *s, long max_ms, long *out_ms);

#endif
