/*
 * Route table and path normalisation of the gateway filter.
 *
 * A request's path is normalised once (af_path_normalize) and the same
 * normalised form is both matched against the route templates and
 * substituted into the route's resource, so a path that a plain path cannot
 * reach ("//admin", "/a/%2F..", "%5C", "/a/%2e%2e/admin") can never reach a
 * route through a different spelling: what the matcher sees is what the
 * policy is checked against.
 *
 * A route table is immutable once built and safe to share between threads;
 * reloading routes means building a new table and swapping the pointer.
 */
#ifndef AF_ROUTE_H
#define AF_ROUTE_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

#define AF_PATH_MAX 8192      /* longer paths are refused (AZC_ETOOBIG) */
#define AF_ACTION_MAX 128
#define AF_RESOURCE_MAX 1024

/* What normalisation does with each odd spelling. */
enum af_slashes { AF_SLASHES_MERGE = 0, AF_SLASHES_REFUSE = 1 };
enum af_dots { AF_DOTS_REFUSE = 0, AF_DOTS_RESOLVE = 1 };
enum af_encoded_sep { AF_ENCSEP_REFUSE = 0, AF_ENCSEP_KEEP = 1 };

typedef struct af_path_opts {
    enum af_slashes slashes;       /* "//": merged into "/" (default) or refused */
    enum af_dots dots;             /* "." / ".." segments (also as %2E): refused
                                    * (default) or resolved as RFC 3986 5.2.4,
                                    * never above the root */
    enum af_encoded_sep encoded_sep; /* %2F, %5C: refused (default) or kept
                                      * encoded (then never a separator) */
} af_path_opts;

/*
 * Normalises the request target `raw` (`len` bytes; may carry "?query" or
 * "#fragment", which are dropped) into `out` (NUL-terminated, at most
 * `outsz` bytes including the NUL): it must start with '/'; percent-escapes
 * of unreserved characters (ALPHA DIGIT - . _ ~) are decoded, every other
 * escape is kept with upper-case hex; a literal backslash, a control
 * character, a byte >= 0x80 unescaped, %00 and a malformed escape are
 * refused; then slashes, dot segments and encoded separators as `o` says.
 * Also refused, in every mode: a character outside RFC 3986 pchar (space,
 * '"', '<', '>', '[', ']', '^', '`', '{', '|', '}'), an escaped control
 * character (%01-%1F, %7F), a dot segment carrying ';' parameters
 * ("..;", which servlet containers read as ".."), escapes of bytes >= 0x80 that are not
 * well-formed UTF-8 (overlong "%C0%AF", surrogates, truncated sequences),
 * and a ".." that would climb above the root ("/..", "/a/../..": an error,
 * never clamped to "/"). Slashes are merged before dot segments resolve
 * ("/a//../b" -> "/b"). A trailing slash is kept: "/a/" is not "/a". The
 * output is never longer than the input, so outsz = len + 1 always does.
 * o NULL: the defaults. AZC_EINVAL (message "bad path: ...", naming the
 * problem and its offset, for the `bad_path` reason) or AZC_ETOOBIG (path
 * part over AF_PATH_MAX, or over outsz).
 */
int af_path_normalize(const char *raw, size_t len, const af_path_opts *o, char *out,
                      size_t outsz, size_t *outlen, azc_err *e) AZC_WARN_UNUSED;

/* Reads {"slashes": "merge"|"refuse", "dot_segments": "refuse"|"resolve",
 * "encoded_separators": "refuse"|"keep"} (every member optional; unknown
 * members refused). NULL spec: the defaults. */
int af_path_opts_parse(const json_t *spec, af_path_opts *o, azc_err *e) AZC_WARN_UNUSED;

typedef struct af_routes af_routes;

/*
 * Builds a table from a routes document:
 *
 *   {"routes": [{"method": "GET", "path": "/runtime-groups/{id}",
 *                "action": "runtime_groups:read", "resource": "runtime_groups/{id}"},
 *               ...]}
 *
 * `method`: one method name, an array of them, or "*" (any); GET also
 * matches HEAD. `path`: literal segments and {name} parameters (a parameter
 * matches one non-empty segment); a last segment "{name*}" matches the rest
 * of the path (one or more segments). `action`: "<type>:<verb>";
 * `resource`: "<type>/<id>" where the id may use the path's parameters
 * ("{id}"); every {name} it names must be in the path. Precedence, the
 * most specific route wins: segment by segment from the left, a literal
 * beats a parameter, which beats a rest parameter; at equal paths a route
 * naming the method beats "*". Two routes with the same path shape and an
 * overlapping method are an error, as is any malformed member (the message
 * names the route's index). *out is owned by the caller (af_routes_free).
 *
 * Details: method names are GET HEAD POST PUT DELETE PATCH OPTIONS TRACE
 * CONNECT (a request with another method can only match "*"); an explicit
 * HEAD route beats the HEAD implied by GET. When the most specific path has
 * no route for the request's method, the next most specific one is tried
 * (DELETE /u/me reaches "DELETE /u/{id}" past "GET /u/me"). Literal
 * segments must be written as af_path_normalize writes them ("%61" or "."
 * are refused); empty segments only as a trailing slash ("/", "/a/"); at
 * most 64 segments. `resource` may also be "*" exactly; its type is fixed
 * (parameters only in the id) and it may not use the rest parameter (an id
 * cannot hold '/'). The document's only member is "routes"; unknown
 * members anywhere are refused.
 */
int af_routes_new(const json_t *doc, af_routes **out, azc_err *e) AZC_WARN_UNUSED;
/* Reads the file at `path` (JSON, duplicate members refused) and builds
 * it as af_routes_new does. */
int af_routes_load_file(const char *path, af_routes **out, azc_err *e) AZC_WARN_UNUSED;
void af_routes_free(af_routes *rt);
size_t af_routes_count(const af_routes *rt);

typedef struct af_route_match {
    size_t route;                     /* index in the document */
    const char *pattern;              /* the route's path template (borrowed) */
    char action[AF_ACTION_MAX];
    char resource[AF_RESOURCE_MAX];   /* parameters substituted (as they are
                                       * in the normalised path) */
} af_route_match;

/*
 * Matches `method` (upper case, e.g. "GET") and `path` (normalised, as
 * af_path_normalize wrote it) against the table. 1 with *m filled, 0 when
 * no route matches (the caller's `no_route`), AZC_ETOOBIG when the
 * substituted resource does not fit (or len > AF_PATH_MAX), AZC_EINVAL for
 * a NULL argument, an empty path or one not starting with '/', and when the
 * substituted resource is not a valid "<type>/<id>" (a parameter holding
 * "*", "!", a kept "%2F" or over 256 characters: such a request must be
 * refused, never checked against a wildcard). *m is meaningful only on 1.
 * Does not allocate. Cost: proportional to the path's
 * segments, not to the number of routes. Thread-safe (the table is
 * read-only).
 */
int af_routes_match(const af_routes *rt, const char *method, const char *path, size_t len,
                    af_route_match *m);

#endif
