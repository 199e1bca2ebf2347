/* Unit tests: the authz policy builder's checks of event data (which
 * events it dead-letters before touching the database). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "authz/apply.h"

#define U1 "123e4567-e89b-42d3-a456-426614174000"
#define U2 "9f0c2a1e-5b7d-4c3e-8a2f-1d2e3f4a5b6c"

/* Checks the event of type t with data given as JSON text. */
static int check(azc_event_type t, const char *data, azc_err *e)
{
    azc_event ev;
    int rc;

    memset(&ev, 0, sizeof ev);
    ev.version = 1;
    ev.type = t;
    strcpy(ev.origin, "us");
    ev.seq = 1;
    ev.hlc = 1;
    ev.data = json_loads(data, 0, NULL);
    assert_non_null(ev.data);
    rc = az_event_data_check(&ev, e);
    azc_event_clear(&ev);
    return rc;
}

static void test_valid_events(void **state)
{
    azc_err e;
    (void)state;

    assert_int_equal(check(AZC_EV_USER_CREATED, "{\"id\":\"" U1 "\",\"subject\":\"alice\"}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_USER_DELETED, "{\"id\":\"" U1 "\"}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_TEAM_MEMBER_ADDED,
                           "{\"team_id\":\"" U1 "\",\"user_id\":\"" U2 "\"}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_ROLE_UPDATED,
                           "{\"id\":\"" U1 "\",\"name\":\"r\",\"permissions\":[\"doc:read\",\"doc:*\",\"*\"]}",
                           &e), AZC_OK);
    assert_int_equal(check(AZC_EV_ROLE_CREATED, "{\"id\":\"" U1 "\",\"name\":\"r\",\"permissions\":[]}", &e),
                     AZC_OK);
    assert_int_equal(check(AZC_EV_ASSIGNMENT_CREATED,
                           "{\"id\":\"" U1 "\",\"principal\":{\"type\":\"team\",\"id\":\"" U2 "\"},"
                           "\"role_id\":\"" U2 "\",\"region\":\"*\",\"resource\":\"doc/*\"}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_ASSIGNMENT_CREATED,
                           "{\"id\":\"" U1 "\",\"principal\":{\"type\":\"user\",\"id\":\"" U2 "\"},"
                           "\"role_id\":\"" U2 "\",\"region\":\"eu\",\"resource\":\"*\"}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_HEARTBEAT, "{}", &e), AZC_OK);
}

static void test_bad_events_name_the_member(void **state)
{
    azc_err e;
    (void)state;

    assert_int_equal(check(AZC_EV_USER_CREATED, "{\"id\":\"" U1 "\"}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.subject"));
    assert_int_equal(check(AZC_EV_USER_CREATED, "{\"id\":\"" U1 "\",\"subject\":7}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.subject"));
    assert_int_equal(check(AZC_EV_USER_CREATED, "{\"id\":\"" U1 "\",\"subject\":\"a b\"}", &e), AZC_EINVAL);
    assert_int_equal(check(AZC_EV_USER_DELETED, "{\"id\":\"not-a-uuid\"}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.id"));
    assert_int_equal(check(AZC_EV_USER_DELETED, "{\"id\":\"123E4567-E89B-42D3-A456-426614174000\"}", &e),
                     AZC_EINVAL);
    assert_int_equal(check(AZC_EV_TEAM_MEMBER_REMOVED, "{\"team_id\":\"" U1 "\"}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.user_id"));
    assert_int_equal(check(AZC_EV_ROLE_CREATED, "{\"id\":\"" U1 "\",\"name\":\"r\",\"permissions\":\"doc:read\"}",
                           &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.permissions"));
    assert_int_equal(check(AZC_EV_ROLE_CREATED,
                           "{\"id\":\"" U1 "\",\"name\":\"r\",\"permissions\":[\"doc:read\",\"Doc:read\"]}",
                           &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "permissions[1]"));
    assert_int_equal(check(AZC_EV_ROLE_CREATED, "{\"id\":\"" U1 "\",\"name\":\"r\",\"permissions\":[3]}", &e),
                     AZC_EINVAL);
    assert_int_equal(check(AZC_EV_ASSIGNMENT_CREATED,
                           "{\"id\":\"" U1 "\",\"principal\":{\"type\":\"group\",\"id\":\"" U2 "\"},"
                           "\"role_id\":\"" U2 "\",\"region\":\"*\",\"resource\":\"doc/*\"}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "principal.type"));
    assert_int_equal(check(AZC_EV_ASSIGNMENT_CREATED,
                           "{\"id\":\"" U1 "\",\"principal\":{\"type\":\"user\",\"id\":\"" U2 "\"},"
                           "\"role_id\":\"" U2 "\",\"region\":\"EU\",\"resource\":\"doc/*\"}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.region"));
    assert_int_equal(check(AZC_EV_ASSIGNMENT_CREATED,
                           "{\"id\":\"" U1 "\",\"principal\":{\"type\":\"user\",\"id\":\"" U2 "\"},"
                           "\"role_id\":\"" U2 "\",\"region\":\"eu\",\"resource\":\"doc\"}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.resource"));
    assert_int_equal(check(AZC_EV_ASSIGNMENT_CREATED,
                           "{\"id\":\"" U1 "\",\"principal\":\"user\",\"role_id\":\"" U2 "\","
                           "\"region\":\"eu\",\"resource\":\"doc/1\"}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.principal"));
    assert_int_equal(check(AZC_EV_TEAM_CREATED, "[]", &e), AZC_EINVAL);
}

/* Heartbeats with and without last_id; resync markers and their counts. */
static void test_heartbeat_and_resync_markers(void **state)
{
    azc_err e;
    (void)state;

    assert_int_equal(check(AZC_EV_HEARTBEAT, "{\"last_id\":\"" U1 "\"}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_HEARTBEAT, "{\"last_id\":7}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.last_id"));
    assert_int_equal(check(AZC_EV_HEARTBEAT, "{\"last_id\":\"x\"}", &e), AZC_EINVAL);
    assert_int_equal(check(AZC_EV_RESYNC_BEGIN, "{}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_RESYNC_END,
                           "{\"users\":2,\"roles\":0,\"teams\":1,\"memberships\":0,"
                           "\"assignments\":3}", &e), AZC_OK);
    assert_int_equal(check(AZC_EV_RESYNC_END,
                           "{\"users\":2,\"roles\":0,\"teams\":1,\"memberships\":0}", &e),
                     AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.assignments"));
    assert_int_equal(check(AZC_EV_RESYNC_END,
                           "{\"users\":-1,\"roles\":0,\"teams\":1,\"memberships\":0,"
                           "\"assignments\":3}", &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "data.users"));
    assert_int_equal(check(AZC_EV_RESYNC_END,
                           "{\"users\":\"2\",\"roles\":0,\"teams\":1,\"memberships\":0,"
                           "\"assignments\":3}", &e), AZC_EINVAL);
    /* Only the creation events may carry a resync's state. */
    assert_int_equal(az_resync_kind(AZC_EV_USER_CREATED), 0);
    assert_string_equal(az_resync_kinds[az_resync_kind(AZC_EV_ASSIGNMENT_CREATED)], "assignments");
    assert_string_equal(az_resync_kinds[az_resync_kind(AZC_EV_TEAM_MEMBER_ADDED)], "memberships");
    assert_int_equal(az_resync_kind(AZC_EV_USER_UPDATED), -1);
    assert_int_equal(az_resync_kind(AZC_EV_HEARTBEAT), -1);
    assert_int_equal(az_resync_kind(AZC_EV_RESYNC_END), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_events),
        cmocka_unit_test(test_bad_events_name_the_member),
        cmocka_unit_test(test_heartbeat_and_resync_markers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
