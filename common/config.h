/*
 * Service configuration: a JSON file of sections, each an object of keys,
 *
 *   {"http": {"port": 8080, "addr": "127.0.0.1"}, "log": {"level": "info"}}
 *
 * overridden by environment variables AUTHZ_<SECTION>_<KEY> (upper case;
 * the section name holds no underscore, so AUTHZ_HTTP_MAX_BODY_BYTES is
 * http.max_body_bytes). Values are read through typed getters that take a
 * default and bounds and name the bad key in their error, so a typo or a
 * wrong type stops the service at start-up with a clear message.
 *
 * Each binary declares the keys it knows in a table; azc_config_check
 * rejects any other key in the file, and in AUTHZ_* variables any other
 * key of a section the binary has, so a misspelt setting is an error
 * rather than a silently ignored default. AUTHZ_* variables of other
 * sections (AUTHZ_BIN_DIR) or of another shape (AUTHZ_REGIONS) belong to
 * the tooling and are ignored.
 */
#ifndef AZC_CONFIG_H
#define AZC_CONFIG_H

#include <stddef.h>

#include "common/err.h"

typedef struct azc_config azc_config;

/* A key a binary accepts, for azc_config_check. */
typedef struct azc_config_key {
    const char *section;
    const char *key;
} azc_config_key;

#define AZC_CONFIG_MAX_BYTES (1024 * 1024)

/*
 * Loads `path` (may be NULL: empty configuration) and the AUTHZ_* entries of
 * `envp` (NULL-terminated "NAME=value" array, may be NULL). On success *out
 * is a new configuration owned by the caller (azc_config_free).
 */
int azc_config_load(azc_config **out, const char *path, char *const *envp,
                    azc_err *e) AZC_WARN_UNUSED;

/* Same as azc_config_load but from a JSON text in memory. */
int azc_config_load_string(azc_config **out, const char *json, char *const *envp,
                           azc_err *e) AZC_WARN_UNUSED;

void azc_config_free(azc_config *cfg);

/* AZC_EINVAL naming the first key, in the file or the environment, that is
 * not in `known` (n entries). */
int azc_config_check(const azc_config *cfg, const azc_config_key *known, size_t n,
                     azc_err *e) AZC_WARN_UNUSED;

/*
 * Typed getters. When the key is absent *out is the default. An environment
 * override wins over the file. A present value of the wrong type, or out of
 * [min, max], is AZC_EINVAL naming "section.key". Strings are borrowed and
 * live as long as cfg.
 */
int azc_config_get_string(const azc_config *cfg, const char *section, const char *key,
                          const char *def, const char **out, azc_err *e) AZC_WARN_UNUSED;
int azc_config_get_int(const azc_config *cfg, const char *section, const char *key,
                       long long def, long long min, long long max, long long *out,
                       azc_err *e) AZC_WARN_UNUSED;
int azc_config_get_bool(const azc_config *cfg, const char *section, const char *key,
                        int def, int *out, azc_err *e) AZC_WARN_UNUSED;
int azc_config_get_double(const azc_config *cfg, const char *section, const char *key,
                          double def, double min, double max, double *out,
                          azc_err *e) AZC_WARN_UNUSED;

/*
 * Splits a comma-separated list ("us, eu,ap": spaces around items are
 * dropped) into at most `max` slots of `slot_len` bytes each (slots is a
 * char[max][slot_len] array). *n gets the count; "" is an empty list.
 * AZC_EINVAL naming `key` for an empty or too long item, or too many.
 */
int azc_config_split_list(const char *s, char *slots, size_t slot_len, size_t max, size_t *n,
                          const char *key, azc_err *e) AZC_WARN_UNUSED;

/*
 * Reads service.region (required, a region name) and service.regions
 * (required, every region, comma-separated, each a region name, including
 * service.region) into *region (borrowed from cfg) and `regions`, as
 * azc_config_split_list does. AZC_EINVAL naming the key otherwise.
 */
int azc_config_regions(const azc_config *cfg, const char **region, char *regions,
                       size_t slot_len, size_t max, size_t *n, azc_err *e) AZC_WARN_UNUSED;

#endif
