/*
 * What authz-filterd (and tests) need of the filter beyond the public
 * header: opening it from a configuration the caller already holds, with
 * the caller's logger, and the configuration keys the filter reads.
 */
#ifndef AF_FILTER_INTERNAL_H
#define AF_FILTER_INTERNAL_H

#include <stddef.h>

#include "common/config.h"
#include "common/err.h"
#include "common/log.h"
#include "gateway-filter/authzfilter.h"

/* The keys af_open reads (sections service, policy, routes, paths, jwt,
 * decision); a binary adds its own to check a file. */
const azc_config_key *af__config_keys(size_t *n);

/* af_open from `cfg` (borrowed, only during the call) logging to `log`
 * (borrowed, must outlive the filter). */
int af__open_config(const azc_config *cfg, azc_log *log, authzfilter **out,
                    azc_err *e) AZC_WARN_UNUSED;

#endif
