/*
 * The command line every service binary shares (DESIGN section 7):
 *   PROG [COMMAND] [--config FILE] [--help] [--version]
 * COMMAND is one of the binary's sub-commands (e.g. `authz-identity
 * resync`), absent to run the service. Anything else on the command line
 * is an error; settings live in the configuration file and AUTHZ_*
 * environment variables, not in flags.
 */
#ifndef AZC_CLI_H
#define AZC_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "common/err.h"

typedef struct azc_cli {
    const char *config_path;   /* borrowed from argv; NULL if not given */
    const char *command;       /* name from the command table; NULL if none given */
} azc_cli;

/* A sub-command: its name on the command line and one line for --help. */
typedef struct azc_cli_command {
    const char *name;
    const char *summary;
} azc_cli_command;

enum { AZC_CLI_RUN = 0, AZC_CLI_EXIT = 1 };

/*
 * Parses argv. Returns AZC_CLI_RUN to go on, AZC_CLI_EXIT after printing
 * --help or --version on `out` (exit 0), or AZC_EINVAL after printing the
 * error and the usage on `err` (exit 2). `summary` is one line saying what
 * the program is.
 */
int azc_cli_parse(int argc, char *const *argv, const char *prog, const char *summary,
                  azc_cli *cli, FILE *out, FILE *err) AZC_WARN_UNUSED;

/* The same for a binary with sub-commands: a bare word naming one of the
 * `ncmds` entries of `cmds` sets cli->command (at most one; --help lists
 * them). */
int azc_cli_parse_commands(int argc, char *const *argv, const char *prog, const char *summary,
                           const azc_cli_command *cmds, size_t ncmds, azc_cli *cli, FILE *out,
                           FILE *err) AZC_WARN_UNUSED;

#endif
