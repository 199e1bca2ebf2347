/*
 * Base URLs of the services a component calls (a peer's authz-server, a
 * filter's authz-server): "http://host[:port][/prefix]", checked once at
 * start so a typo is a configuration error, not a stream of failed
 * requests.
 */
#ifndef AZC_URL_H
#define AZC_URL_H

#include "common/err.h"

#define AZC_URL_HOST_MAX 256
#define AZC_URL_PREFIX_MAX 256

typedef struct azc_base_url {
    char host[AZC_URL_HOST_MAX];
    int port;                        /* 80 when the URL names none */
    char prefix[AZC_URL_PREFIX_MAX]; /* path prefix without its trailing '/' */
} azc_base_url;

/* Parses `url`; `what` names the setting in the error ("peers.eu").
 * AZC_EINVAL for anything but an http:// URL with a host and no query,
 * fragment or user. */
int azc_base_url_parse(const char *url, const char *what, azc_base_url *out,
                       azc_err *e) AZC_WARN_UNUSED;

#endif
