/* Unit tests: the kafka configuration section (common/kafka.h): what each
 * setting becomes in librdkafka, and every contradictory, missing or
 * unreadable setting refused by key. The PEM fixtures are throwaway test
 * material, valid until 2126. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/kafka.h"

static const char CA_PEM[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBejCCASGgAwIBAgIUNPllcGbTj0f+dDW0iVbWvWycD90wCgYIKoZIzj0EAwIw\n"
    "EjEQMA4GA1UEAwwHdGVzdCBDQTAgFw0yNjEyMDIyMTIwMTNaGA8yMTI2MTEwODIx\n"
    "MjAxM1owEjEQMA4GA1UEAwwHdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEH\n"
    "A0IABI/hq4sDReH7hRyz6CuUD84+yp5S6NBlUU/0S233YVAEILMmdy14K5xu5XLE\n"
    "qPSgeOJYKSE8F4nZC6ZYygLBonKjUzBRMB0GA1UdDgQWBBQEx6h7slZAlP43vnWc\n"
    "ywJPTSlPnDAfBgNVHSMEGDAWgBQEx6h7slZAlP43vnWcywJPTSlPnDAPBgNVHRMB\n"
    "Af8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCICaz/E4p/myVMMM1VJbZRVMZ3j2T\n"
    "bcdnvJvlRuDhA48BAiBJSfjHHHu9Tza6feiVv9ZBI9bMKPs7NzWO5MAhOAUtOw==\n"
    "-----END CERTIFICATE-----\n"
;

static const char CLIENT_CRT[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBIDCBxgIUb15LjT44D7aAGLbbowqLiDxjxq4wCgYIKoZIzj0EAwIwEjEQMA4G\n"
    "A1UEAwwHdGVzdCBDQTAgFw0yNjEyMDIyMTIwMTNaGA8yMTI2MTEwODIxMjAxM1ow\n"
    "ETEPMA0GA1UEAwwGY2xpZW50MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEym5A\n"
    "k0q5m0H992WWjLwNGr+jByy5CsH2B+1vts35ZhcqHL9xbD18zzIG7ylKbRdxaXHa\n"
    "1+wCFMk0xNz6mHDs8DAKBggqhkjOPQQDAgNJADBGAiEA85oVUllj0Gq1/SaeE6FW\n"
    "uA34+Iak6kZBNTK5LajEUGsCIQDHU9/w9j8GXrJsR08p9dgCmRPzM4T4byKhb9fl\n"
    "NOsuKg==\n"
    "-----END CERTIFICATE-----\n"
;

static const char CLIENT_KEY[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgy8g/ck7Z2NbPaHO5\n"
    "lXUV6CpSfXsPyYvdqZOpHkmm+E2hRANCAATKbkCTSrmbQf33ZZaMvA0av6MHLLkK\n"
    "wfYH7W+2zflmFyocv3FsPXzPMgbvKUptF3FpcdrX7AIUyTTE3PqYcOzw\n"
    "-----END PRIVATE KEY-----\n"
;

static const char OTHER_KEY[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMj/wNQRVDjQeWeHf\n"
    "88X1SajHYkJ+45qGcvYx/dYvqz6hRANCAASnHap/IfxW0Mh9LP/MkeZFxJ79OGrZ\n"
    "wXroCDXA/ymcY+TKeVUIIsVrWpel391bSzPgC6tdk4rj1Ssu1gLtcOgx\n"
    "-----END PRIVATE KEY-----\n"
;

typedef struct files {
    char dir[64];
    char ca[128], cert[128], key[128], other[128], junk[128];
} files;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    files *f = calloc(1, sizeof *f);

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/test_kafka.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->ca, sizeof f->ca, "%s/ca.pem", f->dir);
    snprintf(f->cert, sizeof f->cert, "%s/client.crt", f->dir);
    snprintf(f->key, sizeof f->key, "%s/client.key", f->dir);
    snprintf(f->other, sizeof f->other, "%s/other.key", f->dir);
    snprintf(f->junk, sizeof f->junk, "%s/junk.pem", f->dir);
    write_file(f->ca, CA_PEM);
    write_file(f->cert, CLIENT_CRT);
    write_file(f->key, CLIENT_KEY);
    write_file(f->other, OTHER_KEY);
    write_file(f->junk, "not a certificate\n");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    files *f = *state;

    unlink(f->ca);
    unlink(f->cert);
    unlink(f->key);
    unlink(f->other);
    unlink(f->junk);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* The kafka section `body` (JSON members) with `env`, loaded and read. */
static int load(const char *body, char *const *env, azc_kafka_conn **k, azc_err *e)
{
    char json[2048];
    azc_config *cfg = NULL;
    int rc;

    snprintf(json, sizeof json, "{\"kafka\": {%s}}", body);
    azc_err_clear(e);
    assert_int_equal(azc_config_load_string(&cfg, json, env, e), AZC_OK);
    rc = azc_kafka_conn_new(cfg, k, e);
    azc_config_free(cfg);
    return rc;
}

/* The value librdkafka holds for `name` once k is applied. */
static void expect_prop(const azc_kafka_conn *k, const char *name, const char *want)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char buf[512];
    size_t n = sizeof buf;
    azc_err e;

    assert_non_null(conf);
    azc_err_clear(&e);
    assert_int_equal(azc_kafka_conn_apply(k, conf, &e), AZC_OK);
    assert_int_equal(rd_kafka_conf_get(conf, name, buf, &n), RD_KAFKA_CONF_OK);
    if (strcmp(buf, want) != 0)
        fail_msg("%s is \"%s\", expected \"%s\"", name, buf, want);
    rd_kafka_conf_destroy(conf);
}

static void expect_error(const char *body, char *const *env, const char *needle)
{
    azc_kafka_conn *k = (azc_kafka_conn *)1;
    azc_err e;

    assert_int_equal(load(body, env, &k, &e), AZC_EINVAL);
    assert_null(k);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\" (for %s)", e.msg, needle, body);
}

static void test_plaintext_default(void **state)
{
    azc_kafka_conn *k;
    rd_kafka_conf_t *conf;
    azc_err e;
    (void)state;

    assert_int_equal(load("\"bootstrap\": \"127.0.0.1:9092\"", NULL, &k, &e), AZC_OK);
    assert_string_equal(azc_kafka_conn_bootstrap(k), "127.0.0.1:9092");
    assert_string_equal(azc_kafka_conn_describe(k), "plaintext");
    expect_prop(k, "bootstrap.servers", "127.0.0.1:9092");
    expect_prop(k, "security.protocol", "plaintext");
    azc_kafka_conn_free(k);

    /* No bootstrap: the binary decides whether it needs one; applying
     * without one is an error, not a client that dials nobody. */
    assert_int_equal(load("\"topic\": \"t\"", NULL, &k, &e), AZC_OK);
    assert_null(azc_kafka_conn_bootstrap(k));
    conf = rd_kafka_conf_new();
    assert_int_equal(azc_kafka_conn_apply(k, conf, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "kafka.bootstrap"));
    rd_kafka_conf_destroy(conf);
    azc_kafka_conn_free(k);
}

static void test_sasl_ssl(void **state)
{
    files *f = *state;
    char body[1024];
    azc_kafka_conn *k;
    azc_err e;

    snprintf(body, sizeof body, "\"bootstrap\": \"b:9093\", \"security_protocol\": \"SASL_SSL\","
             " \"ssl_ca_location\": \"%s\", \"sasl_mechanism\": \"scram-sha-256\","
             " \"sasl_username\": \"relay\", \"sasl_password\": \"s3cret\"", f->ca);
    assert_int_equal(load(body, NULL, &k, &e), AZC_OK);
    expect_prop(k, "security.protocol", "sasl_ssl");
    expect_prop(k, "sasl.mechanism", "SCRAM-SHA-256");
    expect_prop(k, "sasl.username", "relay");
    expect_prop(k, "ssl.ca.location", f->ca);
    expect_prop(k, "ssl.endpoint.identification.algorithm", "https");
    expect_prop(k, "enable.ssl.certificate.verification", "true");
    assert_string_equal(azc_kafka_conn_describe(k), "sasl_ssl SCRAM-SHA-256 as relay");
    assert_null(strstr(azc_kafka_conn_describe(k), "s3cret"));
    azc_kafka_conn_free(k);
}

static void test_password_from_environment(void **state)
{
    char *env[] = { "AUTHZ_KAFKA_SASL_PASSWORD=from-env", NULL };
    azc_kafka_conn *k;
    azc_err e;
    (void)state;

    assert_int_equal(load("\"bootstrap\": \"b:1\", \"security_protocol\": \"sasl_plaintext\","
                          " \"sasl_mechanism\": \"PLAIN\", \"sasl_username\": \"u\"",
                          env, &k, &e), AZC_OK);
    expect_prop(k, "sasl.mechanism", "PLAIN");
    expect_prop(k, "sasl.username", "u");
    azc_kafka_conn_free(k);
}

static void test_mutual_tls(void **state)
{
    files *f = *state;
    char body[1024];
    azc_kafka_conn *k;
    azc_err e;

    snprintf(body, sizeof body, "\"bootstrap\": \"b:1\", \"security_protocol\": \"ssl\","
             " \"ssl_ca_location\": \"%s\", \"ssl_certificate_location\": \"%s\","
             " \"ssl_key_location\": \"%s\", \"ssl_verify_hostname\": false", f->ca, f->cert,
             f->key);
    assert_int_equal(load(body, NULL, &k, &e), AZC_OK);
    expect_prop(k, "ssl.certificate.location", f->cert);
    expect_prop(k, "ssl.key.location", f->key);
    expect_prop(k, "ssl.endpoint.identification.algorithm", "none");
    assert_string_equal(azc_kafka_conn_describe(k), "ssl, host name not verified");
    azc_kafka_conn_free(k);

    /* A key that is not the certificate's: librdkafka refuses it at load. */
    snprintf(body, sizeof body, "\"bootstrap\": \"b:1\", \"security_protocol\": \"ssl\","
             " \"ssl_certificate_location\": \"%s\", \"ssl_key_location\": \"%s\"", f->cert,
             f->other);
    expect_error(body, NULL, "configuration: kafka: ");
}

static void test_contradictions(void **state)
{
    files *f = *state;
    char body[1024];
    (void)state;

    expect_error("\"security_protocol\": \"tls\"", NULL, "kafka.security_protocol \"tls\"");
    expect_error("\"bootstrap\": \"\"", NULL, "kafka.bootstrap is empty");
    snprintf(body, sizeof body, "\"ssl_ca_location\": \"%s\"", f->ca);
    expect_error(body, NULL, "kafka.ssl_ca_location is set but kafka.security_protocol "
                             "plaintext has no TLS");
    expect_error("\"security_protocol\": \"sasl_plaintext\", \"ssl_verify_hostname\": false",
                 NULL, "kafka.ssl_verify_hostname is set but");
    expect_error("\"security_protocol\": \"ssl\", \"sasl_username\": \"u\"", NULL,
                 "kafka.sasl_username is set but kafka.security_protocol ssl has no SASL");
    expect_error("\"sasl_password\": \"p\"", NULL, "kafka.sasl_password is set but");
    expect_error("\"security_protocol\": \"sasl_ssl\", \"sasl_username\": \"u\","
                 " \"sasl_password\": \"p\"", NULL, "kafka.sasl_mechanism must be set");
    expect_error("\"security_protocol\": \"sasl_ssl\", \"sasl_mechanism\": \"GSSAPI\","
                 " \"sasl_username\": \"u\", \"sasl_password\": \"p\"", NULL,
                 "kafka.sasl_mechanism \"GSSAPI\" is not PLAIN");
    expect_error("\"security_protocol\": \"sasl_ssl\", \"sasl_mechanism\": \"PLAIN\","
                 " \"sasl_username\": \"u\"", NULL, "kafka.sasl_password must be set");
    snprintf(body, sizeof body, "\"security_protocol\": \"ssl\","
             " \"ssl_certificate_location\": \"%s\"", f->cert);
    expect_error(body, NULL, "go together");
    expect_error("\"security_protocol\": \"ssl\", \"ssl_key_password\": \"x\"", NULL,
                 "kafka.ssl_key_password is set without kafka.ssl_key_location");
}

static void test_unreadable_files(void **state)
{
    files *f = *state;
    char body[1024];

    expect_error("\"security_protocol\": \"ssl\", \"ssl_ca_location\": \"/nonexistent/ca.pem\"",
                 NULL, "kafka.ssl_ca_location: /nonexistent/ca.pem: No such file");
    snprintf(body, sizeof body, "\"security_protocol\": \"ssl\", \"ssl_ca_location\": \"%s\"",
             f->dir);
    expect_error(body, NULL, "is not a file");
    /* Readable but not PEM: only librdkafka's own load can tell. */
    snprintf(body, sizeof body, "\"security_protocol\": \"ssl\", \"ssl_ca_location\": \"%s\"",
             f->junk);
    expect_error(body, NULL, "ssl.ca.location");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plaintext_default),
        cmocka_unit_test_setup_teardown(test_sasl_ssl, setup, teardown),
        cmocka_unit_test(test_password_from_environment),
        cmocka_unit_test_setup_teardown(test_mutual_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contradictions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_files, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
