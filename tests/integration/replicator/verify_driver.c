/*
 * Test driver for replicator/verify.c: `rp-verify-driver verify --config
 * FILE` runs rp_verify_main as `authz-replicator verify` does, with the
 * same command line and AUTHZ_* overrides, so the verify tests do not
 * wait for the replicator binary. Exit status: rp_verify_main's (2 for a
 * bad command line or a configuration that cannot be loaded).
 */
#include <stdio.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/config.h"
#include "common/log.h"
#include "replicator/verify.h"

extern char **environ;

static const azc_cli_command COMMANDS[] = {
    {"verify", "compare every region's policy rows up to their common watermark"},
};

int main(int argc, char **argv)
{
    azc_cli cli;
    azc_config *cfg = NULL;
    azc_log *log;
    azc_err e;
    int rc;

    rc = azc_cli_parse_commands(argc, argv, "rp-verify-driver", "runs rp_verify_main", COMMANDS,
                                1, &cli, stdout, stderr);
    if (rc != AZC_CLI_RUN)
        return rc == AZC_CLI_EXIT ? 0 : 2;
    if (cli.command == NULL) {
        fprintf(stderr, "rp-verify-driver: the only command is verify\n");
        return 2;
    }
    log = azc_log_new("replicator", AZC_LOG_INFO, stderr);
    if (log == NULL) {
        fprintf(stderr, "rp-verify-driver: out of memory\n");
        return 1;
    }
    azc_err_clear(&e);
    if (azc_config_load(&cfg, cli.config_path, environ, &e) != AZC_OK) {
        fprintf(stderr, "rp-verify-driver verify: %s\n", e.msg);
        azc_log_free(log);
        return 2;
    }
    rc = rp_verify_main(cfg, log, &e);
    if (e.msg[0] != '\0')
        fprintf(stderr, "rp-verify-driver verify: %s\n", e.msg);
    azc_config_free(cfg);
    azc_log_free(log);
    return rc;
}
