/*
 * The policy index's writer (index.h, "writer side"): validates rows of
 * snapshots and feed answers and builds each new generation from them,
 * copying only what a change touches; index.c holds the records, tables
 * and generations it builds with, and the reader.
 */
#include "gateway-filter/index_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu-bp.h>

#include "common/policy.h"

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- row validation (the same checks as replicator/apply.c, plus the
 * policy vocabulary) ---------------------------------------------------- */

static const char *str_member(const json_t *row, const char *name)
{
    json_t *v = json_object_get(row, name);
    const char *s;

    if (!json_is_string(v))
        return NULL;
    s = json_string_value(v);
    return strlen(s) == json_string_length(v) && s[0] != '\0' ? s : NULL;
}

/* A non-negative integer, or a decimal string of one. */
static int u64_parse(const json_t *v, uint64_t *out)
{
    const char *s;
    char *end;
    unsigned long long n;

    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            return -1;
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = n;
    return 0;
}

static int cursor_parse(const json_t *v, long long *out)
{
    uint64_t n;

    if (u64_parse(v, &n) != 0 || n > (uint64_t)9223372036854775807LL)
        return -1;
    *out = (long long)n;
    return 0;
}

static int origin_index(gen *g, const char *name)
{
    size_t i;

    for (i = 0; i < g->n_origins; i++)
        if (strcmp(g->marks[i].name, name) == 0)
            return (int)i;
    if (g->n_origins == AF_MAX_ORIGINS || !azc_region_valid(name))
        return -1;
    memset(&g->marks[g->n_origins], 0, sizeof g->marks[0]);
    strcpy(g->marks[g->n_origins].name, name);
    return (int)g->n_origins++;
}

/* Checks what every row carries. NULL or the reason. */
static const char *row_common(const json_t *row, int *deleted)
{
    json_t *hlc, *oseq, *del;
    const char *origin;

    if (!json_is_object(row))
        return "row is not an object";
    hlc = json_object_get(row, "hlc");
    oseq = json_object_get(row, "origin_seq");
    del = json_object_get(row, "deleted");
    origin = str_member(row, "origin");
    if (!json_is_integer(hlc) || json_integer_value(hlc) < 0)
        return "hlc is not a non-negative integer";
    if (!json_is_integer(oseq) || json_integer_value(oseq) < 0)
        return "origin_seq is not a non-negative integer";
    if (!json_is_boolean(del))
        return "deleted is not a boolean";
    if (origin == NULL || !azc_region_valid(origin))
        return "origin is not a region name";
    *deleted = json_is_true(del);
    return NULL;
}

/* ---- applying rows to a generation being built ---------------------- */


static rec *find_main(build *b, int kind, const char *key, uint64_t *h)
{
    *h = key_hash(kind, key);
    return table_find(&b->g->main, kind, *h, key);
}

/* add: makes the subject's reference to user_id exist and point at the
 * user's current record; otherwise removes it. */
static int subj_change(build *b, const char *subject, const char *user_id, int add)
{
    uint64_t h, uh = key_hash(K_USER, user_id);
    rec *o = find_main(b, K_SUBJ, subject, &h), *r;
    const rec *u = add ? table_find(&b->g->main, K_USER, uh, user_id) : NULL;
    size_t i;

    if (o == NULL && !add)
        return AZC_OK;
    for (i = 0; o != NULL && i < o->nusers; i++)
        if (strcmp(ref_id(&o->users[i]), user_id) == 0)
            break;
    if (o != NULL && i < o->nusers && add && o->users[i].r == u)
        return AZC_OK;
    if (o != NULL && i == o->nusers && !add)
        return AZC_OK;
    if ((r = af__rec_writable(o, K_SUBJ, subject, h, b->born,
                              add && (o == NULL || i == o->nusers))) == NULL)
        return AZC_ENOMEM;
    if (add && i == r->nusers) {
        if (af__ref_set(&r->users[r->nusers], user_id, uh) != AZC_OK) {
            if (r != o)
                af__rec_free(r);
            return AZC_ENOMEM;
        }
        r->users[r->nusers++].r = u;
    } else if (add) {
        r->users[i].r = u;
    } else {
        free(r->users[i].big);
        r->users[i] = r->users[--r->nusers];
    }
    return af__rec_commit(&b->g->main, r, b->born, &b->gc);
}

/* After a user's record was committed (perhaps as a new copy): its
 * subject's reference follows it. */
static int subj_point(build *b, int kind, const char *user_id)
{
    uint64_t h;
    const rec *u;

    if (kind != K_USER || (u = find_main(b, K_USER, user_id, &h)) == NULL || u->subject == NULL)
        return AZC_OK;
    return subj_change(b, u->subject, user_id, 1);
}

static int apply_user(build *b, const json_t *row, int deleted, azc_err *e)
{
    const char *id = str_member(row, "user_id"), *subject = str_member(row, "subject");
    uint64_t h;
    rec *o, *r;
    int rc;

    if (id == NULL)
        return azc_err_set(e, AZC_EINVAL, "user_id is not a string");
    if (!azc_subject_valid(subject))
        return azc_err_set(e, AZC_EINVAL, "subject is not a valid subject");
    o = find_main(b, K_USER, id, &h);
    if (o != NULL && o->subject != NULL) {
        if (!deleted && strcmp(o->subject, subject) == 0)
            return AZC_OK;
        if ((rc = subj_change(b, o->subject, id, 0)) != AZC_OK)
            return azc_err_set(e, rc, "out of memory");
        o = table_find(&b->g->main, K_USER, h, id);
    }
    if (o == NULL && deleted)
        return AZC_OK;
    if ((r = af__rec_writable(o, K_USER, id, h, b->born, 0)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (o == NULL || o->subject == NULL)
        b->g->users += deleted ? 0 : 1;
    else if (deleted)
        b->g->users--;
    free(r->subject);
    r->subject = NULL;
    if (!deleted && (r->subject = strdup(subject)) == NULL) {
        if (r != o)
            af__rec_free(r);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    if ((rc = af__rec_commit(&b->g->main, r, b->born, &b->gc)) != AZC_OK)
        return azc_err_set(e, rc, "out of memory");
    if (!deleted && (rc = subj_change(b, subject, id, 1)) != AZC_OK)
        return azc_err_set(e, rc, "out of memory");
    return AZC_OK;
}

static int apply_membership(build *b, const json_t *row, int deleted, int origin, azc_err *e)
{
    const char *team = str_member(row, "team_id"), *user = str_member(row, "user_id");
    uint64_t h;
    rec *o, *r;
    size_t i;
    int rc;

    if (team == NULL)
        return azc_err_set(e, AZC_EINVAL, "team_id is not a string");
    if (user == NULL)
        return azc_err_set(e, AZC_EINVAL, "user_id is not a string");
    o = find_main(b, K_USER, user, &h);
    for (i = 0; o != NULL && i < o->nteams; i++)
        if (strcmp(ref_id(&o->teams[i]), team) == 0)
            break;
    if (o == NULL && deleted)
        return AZC_OK;
    if (o != NULL && i == o->nteams && deleted)
        return AZC_OK;
    if (o != NULL && i < o->nteams && !deleted && o->teams[i].origin == origin)
        return AZC_OK;
    if ((r = af__rec_writable(o, K_USER, user, h, b->born,
                              !deleted && (o == NULL || i == o->nteams))) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (deleted) {
        free(r->teams[i].big);
        r->teams[i] = r->teams[--r->nteams];
        b->g->memberships--;
    } else if (i < r->nteams) {
        r->teams[i].origin = (short)origin;
    } else {
        if (af__ref_set(&r->teams[r->nteams], team, key_hash(K_TEAM, team)) != AZC_OK) {
            if (r != o)
                af__rec_free(r);
            return azc_err_set(e, AZC_ENOMEM, "out of memory");
        }
        r->teams[r->nteams++].origin = (short)origin;
        b->g->memberships++;
    }
    if ((rc = af__rec_commit(&b->g->main, r, b->born, &b->gc)) != AZC_OK ||
        (rc = subj_point(b, K_USER, user)) != AZC_OK)
        return azc_err_set(e, rc, "out of memory");
    return AZC_OK;
}

/* Removes the entries of a from its principal's record. */
static int principal_drop(build *b, const asg *a)
{
    uint64_t h;
    rec *o = find_main(b, a->ptype, a->ptype_id, &h), *r;
    int had, rc;

    if (o == NULL)
        return AZC_OK;
    if ((r = af__rec_writable(o, a->ptype, a->ptype_id, h, b->born, 0)) == NULL)
        return AZC_ENOMEM;
    had = r->nent > 0;
    if (af__ents_drop(r, a) != AZC_OK) {
        if (r != o)
            af__rec_free(r);
        return AZC_ENOMEM;
    }
    if (a->ptype == K_TEAM && had && r->nent == 0)
        b->g->teams--;
    if ((rc = af__rec_commit(&b->g->main, r, b->born, &b->gc)) != AZC_OK)
        return rc;
    return subj_point(b, a->ptype, a->ptype_id);
}

static int principal_add(build *b, const asg *a)
{
    uint64_t h;
    rec *o = find_main(b, a->ptype, a->ptype_id, &h), *r;
    int had, rc;

    if ((r = af__rec_writable(o, a->ptype, a->ptype_id, h, b->born, 0)) == NULL)
        return AZC_ENOMEM;
    had = r->nent > 0;
    if (af__ents_add(r, a) != AZC_OK) {
        if (r != o)
            af__rec_free(r);
        return AZC_ENOMEM;
    }
    if (a->ptype == K_TEAM && !had && r->nent > 0)
        b->g->teams++;
    if ((rc = af__rec_commit(&b->g->main, r, b->born, &b->gc)) != AZC_OK)
        return rc;
    return subj_point(b, a->ptype, a->ptype_id);
}

/* An assignment and everything it points to in one block, in the order an
 * allow reads them (the hashes, the resource, the permissions), so that
 * confirming a grant costs one or two cache misses, not four. The caller
 * has validated perms (an array of strings). */
static asg *asg_alloc(const char *id, const char *pid, const char *res, const json_t *perms)
{
    size_t n = json_array_size(perms), len = sizeof(asg) + n * (sizeof(uint64_t) +
                                                                  sizeof(char *)),
           i, k;
    const json_t *p;
    asg *a;
    char *c;

    len += strlen(res) + strlen(id) + strlen(pid) + 3;
    json_array_foreach(perms, i, p)
        len += json_string_length(p) + 1;
    if ((a = calloc(1, len)) == NULL)
        return NULL;
    a->perm_h = (uint64_t *)(a + 1);
    a->perm = (char **)(a->perm_h + n);
    c = (char *)(a->perm + n);
    a->resource = memcpy(c, res, (k = strlen(res) + 1));
    c += k;
    json_array_foreach(perms, i, p) {
        a->perm[i] = memcpy(c, json_string_value(p), (k = json_string_length(p) + 1));
        a->perm_h[i] = hash_str(a->perm[i]);
        c += k;
    }
    a->nperm = n;
    a->res_h = hash_str(a->resource);
    a->id = memcpy(c, id, (k = strlen(id) + 1));
    c += k;
    a->ptype_id = memcpy(c, pid, strlen(pid) + 1);
    return a;
}

static int apply_policy(build *b, const json_t *row, int deleted, int origin, azc_err *e)
{
    const char *id = str_member(row, "assignment_id"), *pt = str_member(row, "principal_type");
    const char *pid = str_member(row, "principal_id"), *region = str_member(row, "region");
    const char *res = str_member(row, "resource");
    json_t *perms = json_object_get(row, "permissions"), *p;
    uint64_t h;
    rec *o, *r;
    asg *a;
    size_t i;
    int rc, applies;

    if (id == NULL)
        return azc_err_set(e, AZC_EINVAL, "assignment_id is not a string");
    if (pt == NULL || (strcmp(pt, "user") != 0 && strcmp(pt, "team") != 0))
        return azc_err_set(e, AZC_EINVAL, "principal_type is not \"user\" or \"team\"");
    if (pid == NULL)
        return azc_err_set(e, AZC_EINVAL, "principal_id is not a string");
    if (str_member(row, "role_id") == NULL)
        return azc_err_set(e, AZC_EINVAL, "role_id is not a string");
    if (region == NULL || (strcmp(region, "*") != 0 && !azc_region_valid(region)))
        return azc_err_set(e, AZC_EINVAL, "region is not a region name or \"*\"");
    if (!azc_resource_valid(res))
        return azc_err_set(e, AZC_EINVAL, "resource is not a resource pattern");
    if (!json_is_array(perms))
        return azc_err_set(e, AZC_EINVAL, "permissions is not an array");
    json_array_foreach(perms, i, p) {
        if (!json_is_string(p) || strlen(json_string_value(p)) != json_string_length(p) ||
            !azc_permission_valid(json_string_value(p)))
            return azc_err_set(e, AZC_EINVAL, "permissions holds an invalid permission");
    }
    applies = !deleted && json_array_size(perms) > 0 &&
              (strcmp(region, "*") == 0 || strcmp(region, b->ix->region) == 0);
    h = key_hash(K_ASG, id);
    o = table_find(&b->g->asg, K_ASG, h, id);
    if (o != NULL) {
        if ((rc = principal_drop(b, o->a)) != AZC_OK ||
            (rc = af__table_put(&b->g->asg, K_ASG, h, id, NULL, b->born, &b->gc)) != AZC_OK)
            return azc_err_set(e, rc, "out of memory");
        b->g->assignments--;
    }
    if (!applies)
        return AZC_OK;
    if ((r = af__rec_alloc(id, 0)) == NULL || (r->a = a = asg_alloc(id, pid, res, perms)) == NULL)
        goto oom;
    r->kind = K_ASG;
    r->born = b->born;
    r->h = h;
    a->ptype = strcmp(pt, "user") == 0 ? K_USER : K_TEAM;
    a->origin = origin;
    if ((rc = af__table_put(&b->g->asg, K_ASG, h, id, r, b->born, &b->gc)) != AZC_OK)
        goto oom;
    b->g->assignments++;
    if ((rc = principal_add(b, a)) != AZC_OK)
        return azc_err_set(e, rc, "out of memory");
    return AZC_OK;
oom:
    af__rec_free(r);
    return azc_err_set(e, AZC_ENOMEM, "out of memory");
}

enum { KIND_USER, KIND_MEMBERSHIP, KIND_POLICY };

static int apply_row(build *b, int kind, const json_t *row, azc_err *e)
{
    const char *why;
    int deleted = 0, origin;

    if ((why = row_common(row, &deleted)) != NULL)
        return azc_err_set(e, AZC_EINVAL, "%s", why);
    if ((origin = origin_index(b->g, str_member(row, "origin"))) < 0)
        return azc_err_set(e, AZC_EINVAL, "more than %d origins", AF_MAX_ORIGINS);
    switch (kind) {
    case KIND_USER:
        return apply_user(b, row, deleted, e);
    case KIND_MEMBERSHIP:
        return apply_membership(b, row, deleted, origin, e);
    default:
        return apply_policy(b, row, deleted, origin, e);
    }
}

/* Raises the marks to the answer's watermarks (never down). *changed is
 * set when one moved. */
static int apply_watermarks(gen *g, const json_t *wm, int *changed, azc_err *e)
{
    const char *origin;
    json_t *v;

    if (wm == NULL)
        return AZC_OK;
    if (!json_is_object(wm))
        return azc_err_set(e, AZC_EINVAL, "watermarks is not an object");
    json_object_foreach((json_t *)wm, origin, v) {
        uint64_t a, k;
        int i;

        if (!json_is_object(v) || u64_parse(json_object_get(v, "applied"), &a) != 0 ||
            u64_parse(json_object_get(v, "known"), &k) != 0)
            return azc_err_set(e, AZC_EINVAL, "watermark of %.32s is malformed", origin);
        if ((i = origin_index(g, origin)) < 0)
            return azc_err_set(e, AZC_EINVAL, "watermark origin %.32s is invalid or one too many",
                               origin);
        if (a > g->marks[i].applied) {
            g->marks[i].applied = a;
            *changed = 1;
        }
        if (k > g->marks[i].known) {
            g->marks[i].known = k;
            *changed = 1;
        }
    }
    return AZC_OK;
}

static size_t gen_bytes(const gen *g)
{
    /* Approximate: tables, records and entries at their typical sizes (an
     * entry table is 35-70% full). */
    return sizeof *g + (g->main.nb + g->asg.nb) * sizeof(bucket *) +
           (g->users + g->teams) * (sizeof(rec) + sizeof(bucket) + 2 * sizeof(slot) + 48) +
           g->memberships * sizeof(team_ref) + g->assignments * (sizeof(rec) +
           sizeof(slot) + sizeof(asg) + 160 + 3 * sizeof(ent));
}

static void publish(af_index *ix, gen *g, garbage *gc, gen *old, int old_whole)
{
    g->number = ix->next_number++;
    g->published_ms = now_ms();
    g->bytes = gen_bytes(g);
    rcu_assign_pointer(ix->cur, g);
    synchronize_rcu();
    if (old_whole)
        af__gen_free_all(old);
    else
        free(old);
    af__gc_run(gc, 1);
}

/* A snapshot being loaded: a generation of its own, private until
 * commit publishes it. */
struct af_index_loader {
    build b;
    size_t rows[3];     /* per kind, for the error messages */
};

static const char *const SNAP_KEYS[3] = { "users", "memberships", "policies" };

void af_index_loader_free(af_index_loader *l)
{
    if (l == NULL)
        return;
    af__gen_free_all(l->b.g);
    af__gc_run(&l->b.gc, 0);
    free(l);
}

int af_index_loader_new(af_index *ix, const json_t *head, af_index_loader **out, azc_err *e)
{
    af_index_loader *l;
    long long cursor;
    const char *region;
    int rc, changed = 0;

    *out = NULL;
    if (!json_is_object(head))
        return azc_err_set(e, AZC_EINVAL, "snapshot is not a JSON object");
    if (cursor_parse(json_object_get(head, "cursor"), &cursor) != 0)
        return azc_err_set(e, AZC_EINVAL, "snapshot has no valid cursor");
    region = str_member(head, "region");
    if (region == NULL || strcmp(region, ix->region) != 0)
        return azc_err_set(e, AZC_EINVAL, "snapshot is not of region %s", ix->region);
    if ((l = calloc(1, sizeof *l)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    l->b.ix = ix;
    l->b.born = UINT64_MAX; /* every record of a fresh build is private to it */
    if ((l->b.g = calloc(1, sizeof *l->b.g)) == NULL ||
        af__table_init(&l->b.g->main, MAIN_BUCKETS, l->b.born) != AZC_OK ||
        af__table_init(&l->b.g->asg, ASG_BUCKETS, l->b.born) != AZC_OK) {
        af_index_loader_free(l);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    l->b.g->cursor = cursor;
    /* The head's watermarks belong to exactly the rows that follow (one
     * snapshot): they are taken now and published with them. */
    if ((rc = apply_watermarks(l->b.g, json_object_get(head, "watermarks"), &changed, e)) !=
        AZC_OK) {
        af_index_loader_free(l);
        return rc;
    }
    *out = l;
    return AZC_OK;
}

static int kind_parse(const char *s);

/* Rows of kind k of a snapshot array (kind -1: of the kind named by a
 * change-feed "kind" string). */
static int loader_add(af_index_loader *l, int kind, const json_t *row, azc_err *e)
{
    char m[AZC_ERRMSG_MAX];
    size_t i;
    int rc;

    if (kind < 0 || kind > 2)
        return azc_err_set(e, AZC_EINVAL, "snapshot row of an unknown kind");
    i = l->rows[kind]++;
    if (json_is_object(row) && json_is_true(json_object_get(row, "deleted")))
        return AZC_OK;
    if ((rc = apply_row(&l->b, kind, row, e)) != AZC_OK) {
        snprintf(m, sizeof m, "%s", e != NULL ? e->msg : "");
        return azc_err_set(e, rc, "snapshot %s[%zu]: %s", SNAP_KEYS[kind], i, m);
    }
    return AZC_OK;
}

int af_index_loader_row(af_index_loader *l, const char *kind, const json_t *row, azc_err *e)
{
    return loader_add(l, kind_parse(kind), row, e);
}

int af_index_loader_commit(af_index_loader *l, const json_t *counts, azc_err *e)
{
    af_index *ix = l->b.ix;
    size_t k, i;

    for (k = 0; counts != NULL && k < 3; k++) {
        json_t *c = json_object_get(counts, SNAP_KEYS[k]);

        if (!json_is_integer(c) || json_integer_value(c) != (json_int_t)l->rows[k])
            return azc_err_set(e, AZC_EINVAL, "the snapshot counts %s %s, %zu were received",
                               json_is_integer(c) ? "other" : "no", SNAP_KEYS[k], l->rows[k]);
    }

    /* From now on everything belongs to a published generation; the next
     * writer must copy, so mark it all as born before it. */
    for (k = 0; k < 2; k++) {
        table *t = k == 0 ? &l->b.g->main : &l->b.g->asg;

        t->top_born = 0;
        for (i = 0; i < t->nb; i++) {
            bucket *bk = t->b[i];
            size_t j;

            if (bk == NULL)
                continue;
            bk->born = 0;
            for (j = 0; j < bk->n; j++)
                bk->s[j].r->born = 0;
        }
    }
    publish(ix, l->b.g, &l->b.gc, ix->cur, 1);
    free(l);
    return AZC_OK;
}

int af_index_load_snapshot(af_index *ix, const json_t *snap, azc_err *e)
{
    af_index_loader *l = NULL;
    size_t k, i;
    int rc;

    if (!json_is_object(snap))
        return azc_err_set(e, AZC_EINVAL, "snapshot is not a JSON object");
    for (k = 0; k < 3; k++)
        if (!json_is_array(json_object_get(snap, SNAP_KEYS[k])))
            return azc_err_set(e, AZC_EINVAL, "snapshot has no %s array", SNAP_KEYS[k]);
    if ((rc = af_index_loader_new(ix, snap, &l, e)) != AZC_OK)
        return rc;
    for (k = 0; k < 3; k++) {
        json_t *row;

        json_array_foreach(json_object_get(snap, SNAP_KEYS[k]), i, row) {
            if ((rc = loader_add(l, (int)k, row, e)) != AZC_OK) {
                af_index_loader_free(l);
                return rc;
            }
        }
    }
    return af_index_loader_commit(l, NULL, e);
}

/* A change-feed kind name (NULL: none) as KIND_*, -1 when unknown. */
static int kind_parse(const char *s)
{
    if (s == NULL)
        return -1;
    if (strcmp(s, "user") == 0)
        return KIND_USER;
    if (strcmp(s, "membership") == 0)
        return KIND_MEMBERSHIP;
    if (strcmp(s, "policy") == 0)
        return KIND_POLICY;
    return -1;
}

int af_index_apply(af_index *ix, const json_t *answer, azc_err *e)
{
    json_t *changes = json_object_get(answer, "changes"), *ch;
    gen *old = ix->cur;
    build b = { 0 };
    long long cursor, last;
    size_t i;
    int rc, changed = 0;

    if (old == NULL)
        return azc_err_set(e, AZC_ECONFLICT, "no snapshot loaded yet");
    if (!json_is_object(answer) || !json_is_array(changes))
        return azc_err_set(e, AZC_EINVAL, "feed answer has no changes array");
    if (cursor_parse(json_object_get(answer, "cursor"), &cursor) != 0)
        return azc_err_set(e, AZC_EINVAL, "feed answer has no valid cursor");
    if (!json_is_boolean(json_object_get(answer, "more")))
        return azc_err_set(e, AZC_EINVAL, "feed answer has no boolean more");
    last = old->cursor;
    json_array_foreach(changes, i, ch) {
        json_t *seq = json_object_get(ch, "seq");

        if (!json_is_object(ch) || !json_is_integer(seq))
            return azc_err_set(e, AZC_EINVAL, "changes[%zu]: seq is not an integer", i);
        if (json_integer_value(seq) <= last)
            return azc_err_set(e, AZC_EINVAL, "changes[%zu]: seq %lld is not above %lld", i,
                               (long long)json_integer_value(seq), last);
        last = json_integer_value(seq);
        if (kind_parse(json_string_value(json_object_get(ch, "kind"))) < 0)
            return azc_err_set(e, AZC_EINVAL, "changes[%zu]: unknown kind", i);
        if (json_object_get(ch, "row") == NULL)
            return azc_err_set(e, AZC_EINVAL, "changes[%zu]: change has no row", i);
    }
    if (cursor < last)
        return azc_err_set(e, AZC_EINVAL, "feed answer cursor %lld is below its seq %lld",
                           cursor, last);
    b.ix = ix;
    b.born = ix->next_number; /* the number this generation will get */
    if ((b.g = malloc(sizeof *b.g)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    *b.g = *old;
    b.g->cursor = cursor;
    if ((rc = apply_watermarks(b.g, json_object_get(answer, "watermarks"), &changed, e)) !=
        AZC_OK)
        goto fail;
    json_array_foreach(changes, i, ch) {
        if ((rc = apply_row(&b, kind_parse(json_string_value(json_object_get(ch, "kind"))),
                            json_object_get(ch, "row"), e)) != AZC_OK) {
            char m[AZC_ERRMSG_MAX];

            snprintf(m, sizeof m, "%s", e != NULL ? e->msg : "");
            rc = azc_err_set(e, rc, "changes[%zu]: %s", i, m);
            goto fail;
        }
    }
    if (json_array_size(changes) == 0 && cursor == old->cursor && !changed) {
        free(b.g);
        return AZC_OK;
    }
    publish(ix, b.g, &b.gc, old, 0);
    return AZC_OK;
fail:
    /* Undo: what this build made is private (born == b.born); what it
     * replaced is on the garbage list and still in the old generation. */
    {
        size_t k, j;

        for (k = 0; k < 2; k++) {
            table *t = k == 0 ? &b.g->main : &b.g->asg;
            const table *ot = k == 0 ? &old->main : &old->asg;

            if (t->top_born != b.born)
                continue;
            for (j = 0; j < t->nb; j++) {
                bucket *bk = t->b[j];
                size_t s;

                if (bk == NULL || bk->born != b.born)
                    continue;
                for (s = 0; s < bk->n; s++)
                    if (bk->s[s].r->born == b.born)
                        af__rec_free(bk->s[s].r);
                free(bk);
            }
            free(t->b);
            (void)ot;
        }
        free(b.g);
        af__gc_run(&b.gc, 0);
    }
    return rc;
}
