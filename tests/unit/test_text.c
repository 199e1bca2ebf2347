/* Unit tests: cutting text on UTF-8 boundaries (common/text.h) and the
 * callers that cut text into fixed buffers (error records, log lines, the
 * event decoder's messages). Every result must be accepted by jansson. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/err.h"
#include "common/event.h"
#include "common/log.h"
#include "common/text.h"

/* One character of each encoded length. */
static const char *const seqs[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };

static void assert_json_ok(const char *s)
{
    json_t *v = json_string(s);

    assert_non_null(v);
    json_decref(v);
    assert_true(azc_utf8_valid(s, strlen(s)));
}

/* "ab" + the character + "cd": every cut position, including each byte
 * inside the character, gives the longest whole-character prefix. */
static void test_prefix_every_position(void **state)
{
    size_t i, max;
    (void)state;

    for (i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        char s[16];
        size_t n = strlen(seqs[i]), len;

        len = (size_t)snprintf(s, sizeof s, "ab%scd", seqs[i]);
        for (max = 0; max <= len + 1; max++) {
            size_t want;

            if (max <= 2)
                want = max;
            else if (max < 2 + n)
                want = 2;                   /* inside the character: before it */
            else if (max <= len)
                want = max;
            else
                want = len;
            assert_int_equal(azc_utf8_prefix(s, len, max), want);
            assert_int_equal(azc_utf8_cut(s, max), want);
        }
    }
    assert_int_equal(azc_utf8_cut(NULL, 10), 0);
}

/* azc_text_fmt into every buffer size: always valid, always a prefix of the
 * full text, as long as possible, and flagged as cut when it is one. */
static void test_fmt_every_size(void **state)
{
    size_t i, size;
    (void)state;

    for (i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        char full[64], buf[64];
        size_t len;

        len = (size_t)snprintf(full, sizeof full, "x%s%sy", seqs[i], seqs[i]);
        for (size = 1; size <= len + 1; size++) {
            int cut = azc_text_fmt(buf, size, "x%s%sy", seqs[i], seqs[i]);

            assert_json_ok(buf);
            assert_true(strlen(buf) < size);
            assert_memory_equal(buf, full, strlen(buf));
            assert_int_equal(strlen(buf), azc_utf8_prefix(full, len, size - 1));
            assert_int_equal(cut, size <= len);
        }
    }
    assert_int_equal(azc_text_fmt(NULL, 0, "%s", "x"), 0);
}

static void test_300_e_acute(void **state)
{
    char s[601], msg[512];
    azc_err e;
    size_t i;
    (void)state;

    for (i = 0; i < 300; i++)
        memcpy(s + 2 * i, "\xc3\xa9", 2);
    s[600] = '\0';
    assert_true(azc_utf8_valid(s, 600));
    assert_int_equal(azc_utf8_cut(s, 64), 64);
    assert_int_equal(azc_utf8_cut(s, 63), 62);
    assert_int_equal(azc_utf8_cut(s + 1, 64), 1 + 62);   /* stray continuation first */

    /* The error record: 256 bytes, so an odd prefix must be dropped. */
    assert_int_equal(azc_err_set(&e, AZC_EINVAL, "unknown field \"%s\"", s), AZC_EINVAL);
    assert_json_ok(e.msg);
    assert_true(strlen(e.msg) >= AZC_ERRMSG_MAX - 2);
    assert_int_equal(strncmp(e.msg, "unknown field \"\xc3\xa9", 17), 0);

    assert_int_equal(azc_text_fmt(msg, sizeof msg, "a%s", s), 1);
    assert_json_ok(msg);
    assert_int_equal(strlen(msg), 511);   /* "a" + 255 whole characters */

    /* "a" + "é"*20 cut like the old %.40s: 39 bytes, not 40. */
    assert_int_equal(azc_utf8_cut("a\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                  "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 40),
                     39);
}

static void test_invalid_input(void **state)
{
    static const struct {
        const char *in, *scrubbed;
    } cases[] = {
        { "ok", "ok" },
        { "\xff\xfe", "??" },
        { "\xc3(", "?(" },                    /* lead byte without continuation */
        { "\x80x", "?x" },                    /* stray continuation */
        { "\xc0\xaf", "??" },                 /* overlong '/' */
        { "\xe0\x80\xaf", "???" },            /* overlong, 3 bytes */
        { "\xed\xa0\x80", "???" },            /* surrogate U+D800 */
        { "\xf4\x90\x80\x80", "????" },       /* above U+10FFFF */
        { "\xf5\x80\x80\x80", "????" },
        { "ab\xe2\x82", "ab??" },             /* cut sequence at the end */
        { "\xf0\x9f\x98\x80\xe2\x82\xac", "\xf0\x9f\x98\x80\xe2\x82\xac" },
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32], msg[32];
        size_t n = strlen(cases[i].in);

        memcpy(buf, cases[i].in, n + 1);
        assert_int_equal(azc_utf8_valid(buf, n), strcmp(cases[i].in, cases[i].scrubbed) == 0);
        azc_utf8_scrub(buf, n);
        assert_string_equal(buf, cases[i].scrubbed);
        assert_json_ok(buf);
        /* Invalid bytes are one-byte units: any cut around them is fine. */
        assert_true(azc_utf8_prefix(cases[i].in, n, n) == n);
        assert_int_equal(azc_text_fmt(msg, sizeof msg, "[%s]", cases[i].in), 0);
        assert_json_ok(msg);
    }
    /* A NUL inside a counted buffer is not valid text either. */
    assert_false(azc_utf8_valid("a\0b", 3));
}

/* Error records and log lines quoting a header's raw bytes still encode. */
static void test_err_and_log_invalid(void **state)
{
    char big[3001], *out = NULL;
    size_t len = 0, i;
    FILE *f;
    azc_log *lg;
    azc_err e;
    json_t *j;
    (void)state;

    assert_int_equal(azc_err_set(&e, AZC_EINVAL, "bad header \"%s\"", "\xff\xc3"), AZC_EINVAL);
    assert_string_equal(e.msg, "bad header \"??\"");

    for (i = 0; i < 1500; i++)
        memcpy(big + 2 * i, "\xe2\x82", 2);   /* never a whole character */
    big[3000] = '\0';
    f = open_memstream(&out, &len);
    assert_non_null(f);
    lg = azc_log_new("unit", AZC_LOG_DEBUG, f);
    assert_non_null(lg);
    azc_logf(lg, AZC_LOG_INFO, "x%s", big + 1000);
    azc_log_free(lg);
    fclose(f);
    j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_int_equal(strncmp(json_string_value(json_object_get(j, "msg")), "x???", 4), 0);
    json_decref(j);
    free(out);
}

/* The decoder's message for an unknown member of 300 'é' (and of 'a'*63 +
 * 'é', where a byte cut at 64 splits the character) stays valid: the dead
 * letter's reason column and log line depend on it. */
static void test_event_unknown_member(void **state)
{
    char name[700], doc[800];
    azc_event ev;
    azc_err e;
    size_t i, k;
    (void)state;

    for (k = 0; k < 2; k++) {
        size_t n = 0;
        if (k == 0) {
            for (i = 0; i < 300; i++, n += 2)
                memcpy(name + n, "\xc3\xa9", 2);
        } else {
            memset(name, 'a', 63);
            n = 63;
            for (i = 0; i < 10; i++, n += 2)
                memcpy(name + n, "\xc3\xa9", 2);
        }
        name[n] = '\0';
        snprintf(doc, sizeof doc, "{\"%s\": 1}", name);
        memset(&ev, 0, sizeof ev);
        assert_int_equal(azc_event_decode(doc, strlen(doc), &ev, &e), AZC_EINVAL);
        assert_non_null(strstr(e.msg, "unknown member"));
        assert_json_ok(e.msg);
        azc_event_clear(&ev);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_every_position),
        cmocka_unit_test(test_fmt_every_size),
        cmocka_unit_test(test_300_e_acute),
        cmocka_unit_test(test_invalid_input),
        cmocka_unit_test(test_err_and_log_invalid),
        cmocka_unit_test(test_event_unknown_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
