/* Unit tests: the service-token helpers of common/jwt.h: the scope claim
 * (RFC 8693, space-separated names, exact matches only), the bearer
 * header, and key-set files (relative key paths, duplicate members,
 * missing files). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/jwt.h"

static int has(const char *claims_text, const char *scope)
{
    json_t *c = json_loads(claims_text, 0, NULL);
    int r;

    assert_non_null(c);
    r = azc_jwt_has_scope(c, scope);
    json_decref(c);
    return r;
}

static void test_scope(void **state)
{
    (void)state;
    assert_true(has("{\"scope\": \"authz:replicate\"}", "authz:replicate"));
    assert_true(has("{\"scope\": \"read authz:replicate write\"}", "authz:replicate"));
    assert_true(has("{\"scope\": \"  a   authz:replicate  \"}", "authz:replicate"));
    /* Prefixes, suffixes and substrings are other scopes. */
    assert_false(has("{\"scope\": \"authz:replicate:all\"}", "authz:replicate"));
    assert_false(has("{\"scope\": \"xauthz:replicate\"}", "authz:replicate"));
    assert_false(has("{\"scope\": \"authz:rep\"}", "authz:replicate"));
    assert_false(has("{\"scope\": \"AUTHZ:REPLICATE\"}", "authz:replicate"));
    /* Only a string counts (RFC 8693); an array is not a scope claim. */
    assert_false(has("{\"scope\": [\"authz:replicate\"]}", "authz:replicate"));
    assert_false(has("{\"scope\": true}", "authz:replicate"));
    assert_false(has("{\"scp\": \"authz:replicate\"}", "authz:replicate"));
    assert_false(has("{\"scope\": \"\"}", "authz:replicate"));
    assert_false(has("{\"scope\": \"   \"}", ""));
    assert_false(has("{\"scope\": \"a\"}", NULL));
    assert_false(azc_jwt_has_scope(NULL, "a"));
}

static void test_bearer(void **state)
{
    const char *t = NULL;

    (void)state;
    assert_true(azc_jwt_bearer("Bearer abc.def.ghi", &t));
    assert_string_equal(t, "abc.def.ghi");
    assert_true(azc_jwt_bearer("bearer   x", &t));
    assert_string_equal(t, "x");
    assert_false(azc_jwt_bearer("Bearer ", &t));
    assert_false(azc_jwt_bearer("Bearer    ", &t));
    assert_false(azc_jwt_bearer("Basic dXNlcjpwYXNz", &t));
    assert_false(azc_jwt_bearer("Bearerabc", &t));
    assert_false(azc_jwt_bearer(NULL, &t));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void test_keys_file(void **state)
{
    char dir[] = "/tmp/azc-jwt-scope.XXXXXX", path[256], secret[256];
    azc_jwt_keys *ks = NULL;
    azc_err e;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(secret, sizeof secret, "%s/hs.secret", dir);
    write_file(secret, "0123456789abcdef0123456789abcdef0123456789");
    snprintf(path, sizeof path, "%s/keys.json", dir);
    /* Relative to the key-set file's folder, not the working directory. */
    write_file(path, "[{\"kid\": \"k1\", \"alg\": \"HS256\", \"file\": \"hs.secret\"}]");
    assert_int_equal(azc_jwt_keys_load_file(path, &ks, &e), AZC_OK);
    assert_int_equal(azc_jwt_keys_count(ks), 1);
    azc_jwt_keys_free(ks);
    ks = NULL;
    write_file(path, "[{\"kid\": \"k1\", \"kid\": \"k2\", \"alg\": \"HS256\", \"file\": \"hs.secret\"}]");
    assert_int_equal(azc_jwt_keys_load_file(path, &ks, &e), AZC_EINVAL);
    assert_null(ks);
    write_file(path, "[{\"kid\": \"k1\", \"alg\": \"HS256\", \"file\": \"missing\"}]");
    assert_int_equal(azc_jwt_keys_load_file(path, &ks, &e), AZC_EINVAL);
    assert_null(ks);
    assert_int_equal(azc_jwt_keys_load_file(NULL, &ks, &e), AZC_EINVAL);
    unlink(path);
    assert_int_equal(azc_jwt_keys_load_file(path, &ks, &e), AZC_EINVAL);
    unlink(secret);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scope),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_keys_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
