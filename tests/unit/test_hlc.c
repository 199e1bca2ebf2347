/* Unit tests: hybrid logical clock, revision tokens and UUIDs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/hlc.h"
#include "common/revision.h"
#include "common/uuid.h"

/* A wall clock the test moves by hand. */
static uint64_t fake_wall(void *arg)
{
    return *(uint64_t *)arg;
}

static void test_now_strictly_increases(void **state)
{
    uint64_t wall = 1000;
    azc_hlc *h = azc_hlc_new(fake_wall, &wall, 500);
    azc_hlc_t a, b, c;
    int i;
    (void)state;

    a = azc_hlc_now(h);
    assert_int_equal(a, AZC_HLC_MAKE(1000, 0));
    b = azc_hlc_now(h);                       /* same millisecond: counter */
    assert_int_equal(b, AZC_HLC_MAKE(1000, 1));
    wall = 1005;
    c = azc_hlc_now(h);                       /* clock moved: counter resets */
    assert_int_equal(c, AZC_HLC_MAKE(1005, 0));
    for (i = 0; i < 100000; i++) {
        azc_hlc_t n = azc_hlc_now(h);
        assert_true(n > c);
        c = n;
    }
    azc_hlc_free(h);
}

static void test_clock_goes_backwards(void **state)
{
    uint64_t wall = 5000;
    azc_hlc *h = azc_hlc_new(fake_wall, &wall, 500);
    azc_hlc_t a, b;
    (void)state;

    a = azc_hlc_now(h);
    wall = 4000;                              /* NTP step back */
    b = azc_hlc_now(h);
    assert_true(b > a);
    assert_int_equal(AZC_HLC_MS(b), 5000);
    assert_int_equal(AZC_HLC_COUNTER(b), 1);
    azc_hlc_free(h);
}

static void test_counter_overflow_carries(void **state)
{
    uint64_t wall = 7;
    azc_hlc *h = azc_hlc_new(fake_wall, &wall, 500);
    azc_hlc_t t;
    (void)state;

    azc_hlc_restore(h, AZC_HLC_MAKE(7, 0xffff));
    t = azc_hlc_now(h);
    assert_int_equal(t, AZC_HLC_MAKE(8, 0));
    azc_hlc_free(h);
}

static void test_update_on_receive(void **state)
{
    uint64_t wall = 10000;
    azc_hlc *h = azc_hlc_new(fake_wall, &wall, 500);
    azc_hlc_t out = 0, before;
    azc_err e;
    (void)state;

    /* remote ahead within the drift bound: adopted, then counted past */
    assert_int_equal(azc_hlc_update(h, AZC_HLC_MAKE(10200, 3), &out, &e), AZC_OK);
    assert_int_equal(out, AZC_HLC_MAKE(10200, 4));
    assert_true(azc_hlc_now(h) > out);
    /* remote behind: local stays ahead */
    before = azc_hlc_last(h);
    assert_int_equal(azc_hlc_update(h, AZC_HLC_MAKE(9000, 0), &out, &e), AZC_OK);
    assert_true(out > before);
    /* remote too far ahead: refused, clock untouched */
    before = azc_hlc_last(h);
    assert_int_equal(azc_hlc_update(h, AZC_HLC_MAKE(20000, 0), &out, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "ahead of the local clock"));
    assert_int_equal(azc_hlc_last(h), before);
    azc_hlc_free(h);
}

static void test_restore(void **state)
{
    uint64_t wall = 100;
    azc_hlc *h = azc_hlc_new(fake_wall, &wall, 500);
    (void)state;

    azc_hlc_restore(h, AZC_HLC_MAKE(200, 9));
    assert_int_equal(azc_hlc_now(h), AZC_HLC_MAKE(200, 10));
    azc_hlc_restore(h, AZC_HLC_MAKE(1, 0));   /* lower floor is ignored */
    assert_int_equal(azc_hlc_now(h), AZC_HLC_MAKE(200, 11));
    azc_hlc_free(h);
}

static void test_real_clock(void **state)
{
    azc_hlc *h = azc_hlc_new(NULL, NULL, 500);
    azc_hlc_t t = azc_hlc_now(h);
    uint64_t ms = azc_wall_ms();
    (void)state;

    assert_true(AZC_HLC_MS(t) <= ms && AZC_HLC_MS(t) + 1000 > ms);
    azc_hlc_free(h);
}

static void test_revision_round_trip(void **state)
{
    azc_revision r = { "eu-west-1", AZC_HLC_MAKE(1763800000000ULL, 3) }, back;
    char buf[AZC_REVISION_MAX];
    azc_err e;
    (void)state;

    assert_int_equal(azc_revision_encode(&r, buf, sizeof buf, &e), AZC_OK);
    assert_string_equal(buf, "v1.eu-west-1.019aaaac26000003");
    memset(&back, 0, sizeof back);
    assert_int_equal(azc_revision_decode(buf, &back, &e), AZC_OK);
    assert_string_equal(back.origin, "eu-west-1");
    assert_int_equal(back.hlc, r.hlc);
}

static void test_revision_rejects_malformed(void **state)
{
    static const char *const bad[] = {
        "", "v1", "v1.", "v1.us", "v1.us.", "v2.us.0001934f6f3c0003",
        "v1.US.0001934f6f3c0003", "v1.1us.0001934f6f3c0003", "v1..0001934f6f3c0003",
        "v1.us.0001934F6F3C0003", "v1.us.0001934f6f3c000", "v1.us.0001934f6f3c00030",
        "v1.us.0001934f6f3c0003 ", "v1.us.000000000000000g", "v1.us.0000000000000000",
        "v1.us_x.0001934f6f3c0003", "v1.abcdefghijabcdefghijabcdefghijabc.0001934f6f3c0003",
        "v1.us.0001934f6f3c0003.x", "v1.us.-001934f6f3c0003",
    };
    azc_revision r = { "zz", 42 };
    size_t i;
    azc_err e;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (azc_revision_decode(bad[i], &r, &e) != AZC_EINVAL)
            fail_msg("accepted malformed token \"%s\"", bad[i]);
        assert_string_equal(r.origin, "zz");   /* untouched on error */
    }
    assert_int_equal(azc_revision_decode(NULL, &r, &e), AZC_EINVAL);
}

static void test_revision_encode_rejects(void **state)
{
    azc_revision bad_origin = { "Us", 1 }, zero = { "us", 0 }, ok = { "us", 1 };
    char buf[AZC_REVISION_MAX], tiny[8];
    azc_err e;
    (void)state;

    assert_int_equal(azc_revision_encode(&bad_origin, buf, sizeof buf, &e), AZC_EINVAL);
    assert_int_equal(azc_revision_encode(&zero, buf, sizeof buf, &e), AZC_EINVAL);
    assert_int_equal(azc_revision_encode(&ok, tiny, sizeof tiny, &e), AZC_ETOOBIG);
}

static void test_uuid(void **state)
{
    char a[AZC_UUID_LEN], b[AZC_UUID_LEN];
    (void)state;

    assert_int_equal(azc_uuid_new(a), AZC_OK);
    assert_int_equal(azc_uuid_new(b), AZC_OK);
    assert_true(azc_uuid_valid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_true(azc_uuid_valid("123e4567-e89b-42d3-a456-426614174000"));
    assert_false(azc_uuid_valid("123E4567-e89b-42d3-a456-426614174000"));
    assert_false(azc_uuid_valid("123e4567e89b-42d3-a456-426614174000-"));
    assert_false(azc_uuid_valid("123e4567-e89b-42d3-a456-42661417400"));
    assert_false(azc_uuid_valid(NULL));
    assert_false(azc_uuid_valid(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_now_strictly_increases),
        cmocka_unit_test(test_clock_goes_backwards),
        cmocka_unit_test(test_counter_overflow_carries),
        cmocka_unit_test(test_update_on_receive),
        cmocka_unit_test(test_restore),
        cmocka_unit_test(test_real_clock),
        cmocka_unit_test(test_revision_round_trip),
        cmocka_unit_test(test_revision_rejects_malformed),
        cmocka_unit_test(test_revision_encode_rejects),
        cmocka_unit_test(test_uuid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
