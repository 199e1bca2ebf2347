/*
 * Sub-commands of the shared command line (common/cli.c): a binary with a
 * command table accepts one bare command word anywhere among the options,
 * lists its commands in --help, and refuses an unknown or repeated word;
 * a binary without one refuses every bare word as before.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/cli.h"

static const azc_cli_command CMDS[] = {
    { "resync", "rebuild the topic" },
    { "check", "look only" },
};

/* Runs the parser; *text gets stdout after help, stderr after an error. */
static int parse(int argc, char **argv, size_t ncmds, azc_cli *cli, char **text)
{
    char *ob = NULL, *eb = NULL;
    size_t ol = 0, el = 0;
    FILE *o = open_memstream(&ob, &ol), *er = open_memstream(&eb, &el);
    int rc = azc_cli_parse_commands(argc, argv, "authz-test", "a test", CMDS, ncmds, cli, o, er);

    fclose(o);
    fclose(er);
    *text = rc == AZC_EINVAL ? eb : ob;
    free(rc == AZC_EINVAL ? ob : eb);
    return rc;
}

static void test_command_and_config(void **state)
{
    azc_cli cli;
    char *text;
    (void)state;

    {
        char *argv[] = { "p", "resync", "--config", "a.json", NULL };
        assert_int_equal(parse(4, argv, 2, &cli, &text), AZC_CLI_RUN);
        assert_string_equal(cli.command, "resync");
        assert_string_equal(cli.config_path, "a.json");
        free(text);
    }
    {
        char *argv[] = { "p", "--config=b.json", "check", NULL };
        assert_int_equal(parse(3, argv, 2, &cli, &text), AZC_CLI_RUN);
        assert_string_equal(cli.command, "check");
        assert_string_equal(cli.config_path, "b.json");
        free(text);
    }
    {
        char *argv[] = { "p", "--config", "c.json", NULL };
        assert_int_equal(parse(3, argv, 2, &cli, &text), AZC_CLI_RUN);
        assert_null(cli.command);
        free(text);
    }
}

static void test_refusals_and_help(void **state)
{
    azc_cli cli;
    char *text;
    (void)state;

    {
        char *argv[] = { "p", "resync", "resync", NULL };
        assert_int_equal(parse(3, argv, 2, &cli, &text), AZC_EINVAL);
        assert_non_null(strstr(text, "unknown argument \"resync\""));
        free(text);
    }
    {
        char *argv[] = { "p", "rebuild", NULL };
        assert_int_equal(parse(2, argv, 2, &cli, &text), AZC_EINVAL);
        assert_non_null(strstr(text, "unknown argument \"rebuild\""));
        free(text);
    }
    {
        /* Without a table a command word is just an unknown argument. */
        char *argv[] = { "p", "resync", NULL };
        assert_int_equal(parse(2, argv, 0, &cli, &text), AZC_EINVAL);
        free(text);
    }
    {
        char *argv[] = { "p", "--help", NULL };
        assert_int_equal(parse(2, argv, 2, &cli, &text), AZC_CLI_EXIT);
        assert_non_null(strstr(text, "usage: authz-test [COMMAND] [--config FILE]"));
        assert_non_null(strstr(text, "resync"));
        assert_non_null(strstr(text, "rebuild the topic"));
        assert_non_null(strstr(text, "check"));
        free(text);
    }
    {
        char *argv[] = { "p", "--help", NULL };
        assert_int_equal(parse(2, argv, 0, &cli, &text), AZC_CLI_EXIT);
        assert_null(strstr(text, "COMMAND"));
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_and_config),
        cmocka_unit_test(test_refusals_and_help),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
