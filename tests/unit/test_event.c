/* Unit tests: the identity event envelope codec. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/event.h"

#define ID "123e4567-e89b-42d3-a456-426614174000"

static void test_round_trip_all_types(void **state)
{
    int t;
    (void)state;

    for (t = 0; t < AZC_EV__COUNT; t++) {
        azc_event ev = { 0 }, back;
        char *text = NULL;
        size_t len = 0;
        azc_event_type parsed;
        azc_err e;

        ev.version = AZC_EVENT_VERSION;
        memcpy(ev.id, ID, sizeof ID);
        ev.type = (azc_event_type)t;
        strcpy(ev.origin, "eu");
        ev.epoch = 3;
        ev.seq = 42;
        ev.hlc = ((uint64_t)1763800000000ULL << 16) | 7;
        ev.data = json_pack("{s:s, s:[s,s]}", "team_id", "t1", "perms", "doc:read", "doc:*");
        assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_OK);
        assert_int_equal(strlen(text), len);
        assert_int_equal(azc_event_decode(text, len, &back, &e), AZC_OK);
        assert_int_equal(back.version, 1);
        assert_string_equal(back.id, ID);
        assert_int_equal(back.type, t);
        assert_string_equal(back.origin, "eu");
        assert_int_equal(back.epoch, 3);
        assert_int_equal(back.seq, 42);
        assert_int_equal(back.hlc, ev.hlc);
        assert_true(json_equal(back.data, ev.data));
        assert_int_equal(azc_event_type_parse(azc_event_type_name(ev.type), &parsed, &e), AZC_OK);
        assert_int_equal(parsed, t);
        free(text);
        azc_event_clear(&ev);
        azc_event_clear(&back);
    }
}

static void test_exact_encoding(void **state)
{
    azc_event ev = { 0 };
    char *text;
    size_t len;
    azc_err e;
    (void)state;

    ev.version = 1;
    memcpy(ev.id, ID, sizeof ID);
    ev.type = AZC_EV_HEARTBEAT;
    strcpy(ev.origin, "us");
    ev.epoch = 1;
    ev.seq = 0;               /* heartbeat before any change */
    ev.hlc = 5;
    assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_OK);
    assert_string_equal(text, "{\"version\":1,\"id\":\"" ID "\",\"type\":\"heartbeat\","
                              "\"origin\":\"us\",\"epoch\":1,\"seq\":0,\"hlc\":5,\"data\":{}}");
    free(text);
    /* epoch 0 is never produced */
    ev.epoch = 0;
    assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_EINVAL);
}

static void test_not_nul_terminated(void **state)
{
    const char src[] = "{\"version\":1,\"id\":\"" ID "\",\"type\":\"user.created\","
                       "\"origin\":\"us\",\"seq\":1,\"hlc\":9,\"data\":{}}GARBAGE";
    azc_event ev;
    azc_err e;
    (void)state;

    assert_int_equal(azc_event_decode(src, strlen(src) - strlen("GARBAGE"), &ev, &e), AZC_OK);
    assert_int_equal(ev.type, AZC_EV_USER_CREATED);
    assert_int_equal(ev.epoch, 1);   /* no "epoch": the first epoch */
    azc_event_clear(&ev);
    assert_int_equal(azc_event_decode(src, strlen(src), &ev, &e), AZC_EINVAL);
    assert_null(ev.data);
}

/* Each malformed message is rejected with a message naming the problem. */
static void test_malformed(void **state)
{
#define OK_PREFIX "\"version\":1,\"id\":\"" ID "\",\"type\":\"team.created\",\"origin\":\"us\""
    static const char *const cases[][2] = {
        { "", "empty message" },
        { "\x00\x01\x02garbage", "invalid JSON" },
        { "not json", "invalid JSON" },
        { "[1,2,3]", "top level must be an object" },
        { "{" OK_PREFIX ",\"seq\":1,\"hlc\":9}", "missing \"data\"" },
        { "{" OK_PREFIX ",\"seq\":1,\"data\":{}}", "missing \"hlc\"" },
        { "{" OK_PREFIX ",\"hlc\":9,\"data\":{}}", "missing \"seq\"" },
        { "{" OK_PREFIX ",\"seq\":\"1\",\"hlc\":9,\"data\":{}}", "\"seq\" must be a non-negative integer" },
        { "{" OK_PREFIX ",\"seq\":-1,\"hlc\":9,\"data\":{}}", "\"seq\" must be a non-negative integer" },
        { "{" OK_PREFIX ",\"seq\":1.5,\"hlc\":9,\"data\":{}}", "\"seq\" must be a non-negative integer" },
        { "{" OK_PREFIX ",\"seq\":0,\"hlc\":9,\"data\":{}}", "\"seq\" must be at least 1" },
        { "{" OK_PREFIX ",\"seq\":1,\"hlc\":0,\"data\":{}}", "\"hlc\" must be a positive" },
        { "{" OK_PREFIX ",\"epoch\":0,\"seq\":1,\"hlc\":9,\"data\":{}}", "\"epoch\" must be a positive" },
        { "{" OK_PREFIX ",\"epoch\":\"2\",\"seq\":1,\"hlc\":9,\"data\":{}}", "\"epoch\" must be a non-negative integer" },
        { "{" OK_PREFIX ",\"seq\":1,\"hlc\":9,\"data\":[]}", "\"data\" must be an object" },
        { "{" OK_PREFIX ",\"seq\":1,\"hlc\":9,\"data\":{},\"extra\":1}", "unknown member \"extra\"" },
        { "{" OK_PREFIX ",\"seq\":1,\"seq\":2,\"hlc\":9,\"data\":{}}", "duplicate" },
        { "{\"version\":2,\"id\":\"" ID "\",\"type\":\"team.created\",\"origin\":\"us\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "unsupported version 2" },
        { "{\"version\":\"1\",\"id\":\"" ID "\",\"type\":\"team.created\",\"origin\":\"us\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "\"version\" must be a non-negative integer" },
        { "{\"version\":1,\"id\":\"nope\",\"type\":\"team.created\",\"origin\":\"us\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "\"id\" must be a lower-case UUID" },
        { "{\"version\":1,\"id\":\"" ID "\",\"type\":\"team.renamed\",\"origin\":\"us\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "unknown type \"team.renamed\"" },
        { "{\"version\":1,\"id\":\"" ID "\",\"type\":7,\"origin\":\"us\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "\"type\" must be a string" },
        { "{\"version\":1,\"id\":\"" ID "\",\"type\":\"team.created\",\"origin\":\"U S\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "\"origin\" must be a region name" },
        { "{\"version\":1,\"id\":\"" ID "\",\"type\":\"team.created\",\"origin\":\"us\\u0000x\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "invalid JSON" },
        { "{\"version\":1,\"id\":\"" ID "\",\"type\":\"team.created\","
          "\"origin\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
          "\"seq\":1,\"hlc\":9,\"data\":{}}", "\"origin\" is too long" },
        { "{" OK_PREFIX ",\"seq\":99999999999999999999999,\"hlc\":9,\"data\":{}}", "invalid JSON" },
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        azc_event ev;
        azc_err e;
        size_t len = i == 1 ? 10 : strlen(cases[i][0]);

        azc_err_clear(&e);
        if (azc_event_decode(cases[i][0], len, &ev, &e) == AZC_OK)
            fail_msg("case %zu accepted: %s", i, cases[i][0]);
        assert_null(ev.data);
        if (strstr(e.msg, cases[i][1]) == NULL)
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, e.msg, cases[i][1]);
    }
}

static void test_oversized(void **state)
{
    size_t n = AZC_EVENT_MAX_BYTES + 1;
    char *big = malloc(n);
    azc_event ev = { 0 };
    char *text;
    size_t len;
    azc_err e;
    (void)state;

    memset(big, ' ', n);
    assert_int_equal(azc_event_decode(big, n, &ev, &e), AZC_ETOOBIG);
    free(big);
    /* the encoder refuses to produce what a consumer would reject */
    ev.version = 1;
    memcpy(ev.id, ID, sizeof ID);
    ev.type = AZC_EV_ROLE_CREATED;
    strcpy(ev.origin, "us");
    ev.epoch = 1;
    ev.seq = 1;
    ev.hlc = 1;
    big = malloc(AZC_EVENT_MAX_BYTES);
    memset(big, 'x', AZC_EVENT_MAX_BYTES - 1);
    big[AZC_EVENT_MAX_BYTES - 1] = '\0';
    ev.data = json_pack("{s:s}", "name", big);
    free(big);
    assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_ETOOBIG);
    assert_null(text);
    azc_event_clear(&ev);
}

static void test_encode_validates(void **state)
{
    azc_event ev = { 0 };
    char *text;
    size_t len;
    azc_err e;
    (void)state;

    ev.version = 1;
    strcpy(ev.id, "not-a-uuid");
    ev.type = AZC_EV_TEAM_CREATED;
    strcpy(ev.origin, "us");
    ev.seq = 1;
    ev.hlc = 1;
    assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_EINVAL);
    memcpy(ev.id, ID, sizeof ID);
    ev.type = AZC_EV__COUNT;
    assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_EINVAL);
    ev.type = AZC_EV_TEAM_CREATED;
    ev.version = 2;
    assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_EINVAL);
    ev.version = 1;
    ev.data = json_array();
    assert_int_equal(azc_event_encode(&ev, &text, &len, &e), AZC_EINVAL);
    azc_event_clear(&ev);
    azc_event_clear(NULL);
    assert_null(azc_event_type_name(AZC_EV__COUNT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all_types),
        cmocka_unit_test(test_exact_encoding),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_encode_validates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
