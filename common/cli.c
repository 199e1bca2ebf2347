/* Shared command-line parsing for the service binaries; see cli.h. */
#include "common/cli.h"

#include <string.h>

static void usage(FILE *f, const char *prog, const char *summary)
{
    fprintf(f,
            "%s: %s\n"
            "\n"
            "usage: %s [--config FILE] [--help] [--version]\n"
            "\n"
            "  -c, --config FILE  JSON configuration file; AUTHZ_<SECTION>_<KEY>\n"
            "                     environment variables override its values\n"
            "  -h, --help         show this help and exit\n"
            "  -V, --version      show the version and exit\n",
            prog, summary, prog);
}

int azc_cli_parse(int argc, char *const *argv, const char *prog, const char *summary,
                  azc_cli *cli, FILE *out, FILE *err)
{
    int i;

    cli->config_path = NULL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(out, prog, summary);
            return AZC_CLI_EXIT;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            fprintf(out, "%s %s\n", prog, AUTHZ_VERSION);
            return AZC_CLI_EXIT;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc || argv[i + 1][0] == '\0') {
                fprintf(err, "%s: option %s needs a file name\n", prog, a);
                usage(err, prog, summary);
                return AZC_EINVAL;
            }
            cli->config_path = argv[++i];
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0 && a[9] != '\0') {
            cli->config_path = a + 9;
            continue;
        }
        fprintf(err, "%s: unknown argument \"%s\"\n", prog, a);
        usage(err, prog, summary);
        return AZC_EINVAL;
    }
    return AZC_CLI_RUN;
}
