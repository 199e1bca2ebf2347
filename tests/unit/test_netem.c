/*
 * Unit tests of authz-netem-proxy's testable core (tools/netem.h): the
 * command line, the control commands, the status line and the delay queue,
 * driven with a fake clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <jansson.h>

#include "tools/netem.h"

/* ---- command line -------------------------------------------------------- */

static int parse(nm_opts *o, char *out, size_t outsz, char *err, size_t errsz, int argc, ...)
{
    char *argv[16];
    va_list ap;
    FILE *fo, *fe;
    int i, rc;

    assert_true(argc < 16);
    argv[0] = "authz-netem-proxy";
    va_start(ap, argc);
    for (i = 1; i <= argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    memset(out, 0, outsz);
    memset(err, 0, errsz);
    fo = fmemopen(out, outsz - 1, "w");
    fe = fmemopen(err, errsz - 1, "w");
    assert_non_null(fo);
    assert_non_null(fe);
    rc = nm_opts_parse(argc + 1, argv, o, fo, fe);
    fclose(fo);
    fclose(fe);
    return rc;
}

static void test_opts_ok(void **state)
{
    char out[4096], err[1024];
    nm_opts o;

    (void)state;
    assert_int_equal(parse(&o, out, sizeof out, err, sizeof err, 8, "--listen", "127.0.0.1:9001",
                           "--target", "127.0.0.1:9002", "--delay-ms", "40", "--control",
                           "127.0.0.1:9003"),
                     NM_RUN);
    assert_int_equal(ntohs(o.listen.sin_port), 9001);
    assert_int_equal(ntohs(o.target.sin_port), 9002);
    assert_int_equal(ntohs(o.control.sin_port), 9003);
    assert_int_equal(o.listen.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    assert_true(o.has_control);
    assert_int_equal(o.delay_ms, 40);
    assert_string_equal(o.log_level, "info");
    assert_null(o.label);

    assert_int_equal(parse(&o, out, sizeof out, err, sizeof err, 4, "--listen", "127.0.0.1:1",
                           "--target", "10.0.0.1:65535"),
                     NM_RUN);
    assert_false(o.has_control);
    assert_int_equal(o.delay_ms, 0);

    assert_int_equal(parse(&o, out, sizeof out, err, sizeof err, 6, "--listen", "127.0.0.1:1",
                           "--target", "127.0.0.1:2", "--label", "run/proxy-us-eu"),
                     NM_RUN);
    assert_string_equal(o.label, "run/proxy-us-eu");
}

static void test_opts_help_version(void **state)
{
    char out[4096], err[1024];
    nm_opts o;

    (void)state;
    assert_int_equal(parse(&o, out, sizeof out, err, sizeof err, 1, "--help"), NM_EXIT);
    assert_non_null(strstr(out, "--delay-ms"));
    assert_non_null(strstr(out, "blackhole"));
    assert_int_equal(parse(&o, out, sizeof out, err, sizeof err, 1, "-V"), NM_EXIT);
    assert_non_null(strstr(out, AUTHZ_VERSION));
    assert_string_equal(err, "");
}

static void test_opts_bad(void **state)
{
    static const struct {
        const char *args[7];    /* NULL-terminated */
        const char *want;       /* fragment of the message */
    } cases[] = {
        {{"--listen", "127.0.0.1:9001"}, "required"},
        {{"--target", "127.0.0.1:9001"}, "required"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9001"}, "same address"},
        {{"--listen", "localhost:9001", "--target", "127.0.0.1:9002"}, "numeric IPv4"},
        {{"--listen", "127.0.0.1", "--target", "127.0.0.1:9002"}, "HOST:PORT"},
        {{"--listen", "127.0.0.1:0", "--target", "127.0.0.1:9002"}, "1 to 65535"},
        {{"--listen", "127.0.0.1:65536", "--target", "127.0.0.1:9002"}, "1 to 65535"},
        {{"--listen", "127.0.0.1:9x", "--target", "127.0.0.1:9002"}, "1 to 65535"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--delay-ms", "-1"}, "0 to"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--delay-ms", "600001"}, "0 to"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--delay-ms", "4 0"}, "0 to"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--delay-ms"}, "needs a value"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--delay-ms", ""}, "needs a value"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--bogus"}, "unknown argument"},
        {{"--listen", "127.0.0.1:9001", "--listen", "127.0.0.1:9003"}, "given twice"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--control", "127.0.0.1:9001"},
         "same address"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--log-level", "loud"},
         "debug, info"},
        {{"--listen", "127.0.0.1:9001", "--target", "127.0.0.1:9002", "--label", "a", "--label"},
         "needs a value"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[8], out[4096], err[1024];
        FILE *fo, *fe;
        int argc = 1, rc;
        size_t j;
        nm_opts o;

        argv[0] = "authz-netem-proxy";
        for (j = 0; j < 7 && cases[i].args[j] != NULL; j++)
            argv[argc++] = (char *)cases[i].args[j];
        memset(out, 0, sizeof out);
        memset(err, 0, sizeof err);
        fo = fmemopen(out, sizeof out - 1, "w");
        fe = fmemopen(err, sizeof err - 1, "w");
        assert_non_null(fo);
        assert_non_null(fe);
        rc = nm_opts_parse(argc, argv, &o, fo, fe);
        fclose(fo);
        fclose(fe);
        if (rc != AZC_EINVAL || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: rc %d, stderr \"%s\", wanted \"%s\"", i, rc, err, cases[i].want);
        assert_string_equal(out, "");
        assert_non_null(strstr(err, "--help"));
    }
}

/* ---- control commands ---------------------------------------------------- */

static void test_ctl_parse(void **state)
{
    nm_ctl c;
    azc_err e;

    (void)state;
    assert_int_equal(nm_ctl_parse("pass", &c, &e), AZC_OK);
    assert_int_equal(c.cmd, NM_CTL_PASS);
    assert_false(c.has_delay);
    assert_int_equal(nm_ctl_parse("  heal\r", &c, &e), AZC_OK);
    assert_int_equal(c.cmd, NM_CTL_PASS);
    assert_int_equal(nm_ctl_parse("pass 25", &c, &e), AZC_OK);
    assert_true(c.has_delay);
    assert_int_equal(c.delay_ms, 25);
    assert_int_equal(nm_ctl_parse("delay 40", &c, &e), AZC_OK);
    assert_int_equal(c.cmd, NM_CTL_DELAY);
    assert_int_equal(c.delay_ms, 40);
    assert_int_equal(nm_ctl_parse("delay\t0", &c, &e), AZC_OK);
    assert_int_equal(c.delay_ms, 0);
    assert_int_equal(nm_ctl_parse("cut", &c, &e), AZC_OK);
    assert_int_equal(c.cmd, NM_CTL_CUT);
    assert_int_equal(nm_ctl_parse("blackhole", &c, &e), AZC_OK);
    assert_int_equal(c.cmd, NM_CTL_BLACKHOLE);
    assert_int_equal(nm_ctl_parse("status", &c, &e), AZC_OK);
    assert_int_equal(c.cmd, NM_CTL_STATUS);

    assert_int_equal(nm_ctl_parse("", &c, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "empty"));
    assert_int_equal(nm_ctl_parse("   ", &c, &e), AZC_EINVAL);
    assert_int_equal(nm_ctl_parse("delay", &c, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "delay MS"));
    assert_int_equal(nm_ctl_parse("delay -5", &c, &e), AZC_EINVAL);
    assert_int_equal(nm_ctl_parse("delay 700000", &c, &e), AZC_EINVAL);
    assert_int_equal(nm_ctl_parse("delay 40 50", &c, &e), AZC_EINVAL);
    assert_int_equal(nm_ctl_parse("cut now", &c, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "no argument"));
    assert_int_equal(nm_ctl_parse("CUT", &c, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "unknown command"));
    assert_int_equal(nm_ctl_parse("a b c d", &c, &e), AZC_EINVAL);
    {
        char longline[200];

        memset(longline, 'x', sizeof longline - 1);
        longline[sizeof longline - 1] = '\0';
        assert_int_equal(nm_ctl_parse(longline, &c, &e), AZC_EINVAL);
        assert_non_null(strstr(e.msg, "too long"));
    }
}

static void test_status_line(void **state)
{
    nm_stats s = {.mode = NM_MODE_BLACKHOLE, .delay_ms = 40, .connections = 3, .accepted = 7,
                  .refused = 2, .bytes_up = 100, .bytes_down = 5000000000ull};
    char *line;
    json_t *o;
    json_error_t je;
    size_t len;

    (void)state;
    line = nm_status_line(&s);
    assert_non_null(line);
    len = strlen(line);
    assert_true(len > 1 && line[len - 1] == '\n');
    assert_ptr_equal(strchr(line, '\n'), line + len - 1);
    o = json_loads(line, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "mode")), "blackhole");
    assert_int_equal(json_integer_value(json_object_get(o, "delay_ms")), 40);
    assert_int_equal(json_integer_value(json_object_get(o, "connections")), 3);
    assert_int_equal(json_integer_value(json_object_get(o, "accepted")), 7);
    assert_int_equal(json_integer_value(json_object_get(o, "refused")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "bytes_up")), 100);
    assert_true(json_integer_value(json_object_get(o, "bytes_down")) == 5000000000ll);
    json_decref(o);
    free(line);
    assert_string_equal(nm_mode_name(NM_MODE_PASS), "pass");
    assert_string_equal(nm_mode_name(NM_MODE_CUT), "cut");
}

/* ---- delay queue --------------------------------------------------------- */

typedef struct sink_buf {
    unsigned char data[256];
    size_t len;
    int fail;
} sink_buf;

static int sink(void *arg, const void *data, size_t len)
{
    sink_buf *b = arg;

    if (b->fail)
        return AZC_ENOMEM;
    assert_true(b->len + len <= sizeof b->data);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return AZC_OK;
}

static void test_dq_release_at_due_time(void **state)
{
    nm_dq q;
    sink_buf b = {0};
    uint64_t due;
    size_t n;

    (void)state;
    nm_dq_init(&q);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_ENOTFOUND);
    assert_int_equal(nm_dq_push(&q, 1000, 40000, "abc", 3), AZC_OK);
    assert_int_equal(nm_dq_push(&q, 5000, 40000, "de", 2), AZC_OK);
    assert_int_equal(q.bytes, 5);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_OK);
    assert_int_equal(due, 41000);
    /* Nothing before its time. */
    assert_int_equal(nm_dq_release(&q, 40999, sink, &b, &n), AZC_OK);
    assert_int_equal(n, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(nm_dq_release(&q, 41000, sink, &b, &n), AZC_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(b.data, "abc", 3);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_OK);
    assert_int_equal(due, 45000);
    assert_int_equal(nm_dq_release(&q, 100000, sink, &b, &n), AZC_OK);
    assert_int_equal(n, 2);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "abcde", 5);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_ENOTFOUND);
    /* An empty push is a no-op. */
    assert_int_equal(nm_dq_push(&q, 0, 0, "", 0), AZC_OK);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_ENOTFOUND);
    nm_dq_clear(&q);
}

static void test_dq_lowered_delay_keeps_order(void **state)
{
    nm_dq q;
    sink_buf b = {0};
    uint64_t due;
    size_t n;

    (void)state;
    nm_dq_init(&q);
    assert_int_equal(nm_dq_push(&q, 0, 100000, "first", 5), AZC_OK);
    /* The delay drops to 0 while "first" waits: "second" must not pass it. */
    assert_int_equal(nm_dq_push(&q, 10000, 0, "second", 6), AZC_OK);
    assert_int_equal(nm_dq_release(&q, 50000, sink, &b, &n), AZC_OK);
    assert_int_equal(n, 0);
    assert_int_equal(nm_dq_release(&q, 100000, sink, &b, &n), AZC_OK);
    assert_int_equal(n, 11);
    assert_memory_equal(b.data, "firstsecond", 11);
    /* Once the queue is empty, a short delay applies again at once. */
    assert_int_equal(nm_dq_push(&q, 200000, 0, "x", 1), AZC_OK);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_OK);
    assert_int_equal(due, 200000);
    nm_dq_clear(&q);
}

static void test_dq_sink_failure_keeps_bytes(void **state)
{
    nm_dq q;
    sink_buf b = {0};
    size_t n;

    (void)state;
    nm_dq_init(&q);
    assert_int_equal(nm_dq_push(&q, 0, 0, "ab", 2), AZC_OK);
    assert_int_equal(nm_dq_push(&q, 0, 0, "cd", 2), AZC_OK);
    b.fail = 1;
    assert_int_equal(nm_dq_release(&q, 10, sink, &b, &n), AZC_ENOMEM);
    assert_int_equal(n, 0);
    assert_int_equal(q.bytes, 4);
    b.fail = 0;
    assert_int_equal(nm_dq_release(&q, 10, sink, &b, &n), AZC_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(b.data, "abcd", 4);
    nm_dq_clear(&q);
}

static void test_dq_clear_frees_all(void **state)
{
    nm_dq q;
    unsigned char big[70000];
    uint64_t due;
    int i;

    (void)state;
    memset(big, 7, sizeof big);
    nm_dq_init(&q);
    for (i = 0; i < 100; i++)
        assert_int_equal(nm_dq_push(&q, (uint64_t)i, 1000, big, sizeof big), AZC_OK);
    assert_int_equal(q.bytes, 100 * sizeof big);
    nm_dq_clear(&q);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_ENOTFOUND);
    /* The queue is usable after a clear (a connection reset mid-stream). */
    assert_int_equal(nm_dq_push(&q, 5, 0, "z", 1), AZC_OK);
    assert_int_equal(nm_dq_next_due(&q, &due), AZC_OK);
    assert_int_equal(due, 5);
    nm_dq_clear(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opts_ok),
        cmocka_unit_test(test_opts_help_version),
        cmocka_unit_test(test_opts_bad),
        cmocka_unit_test(test_ctl_parse),
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_dq_release_at_due_time),
        cmocka_unit_test(test_dq_lowered_delay_keeps_order),
        cmocka_unit_test(test_dq_sink_failure_keeps_bytes),
        cmocka_unit_test(test_dq_clear_frees_all),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
