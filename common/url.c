/*
 * Base URL parsing (common/url.h), over evhttp's URI parser.
 */
#include "common/url.h"

#include <stdio.h>
#include <string.h>

#include <event2/http.h>

int azc_base_url_parse(const char *url, const char *what, azc_base_url *out, azc_err *e)
{
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme, *host, *path;
    size_t n;
    int rc = AZC_OK;

    if (u == NULL)
        return azc_err_set(e, AZC_EINVAL, "configuration: %s is not a URL", what);
    scheme = evhttp_uri_get_scheme(u);
    host = evhttp_uri_get_host(u);
    path = evhttp_uri_get_path(u);
    if (scheme == NULL || strcmp(scheme, "http") != 0)
        rc = azc_err_set(e, AZC_EINVAL, "configuration: %s must be an http:// URL", what);
    else if (host == NULL || host[0] == '\0' || strlen(host) >= sizeof out->host)
        rc = azc_err_set(e, AZC_EINVAL, "configuration: %s has no host", what);
    else if (evhttp_uri_get_query(u) != NULL || evhttp_uri_get_fragment(u) != NULL ||
             evhttp_uri_get_userinfo(u) != NULL)
        rc = azc_err_set(e, AZC_EINVAL,
                         "configuration: %s must hold no query, fragment or user", what);
    else if (path != NULL && strlen(path) >= sizeof out->prefix)
        rc = azc_err_set(e, AZC_EINVAL, "configuration: %s has too long a path", what);
    if (rc == AZC_OK) {
        snprintf(out->host, sizeof out->host, "%s", host);
        out->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
        snprintf(out->prefix, sizeof out->prefix, "%s", path != NULL ? path : "");
        n = strlen(out->prefix);
        while (n > 0 && out->prefix[n - 1] == '/')
            out->prefix[--n] = '\0';
    }
    evhttp_uri_free(u);
    return rc;
}
