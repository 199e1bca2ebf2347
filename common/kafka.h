/*
 * How a service reaches Kafka: the bootstrap list and the connection's
 * security (TLS, SASL), read once from the "kafka" section of its
 * configuration and applied to every librdkafka client it makes (the
 * identity relay's producer, its tail reader, the authz-server consumer),
 * so that they all connect the same way.
 *
 *   kafka.bootstrap                 HOST:PORT[,HOST:PORT...]
 *   kafka.security_protocol         plaintext (default) | ssl | sasl_plaintext | sasl_ssl
 *   kafka.ssl_ca_location           PEM file of the CAs the brokers' certificates chain
 *                                   to (default: the system's store)
 *   kafka.ssl_certificate_location  PEM client certificate (mutual TLS), with
 *   kafka.ssl_key_location          its PEM private key
 *   kafka.ssl_key_password          the key's passphrase, if it is encrypted
 *   kafka.ssl_verify_hostname       true (default): the broker's certificate must
 *                                   name the host or address dialled
 *   kafka.sasl_mechanism            PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
 *   kafka.sasl_username, kafka.sasl_password
 *
 * Settings that cannot take effect are errors, never ignored: a TLS file
 * with a protocol without TLS, SASL credentials without SASL, a certificate
 * without its key. The files are read once at load (librdkafka builds a
 * TLS context from them), so a missing or malformed file stops the service
 * at start-up rather than at its first connection.
 */
#ifndef AZC_KAFKA_H
#define AZC_KAFKA_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "common/config.h"
#include "common/err.h"

/* The keys above, for a binary's azc_config_check table. */
#define AZC_KAFKA_CONFIG_KEYS                                                        \
    { "kafka", "bootstrap" }, { "kafka", "security_protocol" },                      \
        { "kafka", "ssl_ca_location" }, { "kafka", "ssl_certificate_location" },     \
        { "kafka", "ssl_key_location" }, { "kafka", "ssl_key_password" },            \
        { "kafka", "ssl_verify_hostname" }, { "kafka", "sasl_mechanism" },           \
        { "kafka", "sasl_username" }, { "kafka", "sasl_password" }

typedef struct azc_kafka_conn azc_kafka_conn;

/*
 * Reads and checks the kafka section of cfg. kafka.bootstrap may be absent
 * (*out then has none: azc_kafka_conn_bootstrap returns NULL) for a binary
 * that does not always need Kafka; the caller decides. On success *out is
 * new, owned by the caller (azc_kafka_conn_free), and keeps no pointer into
 * cfg. AZC_EINVAL naming the key for a bad or contradictory setting.
 */
int azc_kafka_conn_new(const azc_config *cfg, azc_kafka_conn **out, azc_err *e) AZC_WARN_UNUSED;

void azc_kafka_conn_free(azc_kafka_conn *k);

/* The bootstrap list, or NULL when none is configured. Borrowed from k. */
const char *azc_kafka_conn_bootstrap(const azc_kafka_conn *k);

/* "plaintext", "sasl_ssl PLAIN as authz", ...: for log lines; never holds
 * a secret. Borrowed from k. */
const char *azc_kafka_conn_describe(const azc_kafka_conn *k);

/*
 * Sets bootstrap.servers and the security properties on conf (which the
 * caller still owns). AZC_EINVAL with librdkafka's message if it refuses
 * one, or if k has no bootstrap list.
 */
int azc_kafka_conn_apply(const azc_kafka_conn *k, rd_kafka_conf_t *conf,
                         azc_err *e) AZC_WARN_UNUSED;

#endif
