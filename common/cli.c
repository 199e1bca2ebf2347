/* Shared command-line parsing for the service binaries; see cli.h. */
#include "common/cli.h"

#include <string.h>

static void usage(FILE *f, const char *prog, const char *summary, const azc_cli_command *cmds,
                  size_t ncmds)
{
    size_t i;

    fprintf(f, "%s: %s\n\n", prog, summary);
    if (ncmds == 0) {
        fprintf(f, "usage: %s [--config FILE] [--help] [--version]\n", prog);
    } else {
        fprintf(f, "usage: %s [COMMAND] [--config FILE] [--help] [--version]\n"
                   "\n"
                   "Without a COMMAND it runs the service. Commands:\n", prog);
        for (i = 0; i < ncmds; i++)
            fprintf(f, "  %-18s %s\n", cmds[i].name, cmds[i].summary);
    }
    fprintf(f,
            "\n"
            "  -c, --config FILE  JSON configuration file; AUTHZ_<SECTION>_<KEY>\n"
            "                     environment variables override its values\n"
            "  -h, --help         show this help and exit\n"
            "  -V, --version      show the version and exit\n");
}

int azc_cli_parse_commands(int argc, char *const *argv, const char *prog, const char *summary,
                           const azc_cli_command *cmds, size_t ncmds, azc_cli *cli, FILE *out,
                           FILE *err)
{
    size_t j;
    int i;

    cli->config_path = NULL;
    cli->command = NULL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(out, prog, summary, cmds, ncmds);
            return AZC_CLI_EXIT;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            fprintf(out, "%s %s\n", prog, AUTHZ_VERSION);
            return AZC_CLI_EXIT;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                fprintf(err, "%s: option %s needs a file name\n", prog, a);
                usage(err, prog, summary, cmds, ncmds);
                return AZC_EINVAL;
            }
            cli->config_path = argv[++i];
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0 && a[9] != '\0') {
            cli->config_path = a + 9;
            continue;
        }
        /* A command is a bare word, given at most once, anywhere. */
        for (j = 0; j < ncmds && a[0] != '-'; j++) {
            if (strcmp(a, cmds[j].name) == 0)
                break;
        }
        if (j < ncmds && a[0] != '-' && cli->command == NULL) {
            cli->command = cmds[j].name;
            continue;
        }
        fprintf(err, "%s: unknown argument \"%s\"\n", prog, a);
        usage(err, prog, summary, cmds, ncmds);
        return AZC_EINVAL;
    }
    return AZC_CLI_RUN;
}

int azc_cli_parse(int argc, char *const *argv, const char *prog, const char *summary,
                  azc_cli *cli, FILE *out, FILE *err)
{
    return azc_cli_parse_commands(argc, argv, prog, summary, NULL, 0, cli, out, err);
}
