/*
 * Route table of the gateway filter; see route.h (path normalisation is
 * path.c).
 *
 * The table is a trie over path segments. Literal edges of every node live
 * in one open-addressing hash table keyed by (parent node, segment bytes),
 * so a segment costs one hash and one compare whatever the fan-out; each
 * node then has at most one parameter child and one rest child. Matching is
 * a depth-first walk in precedence order (literal, then parameter, then
 * rest), so the first leaf accepting the method is the most specific route.
 * Each trie node sits at a fixed depth and has one parent, so a walk visits
 * a node at most once: the cost is bounded by the path's segments times the
 * (small) number of templates that share a prefix with it, never by the
 * table's size.
 */
#include "gateway-filter/route.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/policy.h"

#define SEGMENTS_MAX 64              /* per route template */
#define PARAM_NAME_MAX 64
#define ROUTES_FILE_MAX (16 * 1024 * 1024)
#define NONE (-1)

/* The methods a route may name. A fixed set keeps the per-leaf method table
 * a small array; a request with any other method can only match "*". */
enum { M_GET, M_HEAD, M_POST, M_PUT, M_DELETE, M_PATCH, M_OPTIONS, M_TRACE, M_CONNECT, M_N };
static const char *const method_names[M_N] = { "GET",   "HEAD",    "POST",  "PUT",    "DELETE",
                                               "PATCH", "OPTIONS", "TRACE", "CONNECT" };

struct piece {
    uint32_t off, len;   /* literal text in the route's resource template */
    int32_t seg;         /* NONE, or the path segment substituted here */
};

struct route {
    char *pattern;
    char *action;
    size_t action_len;
    char *resource;      /* the template as written */
    struct piece *pieces;
    size_t npieces;
    int has_params;      /* the substituted resource must be checked */
};

struct leaf {
    int32_t by_method[M_N];   /* route index or NONE */
    int32_t star;
};

struct node {
    int32_t param;            /* child node for "{name}" or NONE */
    int32_t rest;             /* terminal node for "{name*}" or NONE */
    int32_t leaf;             /* index in leaves or NONE */
};

struct edge {
    const char *key;          /* NULL: empty slot; borrowed from a pattern */
    uint32_t len;
    uint32_t parent;
    uint32_t child;
    uint32_t hash;
};

struct af_routes {
    struct route *routes;
    size_t nroutes;
    struct node *nodes;
    size_t nnodes, capnodes;
    struct leaf *leaves;
    size_t nleaves, capleaves;
    struct edge *edges;
    size_t edge_mask;         /* capacity - 1 (a power of two) */
    size_t nedges;
};

static int is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}


/* ---- the trie ---------------------------------------------------------- */

/* FNV-1a seeded with the parent, then a 64-bit finaliser so that parents
 * differing in low bits spread over the table. Keys come from the route
 * table (configuration), so a keyed hash buys nothing against requests:
 * they only probe, never insert. */
static uint32_t edge_hash(uint32_t parent, const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ ((uint64_t)parent * 0x9E3779B97F4A7C15ULL);
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (uint32_t)h;
}

static int32_t edge_find(const af_routes *rt, uint32_t parent, const char *p, size_t n)
{
    uint32_t h = edge_hash(parent, p, n);
    size_t i = h & rt->edge_mask;

    for (;; i = (i + 1) & rt->edge_mask) {
        const struct edge *ed = &rt->edges[i];
        if (ed->key == NULL)
            return NONE;
        if (ed->hash == h && ed->parent == parent && ed->len == n && memcmp(ed->key, p, n) == 0)
            return (int32_t)ed->child;
    }
}

static void edge_put(struct edge *tab, size_t mask, const struct edge *ed)
{
    size_t i = ed->hash & mask;

    while (tab[i].key != NULL)
        i = (i + 1) & mask;
    tab[i] = *ed;
}

/* Keeps the load factor at or under one half so probes stay short. */
static int edges_reserve(af_routes *rt)
{
    size_t cap = rt->edge_mask + 1, i;
    struct edge *tab;

    if (rt->edges != NULL && (rt->nedges + 1) * 2 <= cap)
        return AZC_OK;
    cap = rt->edges == NULL ? 64 : cap * 2;
    tab = calloc(cap, sizeof *tab);
    if (tab == NULL)
        return AZC_ENOMEM;
    if (rt->edges != NULL) {
        for (i = 0; i <= rt->edge_mask; i++) {
            if (rt->edges[i].key != NULL)
                edge_put(tab, cap - 1, &rt->edges[i]);
        }
    }
    free(rt->edges);
    rt->edges = tab;
    rt->edge_mask = cap - 1;
    return AZC_OK;
}

static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
    size_t nc;
    void *p;

    if (need <= *cap)
        return AZC_OK;
    nc = *cap == 0 ? 64 : *cap * 2;
    p = realloc(*arr, nc * size);
    if (p == NULL)
        return AZC_ENOMEM;
    *arr = p;
    *cap = nc;
    return AZC_OK;
}

/* Appends a node; *idx receives its index. */
static int node_new(af_routes *rt, int32_t *idx)
{
    void *arr = rt->nodes;
    int rc = grow(&arr, &rt->capnodes, rt->nnodes + 1, sizeof *rt->nodes);

    rt->nodes = arr;
    if (rc != AZC_OK)
        return rc;
    if (rt->nnodes >= INT32_MAX)
        return AZC_ETOOBIG;
    rt->nodes[rt->nnodes] = (struct node){ NONE, NONE, NONE };
    *idx = (int32_t)rt->nnodes++;
    return AZC_OK;
}

static int leaf_of(af_routes *rt, int32_t node, struct leaf **out)
{
    void *arr;
    int rc, m;

    if (rt->nodes[node].leaf == NONE) {
        arr = rt->leaves;
        rc = grow(&arr, &rt->capleaves, rt->nleaves + 1, sizeof *rt->leaves);
        rt->leaves = arr;
        if (rc != AZC_OK)
            return rc;
        for (m = 0; m < M_N; m++)
            rt->leaves[rt->nleaves].by_method[m] = NONE;
        rt->leaves[rt->nleaves].star = NONE;
        rt->nodes[node].leaf = (int32_t)rt->nleaves++;
    }
    *out = &rt->leaves[rt->nodes[node].leaf];
    return AZC_OK;
}

/* ---- building ---------------------------------------------------------- */

enum seg_kind { SEG_LITERAL, SEG_PARAM, SEG_REST };

struct tseg {
    enum seg_kind kind;
    const char *p;       /* literal bytes, or the parameter's name */
    size_t n;
};

static int oom(azc_err *e)
{
    return azc_err_set(e, AZC_ENOMEM, "routes: out of memory");
}

static int param_name_valid(const char *p, size_t n)
{
    size_t i;

    if (n == 0 || n > PARAM_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(is_alnum(c) || c == '_') || (i == 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

/* A literal segment must be spelt as normalisation writes it, or no
 * normalised request could ever match it. */
static int literal_check(size_t idx, const char *p, size_t n, azc_err *e)
{
    static const af_path_opts strict = { AF_SLASHES_REFUSE, AF_DOTS_REFUSE, AF_ENCSEP_KEEP };
    char in[AF_PATH_MAX + 2], norm[AF_PATH_MAX + 2];
    size_t outn;
    azc_err sub;

    in[0] = '/';
    memcpy(in + 1, p, n);
    if (af_path_normalize(in, n + 1, &strict, norm, sizeof norm, &outn, &sub) != AZC_OK)
        return azc_err_set(e, AZC_EINVAL, "route %zu: path segment \"%.*s\": %s", idx, (int)n, p,
                           sub.msg);
    if (outn != n + 1 || memcmp(norm, in, outn) != 0)
        return azc_err_set(e, AZC_EINVAL,
                           "route %zu: path segment \"%.*s\" is not in normalised form (\"%s\")",
                           idx, (int)n, p, norm + 1);
    return AZC_OK;
}

/* Splits the template into segments (borrowing from `path`). */
static int parse_template(size_t idx, const char *path, struct tseg *segs, size_t *nsegs,
                          azc_err *e)
{
    size_t len = strlen(path), i = 1, ns = 0, j, k;
    int rc;

    if (len == 0 || path[0] != '/')
        return azc_err_set(e, AZC_EINVAL, "route %zu: path must start with '/'", idx);
    if (len > AF_PATH_MAX)
        return azc_err_set(e, AZC_EINVAL, "route %zu: path longer than %d bytes", idx,
                           AF_PATH_MAX);
    for (;;) {
        const char *s = path + i, *q = strchr(s, '/');
        size_t n = q != NULL ? (size_t)(q - s) : strlen(s);
        int last = q == NULL;

        if (ns == SEGMENTS_MAX)
            return azc_err_set(e, AZC_EINVAL, "route %zu: path has more than %d segments", idx,
                               SEGMENTS_MAX);
        if (n > 0 && s[0] == '{') {
            int rest = n >= 3 && s[n - 2] == '*';
            size_t nn = n - 2 - (size_t)rest;
            if (s[n - 1] != '}' || !param_name_valid(s + 1, nn))
                return azc_err_set(e, AZC_EINVAL,
                                   "route %zu: bad parameter \"%.*s\" (want {name} or {name*}, "
                                   "name [A-Za-z_][A-Za-z0-9_]*)",
                                   idx, (int)n, s);
            if (rest && !last)
                return azc_err_set(e, AZC_EINVAL,
                                   "route %zu: rest parameter \"%.*s\" must be the last segment",
                                   idx, (int)n, s);
            segs[ns] = (struct tseg){ rest ? SEG_REST : SEG_PARAM, s + 1, nn };
            for (k = 0; k < ns; k++) {
                if (segs[k].kind != SEG_LITERAL && segs[k].n == nn &&
                    memcmp(segs[k].p, s + 1, nn) == 0)
                    return azc_err_set(e, AZC_EINVAL, "route %zu: parameter \"%.*s\" used twice",
                                       idx, (int)nn, s + 1);
            }
        } else {
            /* An empty segment is only the trailing slash ("/a/", "/"),
             * which is significant: "/a/" and "/a" are different routes. */
            if (n == 0 && !last)
                return azc_err_set(e, AZC_EINVAL, "route %zu: empty segment (\"//\")", idx);
            for (j = 0; j < n; j++) {
                if (s[j] == '{' || s[j] == '}')
                    return azc_err_set(e, AZC_EINVAL,
                                       "route %zu: a parameter must be a whole segment", idx);
            }
            if (n > 0 && (rc = literal_check(idx, s, n, e)) != AZC_OK)
                return rc;
            segs[ns] = (struct tseg){ SEG_LITERAL, s, n };
        }
        ns++;
        if (last)
            break;
        i += n + 1;
    }
    *nsegs = ns;
    return AZC_OK;
}

static int method_index(const char *s)
{
    int m;

    for (m = 0; m < M_N; m++) {
        if (strcmp(s, method_names[m]) == 0)
            return m;
    }
    return NONE;
}

/* *mask: bit per method; *star: the route is for any method. */
static int parse_methods(size_t idx, const json_t *v, unsigned *mask, int *star, azc_err *e)
{
    size_t i;
    json_t *it;
    int m;

    *mask = 0;
    *star = 0;
    if (json_is_string(v) && strcmp(json_string_value(v), "*") == 0) {
        *star = 1;
        return AZC_OK;
    }
    if (json_is_string(v)) {
        if ((m = method_index(json_string_value(v))) == NONE)
            return azc_err_set(e, AZC_EINVAL, "route %zu: unknown method \"%s\"", idx,
                               json_string_value(v));
        *mask = 1u << m;
        return AZC_OK;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return azc_err_set(e, AZC_EINVAL,
                           "route %zu: method must be a method name, \"*\" or a non-empty array "
                           "of names", idx);
    json_array_foreach(v, i, it) {
        const char *s = json_string_value(it);
        if (s == NULL || (m = method_index(s)) == NONE)
            return azc_err_set(e, AZC_EINVAL,
                               "route %zu: method %zu is not a known method name%s", idx, i,
                               s != NULL && strcmp(s, "*") == 0 ? " (\"*\" stands alone)" : "");
        if (*mask & (1u << m))
            return azc_err_set(e, AZC_EINVAL, "route %zu: method \"%s\" listed twice", idx, s);
        *mask |= 1u << m;
    }
    return AZC_OK;
}

/* Compiles the resource template into pieces; checks that each {name}
 * is a one-segment parameter of the path and that the result has the
 * shape of a resource whatever the parameters hold (the type fixed,
 * parameters only in the id). */
static int parse_resource(size_t idx, struct route *r, const struct tseg *segs, size_t nsegs,
                          azc_err *e)
{
    const char *s = r->resource, *slash;
    size_t len = strlen(s), i = 0, np = 0, k, tn = 0;
    char probe[AF_RESOURCE_MAX];

    if (strcmp(s, "*") == 0) {
        r->pieces = NULL;
        r->npieces = 0;
        return AZC_OK;
    }
    if (len >= AF_RESOURCE_MAX)
        return azc_err_set(e, AZC_EINVAL, "route %zu: resource longer than %d bytes", idx,
                           AF_RESOURCE_MAX - 1);
    slash = strchr(s, '/');
    if (slash == NULL || memchr(s, '{', (size_t)(slash - s)) != NULL)
        return azc_err_set(e, AZC_EINVAL,
                           "route %zu: resource must be \"<type>/<id>\" with a fixed type, or \"*\"",
                           idx);
    /* At most one piece per character plus one. */
    r->pieces = calloc(len + 1, sizeof *r->pieces);
    if (r->pieces == NULL)
        return oom(e);
    while (i < len) {
        const char *open = strchr(s + i, '{'), *close;
        size_t lit = open != NULL ? (size_t)(open - (s + i)) : len - i, n;
        int32_t seg = NONE;

        if (memchr(s + i, '}', lit) != NULL)
            return azc_err_set(e, AZC_EINVAL, "route %zu: resource has an unmatched '}'", idx);
        if (lit > 0) {
            r->pieces[np++] = (struct piece){ (uint32_t)i, (uint32_t)lit, NONE };
            if (tn + lit < sizeof probe)
                memcpy(probe + tn, s + i, lit);
            tn += lit;
            i += lit;
        }
        if (open == NULL)
            break;
        close = strchr(open, '}');
        if (close == NULL)
            return azc_err_set(e, AZC_EINVAL, "route %zu: resource has an unmatched '{'", idx);
        n = (size_t)(close - open - 1);
        for (k = 0; k < nsegs; k++) {
            if (segs[k].kind != SEG_LITERAL && segs[k].n == n && memcmp(segs[k].p, open + 1, n) == 0)
                break;
        }
        if (k == nsegs)
            return azc_err_set(e, AZC_EINVAL,
                               "route %zu: resource names {%.*s}, which is not a parameter of "
                               "the path", idx, (int)n, open + 1);
        if (segs[k].kind == SEG_REST)
            return azc_err_set(e, AZC_EINVAL,
                               "route %zu: resource may not use the rest parameter {%.*s} (a "
                               "resource id cannot hold '/')", idx, (int)n, open + 1);
        seg = (int32_t)k;
        r->pieces[np++] = (struct piece){ 0, 0, seg };
        r->has_params = 1;
        /* Any one-character id stands for the parameter in the shape check. */
        if (tn + 1 < sizeof probe)
            probe[tn] = 'x';
        tn++;
        i = (size_t)(close - s) + 1;
    }
    r->npieces = np;
    if (tn >= sizeof probe)
        return azc_err_set(e, AZC_EINVAL, "route %zu: resource too long", idx);
    probe[tn] = '\0';
    if (!azc_check_resource_valid(probe))
        return azc_err_set(e, AZC_EINVAL,
                           "route %zu: resource \"%s\" is not \"<type>/<id>\" (type "
                           "[a-z][a-z0-9_-]*, id of [A-Za-z0-9._~:@+=-])", idx, s);
    return AZC_OK;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);

    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

static int check_members(size_t idx, const json_t *o, azc_err *e)
{
    static const char *const known[] = { "method", "path", "action", "resource" };
    const char *key;
    json_t *v;
    size_t k;

    json_object_foreach((json_t *)o, key, v) {
        for (k = 0; k < sizeof known / sizeof known[0]; k++) {
            if (strcmp(key, known[k]) == 0)
                break;
        }
        if (k == sizeof known / sizeof known[0])
            return azc_err_set(e, AZC_EINVAL, "route %zu: unknown member \"%s\"", idx, key);
    }
    for (k = 0; k < sizeof known / sizeof known[0]; k++) {
        if (json_object_get(o, known[k]) == NULL)
            return azc_err_set(e, AZC_EINVAL, "route %zu: missing member \"%s\"", idx, known[k]);
    }
    return AZC_OK;
}

static int insert(af_routes *rt, size_t idx, const struct tseg *segs, size_t nsegs,
                  unsigned mask, int star, azc_err *e)
{
    int32_t node = 0, next;
    struct leaf *lf;
    size_t k;
    int m, rc;

    for (k = 0; k < nsegs; k++) {
        const struct tseg *sg = &segs[k];
        if (sg->kind == SEG_LITERAL) {
            next = edge_find(rt, (uint32_t)node, sg->p, sg->n);
            if (next == NONE) {
                struct edge ed;
                if ((rc = node_new(rt, &next)) != AZC_OK || (rc = edges_reserve(rt)) != AZC_OK)
                    return rc == AZC_ENOMEM ? oom(e) : azc_err_set(e, rc, "routes: too many");
                ed = (struct edge){ sg->p, (uint32_t)sg->n, (uint32_t)node, (uint32_t)next,
                                    edge_hash((uint32_t)node, sg->p, sg->n) };
                edge_put(rt->edges, rt->edge_mask, &ed);
                rt->nedges++;
            }
        } else {
            next = sg->kind == SEG_PARAM ? rt->nodes[node].param : rt->nodes[node].rest;
            if (next == NONE) {
                if ((rc = node_new(rt, &next)) != AZC_OK)
                    return rc == AZC_ENOMEM ? oom(e) : azc_err_set(e, rc, "routes: too many");
                if (sg->kind == SEG_PARAM)
                    rt->nodes[node].param = next;
                else
                    rt->nodes[node].rest = next;
            }
        }
        node = next;
    }
    if (leaf_of(rt, node, &lf) != AZC_OK)
        return oom(e);
    if (star) {
        if (lf->star != NONE)
            return azc_err_set(e, AZC_EINVAL,
                               "route %zu: same path shape and method as route %d", idx,
                               (int)lf->star);
        lf->star = (int32_t)idx;
        return AZC_OK;
    }
    for (m = 0; m < M_N; m++) {
        if (!(mask & (1u << m)))
            continue;
        if (lf->by_method[m] != NONE)
            return azc_err_set(e, AZC_EINVAL,
                               "route %zu: same path shape and method (%s) as route %d", idx,
                               method_names[m], (int)lf->by_method[m]);
        lf->by_method[m] = (int32_t)idx;
    }
    return AZC_OK;
}

static int build_route(af_routes *rt, size_t idx, const json_t *o, azc_err *e)
{
    struct route *r = &rt->routes[idx];
    struct tseg segs[SEGMENTS_MAX];
    const char *path, *action, *resource;
    size_t nsegs = 0;
    unsigned mask;
    int star, rc;

    if (!json_is_object(o))
        return azc_err_set(e, AZC_EINVAL, "route %zu: not an object", idx);
    if ((rc = check_members(idx, o, e)) != AZC_OK)
        return rc;
    path = json_string_value(json_object_get(o, "path"));
    action = json_string_value(json_object_get(o, "action"));
    resource = json_string_value(json_object_get(o, "resource"));
    if (path == NULL || action == NULL || resource == NULL)
        return azc_err_set(e, AZC_EINVAL, "route %zu: path, action and resource must be strings",
                           idx);
    if ((rc = parse_methods(idx, json_object_get(o, "method"), &mask, &star, e)) != AZC_OK)
        return rc;
    if (strlen(action) >= AF_ACTION_MAX || !azc_action_valid(action))
        return azc_err_set(e, AZC_EINVAL,
                           "route %zu: action \"%.64s\" is not \"<type>:<verb>\" (each "
                           "[a-z][a-z0-9_-]*, under %d bytes)", idx, action, AF_ACTION_MAX);
    r->pattern = dup_str(path);
    r->action = dup_str(action);
    r->resource = dup_str(resource);
    if (r->pattern == NULL || r->action == NULL || r->resource == NULL)
        return oom(e);
    r->action_len = strlen(action);
    /* Segments borrow from r->pattern, which lives as long as the table. */
    if ((rc = parse_template(idx, r->pattern, segs, &nsegs, e)) != AZC_OK ||
        (rc = parse_resource(idx, r, segs, nsegs, e)) != AZC_OK)
        return rc;
    return insert(rt, idx, segs, nsegs, mask, star, e);
}

int af_routes_new(const json_t *doc, af_routes **out, azc_err *e)
{
    const json_t *list;
    const char *key;
    json_t *v;
    af_routes *rt;
    int32_t root;
    size_t i;
    int rc;

    if (out == NULL)
        return azc_err_set(e, AZC_EINVAL, "routes: no output");
    *out = NULL;
    if (!json_is_object(doc))
        return azc_err_set(e, AZC_EINVAL, "routes: the document is not an object");
    json_object_foreach((json_t *)doc, key, v) {
        if (strcmp(key, "routes") != 0)
            return azc_err_set(e, AZC_EINVAL, "routes: unknown member \"%s\"", key);
    }
    list = json_object_get(doc, "routes");
    if (!json_is_array(list))
        return azc_err_set(e, AZC_EINVAL, "routes: \"routes\" must be an array");
    if (json_array_size(list) >= INT32_MAX)
        return azc_err_set(e, AZC_ETOOBIG, "routes: too many routes");
    rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return oom(e);
    rt->routes = calloc(json_array_size(list) + 1, sizeof *rt->routes);
    if (rt->routes == NULL || node_new(rt, &root) != AZC_OK || edges_reserve(rt) != AZC_OK) {
        af_routes_free(rt);
        return oom(e);
    }
    for (i = 0; i < json_array_size(list); i++) {
        rt->nroutes = i + 1;   /* so that free releases this one too */
        if ((rc = build_route(rt, i, json_array_get(list, i), e)) != AZC_OK) {
            af_routes_free(rt);
            return rc;
        }
    }
    *out = rt;
    return AZC_OK;
}

int af_routes_load_file(const char *path, af_routes **out, azc_err *e)
{
    json_error_t jerr;
    struct stat st;
    json_t *doc;
    FILE *f;
    int rc;

    if (out == NULL)
        return azc_err_set(e, AZC_EINVAL, "routes: no output");
    *out = NULL;
    if (path == NULL)
        return azc_err_set(e, AZC_EINVAL, "routes: no file");
    f = fopen(path, "rb");
    if (f == NULL)
        return azc_err_set(e, AZC_EINVAL, "routes file %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return azc_err_set(e, AZC_EINVAL, "routes file %s: not a regular file", path);
    }
    if (st.st_size > ROUTES_FILE_MAX) {
        fclose(f);
        return azc_err_set(e, AZC_ETOOBIG, "routes file %s: larger than %d bytes", path,
                           ROUTES_FILE_MAX);
    }
    doc = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (doc == NULL)
        return azc_err_set(e, AZC_EINVAL, "routes file %s: invalid JSON at line %d column %d: %s",
                           path, jerr.line, jerr.column, jerr.text);
    rc = af_routes_new(doc, out, e);
    json_decref(doc);
    return rc;
}

void af_routes_free(af_routes *rt)
{
    size_t i;

    if (rt == NULL)
        return;
    for (i = 0; i < rt->nroutes; i++) {
        free(rt->routes[i].pattern);
        free(rt->routes[i].action);
        free(rt->routes[i].resource);
        free(rt->routes[i].pieces);
    }
    free(rt->routes);
    free(rt->nodes);
    free(rt->leaves);
    free(rt->edges);
    free(rt);
}

size_t af_routes_count(const af_routes *rt)
{
    return rt != NULL ? rt->nroutes : 0;
}

/* ---- matching ---------------------------------------------------------- */

struct span {
    const char *p;
    size_t n;
};

struct walk {
    const af_routes *rt;
    int method;
    const char *end;
    struct span segs[SEGMENTS_MAX];
};

static int32_t leaf_pick(const af_routes *rt, int32_t leaf, int method)
{
    const struct leaf *lf;

    if (leaf == NONE)
        return NONE;
    lf = &rt->leaves[leaf];
    if (method != NONE && lf->by_method[method] != NONE)
        return lf->by_method[method];
    if (method == M_HEAD && lf->by_method[M_GET] != NONE)
        return lf->by_method[M_GET];
    return lf->star;
}

/* p: start of the segment at `depth`, NULL once every segment is consumed.
 * Depth-first in precedence order, so the first route found wins; a leaf
 * without a route for the method lets the walk fall back to a less
 * specific template that has one. */
static int32_t walk(struct walk *w, int32_t node, size_t depth, const char *p)
{
    const struct node *nd = &w->rt->nodes[node];
    const char *q, *next;
    size_t n;
    int32_t child, r;

    if (p == NULL)
        return leaf_pick(w->rt, nd->leaf, w->method);
    if (depth >= SEGMENTS_MAX)
        return NONE;
    q = memchr(p, '/', (size_t)(w->end - p));
    n = q != NULL ? (size_t)(q - p) : (size_t)(w->end - p);
    next = q != NULL ? q + 1 : NULL;
    w->segs[depth] = (struct span){ p, n };
    child = edge_find(w->rt, (uint32_t)node, p, n);
    if (child != NONE && (r = walk(w, child, depth + 1, next)) != NONE)
        return r;
    if (n > 0 && nd->param != NONE && (r = walk(w, nd->param, depth + 1, next)) != NONE)
        return r;
    if (n > 0 && nd->rest != NONE)
        return leaf_pick(w->rt, w->rt->nodes[nd->rest].leaf, w->method);
    return NONE;
}

static int method_of(const char *s)
{
    switch (s[0]) {
    case 'G': return strcmp(s, "GET") == 0 ? M_GET : NONE;
    case 'H': return strcmp(s, "HEAD") == 0 ? M_HEAD : NONE;
    case 'P':
        if (strcmp(s, "POST") == 0)
            return M_POST;
        if (strcmp(s, "PUT") == 0)
            return M_PUT;
        return strcmp(s, "PATCH") == 0 ? M_PATCH : NONE;
    case 'D': return strcmp(s, "DELETE") == 0 ? M_DELETE : NONE;
    case 'O': return strcmp(s, "OPTIONS") == 0 ? M_OPTIONS : NONE;
    case 'T': return strcmp(s, "TRACE") == 0 ? M_TRACE : NONE;
    case 'C': return strcmp(s, "CONNECT") == 0 ? M_CONNECT : NONE;
    default: return NONE;
    }
}

int af_routes_match(const af_routes *rt, const char *method, const char *path, size_t len,
                    af_route_match *m)
{
    struct walk w;
    const struct route *r;
    int32_t idx;
    size_t i, o = 0;

    if (rt == NULL || method == NULL || path == NULL || m == NULL || len == 0 || path[0] != '/')
        return AZC_EINVAL;
    if (len > AF_PATH_MAX)
        return AZC_ETOOBIG;
    w.rt = rt;
    w.method = method_of(method);
    w.end = path + len;
    idx = walk(&w, 0, 0, path + 1);
    if (idx == NONE)
        return 0;
    r = &rt->routes[idx];
    m->route = (size_t)idx;
    m->pattern = r->pattern;
    memcpy(m->action, r->action, r->action_len + 1);
    if (r->npieces == 0) {
        /* "*": validated at build, no parameters. */
        memcpy(m->resource, r->resource, strlen(r->resource) + 1);
        return 1;
    }
    for (i = 0; i < r->npieces; i++) {
        const struct piece *pc = &r->pieces[i];
        const char *src = pc->seg == NONE ? r->resource + pc->off : w.segs[pc->seg].p;
        size_t n = pc->seg == NONE ? pc->len : w.segs[pc->seg].n;
        if (o + n >= AF_RESOURCE_MAX)
            return AZC_ETOOBIG;
        memcpy(m->resource + o, src, n);
        o += n;
    }
    m->resource[o] = '\0';
    /* A parameter may hold what no resource id may ("*", "%2F", "!"):
     * such a request gets an error, never a wildcard resource. */
    if (r->has_params && !azc_check_resource_valid(m->resource))
        return AZC_EINVAL;
    return 1;
}
