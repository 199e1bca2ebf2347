/*
 * The kafka section of a service's configuration, turned into librdkafka
 * properties (common/kafka.h). The properties are checked twice at load:
 * here, for what the project promises (no setting silently without
 * effect, readable files), and by librdkafka itself on a throwaway client,
 * which builds the TLS context from the files and knows which SASL
 * mechanisms this build supports.
 */
#include "common/kafka.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define KAFKA_MAX_PROPS 12

struct azc_kafka_conn {
    char *bootstrap;
    char describe[160];
    size_t nprops;
    /* librdkafka name, value: both owned. */
    char *props[KAFKA_MAX_PROPS][2];
};

static const char *const PROTOCOLS[] = { "plaintext", "ssl", "sasl_plaintext", "sasl_ssl" };
static const char *const MECHANISMS[] = { "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512" };

static int add_prop(azc_kafka_conn *k, const char *name, const char *value, azc_err *e)
{
    char *n, *v;

    if (k->nprops == KAFKA_MAX_PROPS)
        return azc_err_set(e, AZC_ERROR, "kafka: too many properties");
    n = strdup(name);
    v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    k->props[k->nprops][0] = n;
    k->props[k->nprops][1] = v;
    k->nprops++;
    return AZC_OK;
}

/* A file librdkafka will read: say now, by key, if it cannot. */
static int check_file(const char *key, const char *path, azc_err *e)
{
    struct stat st;
    FILE *f;

    if (path[0] == '\0')
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.%s is empty", key);
    if (stat(path, &st) != 0)
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.%s: %s: %s", key, path,
                           strerror(errno));
    if (!S_ISREG(st.st_mode))
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.%s: %s is not a file", key,
                           path);
    f = fopen(path, "r");
    if (f == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.%s: %s: %s", key, path,
                           strerror(errno));
    fclose(f);
    return AZC_OK;
}

static int one_of(const char *v, const char *const *set, size_t n, const char **canon)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (strcasecmp(v, set[i]) == 0) {
            *canon = set[i];
            return 1;
        }
    }
    return 0;
}

/*
 * librdkafka's own check: a client made from the properties (no
 * bootstrap, so it dials nobody) loads the CA, certificate and key and
 * refuses a mechanism this build lacks.
 */
static int trial_client(const azc_kafka_conn *k, azc_err *e)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    rd_kafka_t *rk;
    size_t i;

    if (conf == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    for (i = 0; i < k->nprops; i++) {
        if (rd_kafka_conf_set(conf, k->props[i][0], k->props[i][1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka: %s", errstr);
        }
    }
    /* Quiet: its only log line would be that it has no bootstrap list. */
    rd_kafka_conf_set_log_cb(conf, NULL);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka: %s", errstr);
    }
    rd_kafka_destroy(rk);
    return AZC_OK;
}

static int read_section(const azc_config *cfg, azc_kafka_conn *k, azc_err *e)
{
    const char *bootstrap, *proto, *ca, *cert, *key, *keypass, *mech, *user, *pass;
    const char *proto_c = NULL, *mech_c = NULL;
    int verify_host, tls, sasl, rc;

    if ((rc = azc_config_get_string(cfg, "kafka", "bootstrap", NULL, &bootstrap, e)) != AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "security_protocol", "plaintext", &proto, e)) !=
            AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "ssl_ca_location", NULL, &ca, e)) != AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "ssl_certificate_location", NULL, &cert, e)) !=
            AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "ssl_key_location", NULL, &key, e)) != AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "ssl_key_password", NULL, &keypass, e)) !=
            AZC_OK ||
        (rc = azc_config_get_bool(cfg, "kafka", "ssl_verify_hostname", 1, &verify_host, e)) !=
            AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "sasl_mechanism", NULL, &mech, e)) != AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "sasl_username", NULL, &user, e)) != AZC_OK ||
        (rc = azc_config_get_string(cfg, "kafka", "sasl_password", NULL, &pass, e)) != AZC_OK)
        return rc;

    if (bootstrap != NULL && bootstrap[0] == '\0')
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.bootstrap is empty");
    if (!one_of(proto, PROTOCOLS, sizeof PROTOCOLS / sizeof PROTOCOLS[0], &proto_c))
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.security_protocol \"%.40s\" is "
                           "not plaintext, ssl, sasl_plaintext or sasl_ssl", proto);
    tls = strcmp(proto_c, "ssl") == 0 || strcmp(proto_c, "sasl_ssl") == 0;
    sasl = strncmp(proto_c, "sasl_", 5) == 0;

    if (!tls) {
        const char *set = ca != NULL ? "ssl_ca_location"
                          : cert != NULL ? "ssl_certificate_location"
                          : key != NULL ? "ssl_key_location"
                          : keypass != NULL ? "ssl_key_password"
                          : !verify_host ? "ssl_verify_hostname" : NULL;

        if (set != NULL)
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka.%s is set but "
                               "kafka.security_protocol %s has no TLS (ssl or sasl_ssl)", set,
                               proto_c);
    }
    if (!sasl) {
        const char *set = mech != NULL ? "sasl_mechanism"
                          : user != NULL ? "sasl_username"
                          : pass != NULL ? "sasl_password" : NULL;

        if (set != NULL)
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka.%s is set but "
                               "kafka.security_protocol %s has no SASL (sasl_plaintext or "
                               "sasl_ssl)", set, proto_c);
    }
    if ((rc = add_prop(k, "security.protocol", proto_c, e)) != AZC_OK)
        return rc;

    if (tls) {
        if ((cert == NULL) != (key == NULL))
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka.ssl_certificate_location and "
                               "kafka.ssl_key_location go together (mutual TLS)");
        if (keypass != NULL && key == NULL)
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka.ssl_key_password is set "
                               "without kafka.ssl_key_location");
        if (ca != NULL && ((rc = check_file("ssl_ca_location", ca, e)) != AZC_OK ||
                           (rc = add_prop(k, "ssl.ca.location", ca, e)) != AZC_OK))
            return rc;
        if (cert != NULL &&
            ((rc = check_file("ssl_certificate_location", cert, e)) != AZC_OK ||
             (rc = check_file("ssl_key_location", key, e)) != AZC_OK ||
             (rc = add_prop(k, "ssl.certificate.location", cert, e)) != AZC_OK ||
             (rc = add_prop(k, "ssl.key.location", key, e)) != AZC_OK))
            return rc;
        if (keypass != NULL && (rc = add_prop(k, "ssl.key.password", keypass, e)) != AZC_OK)
            return rc;
        /* Certificate verification itself is never optional. */
        if ((rc = add_prop(k, "enable.ssl.certificate.verification", "true", e)) != AZC_OK ||
            (rc = add_prop(k, "ssl.endpoint.identification.algorithm",
                           verify_host ? "https" : "none", e)) != AZC_OK)
            return rc;
    }
    if (sasl) {
        if (mech == NULL)
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka.sasl_mechanism must be set "
                               "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) with security_protocol "
                               "%s", proto_c);
        if (!one_of(mech, MECHANISMS, sizeof MECHANISMS / sizeof MECHANISMS[0], &mech_c))
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka.sasl_mechanism \"%.40s\" is "
                               "not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", mech);
        if (user == NULL || user[0] == '\0' || pass == NULL || pass[0] == '\0')
            return azc_err_set(e, AZC_EINVAL, "configuration: kafka.sasl_username and "
                               "kafka.sasl_password must be set with sasl_mechanism %s "
                               "(the password may come from AUTHZ_KAFKA_SASL_PASSWORD)", mech_c);
        if ((rc = add_prop(k, "sasl.mechanism", mech_c, e)) != AZC_OK ||
            (rc = add_prop(k, "sasl.username", user, e)) != AZC_OK ||
            (rc = add_prop(k, "sasl.password", pass, e)) != AZC_OK)
            return rc;
    }
    if (bootstrap != NULL && (k->bootstrap = strdup(bootstrap)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (sasl)
        snprintf(k->describe, sizeof k->describe, "%s %s as %.64s%s", proto_c, mech_c, user,
                 tls && !verify_host ? ", host name not verified" : "");
    else
        snprintf(k->describe, sizeof k->describe, "%s%s", proto_c,
                 tls && !verify_host ? ", host name not verified" : "");
    return AZC_OK;
}

int azc_kafka_conn_new(const azc_config *cfg, azc_kafka_conn **out, azc_err *e)
{
    azc_kafka_conn *k = calloc(1, sizeof *k);
    int rc;

    *out = NULL;
    if (k == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if ((rc = read_section(cfg, k, e)) != AZC_OK || (rc = trial_client(k, e)) != AZC_OK) {
        azc_kafka_conn_free(k);
        return rc;
    }
    *out = k;
    return AZC_OK;
}

void azc_kafka_conn_free(azc_kafka_conn *k)
{
    size_t i;

    if (k == NULL)
        return;
    for (i = 0; i < k->nprops; i++) {
        free(k->props[i][0]);
        /* A password should not outlive its use in freed heap. */
        memset(k->props[i][1], 0, strlen(k->props[i][1]));
        free(k->props[i][1]);
    }
    free(k->bootstrap);
    free(k);
}

const char *azc_kafka_conn_bootstrap(const azc_kafka_conn *k)
{
    return k->bootstrap;
}

const char *azc_kafka_conn_describe(const azc_kafka_conn *k)
{
    return k->describe;
}

int azc_kafka_conn_apply(const azc_kafka_conn *k, rd_kafka_conf_t *conf, azc_err *e)
{
    char errstr[512];
    size_t i;

    if (k->bootstrap == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: kafka.bootstrap must be set");
    if (rd_kafka_conf_set(conf, "bootstrap.servers", k->bootstrap, errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK)
        return azc_err_set(e, AZC_EINVAL, "kafka bootstrap.servers: %s", errstr);
    for (i = 0; i < k->nprops; i++) {
        if (rd_kafka_conf_set(conf, k->props[i][0], k->props[i][1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK)
            return azc_err_set(e, AZC_EINVAL, "kafka %s: %s", k->props[i][0], errstr);
    }
    return AZC_OK;
}
