/*
 * The gateway filter's policy index: immutable generations published with
 * RCU (liburcu-bp); see index.h for the contract. This file holds the
 * records, tables and generations and the reader's check; index_apply.c
 * is the writer that builds generations from snapshots and feed answers.
 *
 * Layout. A generation holds two hash tables of immutable records and the
 * watermarks. "main" maps users, teams and subjects (what a check reads);
 * "asg" maps assignment ids to their assignment (what only the writer
 * reads, to find an assignment's principal on update or delete). A table
 * is a top array of bucket pointers; a bucket is an array of (hash,
 * record) pairs so a lookup compares integers before it touches a record.
 * A change copies the records it touches, their buckets and, once per
 * answer, the top array: O(changed rows + top array), never a copy of the
 * whole set. Anything born in the generation being built (gen_born) is
 * still private to the writer and is changed in place, which is what makes
 * a snapshot load one pass.
 *
 * Freeing. What a new generation replaced goes on a garbage list that is
 * freed after synchronize_rcu(): once it returns no reader can still hold
 * the old generation. The writer blocks for one grace period per answer
 * (a few a second), readers never do.
 *
 * A user or team record carries entries, one per (assignment,
 * permission), each holding the permission's and the resource's hash, in
 * a small open-addressed table keyed by the resource's hash. A request can
 * only be granted on its resource, its type's wildcard or "*", so a check
 * probes three short runs of slots per record instead of reading every
 * entry: a team with 40 assignments costs three cache lines, not fifteen,
 * and a deny (which reads everything a scan would) costs the same as an
 * allow. A hash match is confirmed on the real strings
 * (azc_permission_grants, azc_resource_covers), so a collision can never
 * allow.
 */
#include "gateway-filter/index_internal.h"

#include <stdlib.h>
#include <string.h>

#include <urcu-bp.h>

#include "common/policy.h"

/* ---- records and tables --------------------------------------------- */

void af__rec_free(rec *r)
{
    size_t i;

    if (r == NULL)
        return;
    free(r->subject);
    for (i = 0; i < r->nteams; i++) /* or users: the same array */
        free(r->teams[i].big);
    free(r->ents);
    free(r->a);         /* one block (index_apply.c's asg_alloc) */
    free(r);
}

static int gc_add(garbage *g, int what, void *p)
{
    if (p == NULL)
        return AZC_OK;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64;
        struct gitem *v = realloc(g->v, cap * sizeof *v);

        if (v == NULL)
            return AZC_ENOMEM;
        g->v = v;
        g->cap = cap;
    }
    g->v[g->n].what = what;
    g->v[g->n++].p = p;
    return AZC_OK;
}

void af__gc_run(garbage *g, int free_items)
{
    size_t i;

    for (i = 0; free_items && i < g->n; i++) {
        if (g->v[i].what == 1)
            af__rec_free(g->v[i].p);
        else
            free(g->v[i].p);
    }
    free(g->v);
    memset(g, 0, sizeof *g);
}


/* Makes t's top array and the bucket of h writable in generation `born`:
 * copies what older generations share (their copies go to the garbage). */
static bucket *bucket_writable(table *t, uint64_t h, uint64_t born, size_t extra, garbage *gc)
{
    size_t i = h & (t->nb - 1);
    bucket *b, *nb;
    size_t need, cap;

    if (t->top_born != born) {
        bucket **top = malloc(t->nb * sizeof *top);

        if (top == NULL)
            return NULL;
        memcpy(top, t->b, t->nb * sizeof *top);
        if (gc_add(gc, 0, t->b) != AZC_OK) {
            free(top);
            return NULL;
        }
        t->b = top;
        t->top_born = born;
    }
    b = t->b[i];
    need = (b ? b->n : 0) + extra;
    if (b != NULL && b->born == born && b->cap >= need)
        return b;
    cap = need < 4 ? 4 : need + need / 2;
    if (b != NULL && b->born == born) {
        nb = realloc(b, sizeof *b + cap * sizeof b->s[0]);
        if (nb == NULL)
            return NULL;
    } else {
        if ((nb = malloc(sizeof *nb + cap * sizeof nb->s[0])) == NULL)
            return NULL;
        nb->n = b ? b->n : 0;
        if (b != NULL)
            memcpy(nb->s, b->s, b->n * sizeof b->s[0]);
        if (gc_add(gc, 0, b) != AZC_OK) {
            free(nb);
            return NULL;
        }
    }
    nb->born = born;
    nb->cap = cap;
    t->b[i] = nb;
    return nb;
}

/* Puts r in place of the record with the same key (or adds it; r NULL:
 * removes (kind, key)). The replaced record goes to the garbage, or is
 * freed now when it was born in this generation (no reader saw it). */
int af__table_put(table *t, int kind, uint64_t h, const char *key, rec *r, uint64_t born,
                     garbage *gc)
{
    bucket *b = bucket_writable(t, h, born, 1, gc);
    size_t i;

    if (b == NULL)
        return AZC_ENOMEM;
    for (i = 0; i < b->n; i++) {
        rec *o = b->s[i].r;

        if (b->s[i].h != h || o->kind != kind || strcmp(o->key, key) != 0)
            continue;
        if (o != r) {
            if (o->born == born)
                af__rec_free(o);
            else if (gc_add(gc, 1, o) != AZC_OK)
                return AZC_ENOMEM;
        }
        if (r != NULL)
            b->s[i].r = r;
        else
            b->s[i] = b->s[--b->n];
        return AZC_OK;
    }
    if (r != NULL) {
        b->s[b->n].h = h;
        b->s[b->n++].r = r;
    }
    return AZC_OK;
}

/* A zeroed record with its key and room for refcap references in the
 * same allocation, so a lookup that confirms a hash match and follows the
 * references touches one block, not three. */
rec *af__rec_alloc(const char *key, size_t refcap)
{
    size_t n = strlen(key) + 1, at = (sizeof(rec) + n + 7) & ~(size_t)7;
    rec *r;

    if (refcap > UINT32_MAX || (r = calloc(1, at + refcap * sizeof(ref))) == NULL)
        return NULL;
    r->key = (char *)(r + 1);
    memcpy(r->key, key, n);
    r->refcap = (uint32_t)refcap;
    r->teams = (ref *)((char *)r + at);
    return r;
}

/* A writable record for generation `born` with room for extra_refs more
 * references: r itself when it was born in it and has the room, else a
 * copy (of an older generation's record, or a grown one of r, whose
 * contents then move to it, leaving r an empty shell that table_put
 * frees), or a new empty record when r is NULL. The caller puts it back
 * with table_put (af__rec_commit). NULL when out of memory. */
rec *af__rec_writable(rec *r, int kind, const char *key, uint64_t h, uint64_t born,
                      size_t extra_refs)
{
    size_t have = r != NULL ? r->nteams : 0, cap = have + extra_refs, i;
    rec *n;

    if (r != NULL && r->born == born && cap <= r->refcap)
        return r;
    if (r != NULL && r->born == born && cap < 2 * (size_t)r->refcap)
        cap = 2 * (size_t)r->refcap; /* grown while building: amortised */
    if ((n = af__rec_alloc(key, cap)) == NULL)
        return NULL;
    n->kind = kind;
    n->born = born;
    n->h = h;
    if (r == NULL)
        return n;
    if (r->born == born) {
        /* Private to this build: move, nothing to copy. */
        memcpy(n->teams, r->teams, have * sizeof *n->teams);
        n->nteams = have;
        r->nteams = 0;
        n->subject = r->subject;
        n->ents = r->ents;
        n->nent = r->nent;
        n->entcap = r->entcap;
        n->a = r->a;
        r->subject = NULL;
        r->ents = NULL;
        r->nent = r->entcap = 0;
        r->a = NULL;
        return n;
    }
    if (r->subject != NULL && (n->subject = strdup(r->subject)) == NULL)
        goto fail;
    for (i = 0; i < have; i++) { /* teams, or users: the same array */
        if (af__ref_copy(&n->teams[i], &r->teams[i]) != AZC_OK)
            goto fail;
        n->nteams++;
    }
    if (r->entcap > 0) {
        if ((n->ents = malloc(r->entcap * sizeof *n->ents)) == NULL)
            goto fail;
        memcpy(n->ents, r->ents, r->entcap * sizeof *n->ents);
        n->nent = r->nent;
        n->entcap = r->entcap;
    }
    return n;
fail:
    af__rec_free(n);
    return NULL;
}

/* ---- references (writer side) ---- */

/* Sets x to id (h: its main-table hash); x's origin is the caller's. */
int af__ref_set(ref *x, const char *id, uint64_t h)
{
    size_t n = strlen(id) + 1;

    x->h = h;
    x->big = NULL;
    x->r = NULL;
    if (n <= sizeof x->small)
        memcpy(x->small, id, n);
    else if ((x->big = strdup(id)) == NULL)
        return AZC_ENOMEM;
    return AZC_OK;
}

int af__ref_copy(ref *dst, const ref *src)
{
    *dst = *src;
    if (src->big != NULL && (dst->big = strdup(src->big)) == NULL)
        return AZC_ENOMEM;
    return AZC_OK;
}

/* ---- a record's entry table (writer side) ---- */

static void ents_put(ent *t, size_t cap, const ent *en)
{
    size_t i = (size_t)en->res_h & (cap - 1);

    while (t[i].a != NULL)
        i = (i + 1) & (cap - 1);
    t[i] = *en;
}

/* Moves r's entries, all but those of `drop`, into a fresh table with
 * room for `want` entries (none: no table). */
static int ents_rebuild(rec *r, size_t want, const asg *drop)
{
    size_t cap = 0, i, n = 0;
    ent *t = NULL;

    if (want > 0) {
        for (cap = 4; cap * ENT_LOAD_PCT < want * 100; cap *= 2)
            ;
        if ((t = calloc(cap, sizeof *t)) == NULL)
            return AZC_ENOMEM;
    }
    for (i = 0; i < r->entcap; i++)
        if (r->ents[i].a != NULL && r->ents[i].a != drop) {
            ents_put(t, cap, &r->ents[i]);
            n++;
        }
    free(r->ents);
    r->ents = t;
    r->entcap = cap;
    r->nent = n;
    return AZC_OK;
}

/* Adds a's entries (one per permission) to a writable record. */
int af__ents_add(rec *r, const asg *a)
{
    size_t i;

    if ((r->nent + a->nperm) * 100 > r->entcap * ENT_LOAD_PCT &&
        ents_rebuild(r, (r->nent + a->nperm) * 2, NULL) != AZC_OK)
        return AZC_ENOMEM;
    for (i = 0; i < a->nperm; i++) {
        ent en = { a->perm_h[i], a->res_h, a };

        ents_put(r->ents, r->entcap, &en);
        r->nent++;
    }
    return AZC_OK;
}

/* Removes a's entries from a writable record; the table is rebuilt, since
 * linear probing cannot simply free a slot inside a run. */
int af__ents_drop(rec *r, const asg *a)
{
    size_t i, left = 0;

    for (i = 0; i < r->entcap; i++)
        if (r->ents[i].a != NULL && r->ents[i].a != a)
            left++;
    if (left == r->nent)
        return AZC_OK;
    return ents_rebuild(r, left, a);
}

static int rec_empty(const rec *r)
{
    /* nteams also counts a subject's users: one array, by kind */
    return r->subject == NULL && r->nteams == 0 && r->nent == 0 && r->a == NULL;
}

/* Commits a writable record: removed when it holds nothing any more. */
int af__rec_commit(table *t, rec *r, uint64_t born, garbage *gc)
{
    rec *in;
    int rc;

    if (!rec_empty(r))
        return af__table_put(t, r->kind, r->h, r->key, r, born, gc);
    in = table_find(t, r->kind, r->h, r->key);
    rc = af__table_put(t, r->kind, r->h, r->key, NULL, born, gc);
    /* table_put disposed of what was in the table; a fresh copy never was. */
    if (in != r)
        af__rec_free(r);
    return rc;
}

static void table_free_all(table *t)
{
    size_t i, j;

    if (t->b == NULL)
        return;
    for (i = 0; i < t->nb; i++) {
        if (t->b[i] == NULL)
            continue;
        for (j = 0; j < t->b[i]->n; j++)
            af__rec_free(t->b[i]->s[j].r);
        free(t->b[i]);
    }
    free(t->b);
    t->b = NULL;
}

int af__table_init(table *t, size_t nb, uint64_t born)
{
    t->nb = nb;
    t->top_born = born;
    t->b = calloc(nb, sizeof *t->b);
    return t->b != NULL ? AZC_OK : AZC_ENOMEM;
}

/* ---- the index ------------------------------------------------------ */

af_index *af_index_new(const char *region)
{
    af_index *ix;

    if (region == NULL || strlen(region) > AZC_REGION_MAX)
        return NULL;
    if ((ix = calloc(1, sizeof *ix)) == NULL)
        return NULL;
    strcpy(ix->region, region);
    ix->next_number = 1;
    return ix;
}

void af__gen_free_all(gen *g)
{
    if (g == NULL)
        return;
    table_free_all(&g->main);
    table_free_all(&g->asg);
    free(g);
}

void af_index_free(af_index *ix)
{
    if (ix == NULL)
        return;
    af__gen_free_all(ix->cur);
    free(ix);
}

long long af_index_cursor(const af_index *ix)
{
    /* Writer side: the writer is the only one that changes cur. */
    return ix->cur != NULL ? ix->cur->cursor : -1;
}

/* For tests: every subject's reference points at its user's current
 * record, and every user with a subject is referenced by it. 1 when so. */
int af__index_refs_ok(const af_index *ix)
{
    const gen *g = ix->cur;
    size_t bi, k, i;

    for (bi = 0; g != NULL && bi < g->main.nb; bi++) {
        const bucket *b = g->main.b[bi];

        for (k = 0; b != NULL && k < b->n; k++) {
            const rec *r = b->s[k].r, *o;

            if (r->kind == K_SUBJ) {
                for (i = 0; i < r->nusers; i++) {
                    o = table_find(&g->main, K_USER, r->users[i].h, ref_id(&r->users[i]));
                    if (o == NULL || o != r->users[i].r || o->subject == NULL ||
                        strcmp(o->subject, r->key) != 0)
                        return 0;
                }
            } else if (r->kind == K_USER && r->subject != NULL) {
                o = table_find(&g->main, K_SUBJ, key_hash(K_SUBJ, r->subject), r->subject);
                for (i = 0; o != NULL && i < o->nusers && o->users[i].r != r; i++)
                    ;
                if (o == NULL || i == o->nusers)
                    return 0;
            }
        }
    }
    return 1;
}

/* ---- reader side ---------------------------------------------------- */

typedef struct req {
    const char *action, *resource;
    uint64_t p[3], r[3];
} req;

#define MAX_PREFETCH 16

/* Starts the loads of the three runs a scan of r will read. */
static inline void prefetch_runs(const rec *r, const req *q)
{
    size_t mask = r->entcap - 1;

    if (r->entcap == 0)
        return;
    __builtin_prefetch(&r->ents[q->r[0] & mask]);
    __builtin_prefetch(&r->ents[q->r[1] & mask]);
    __builtin_prefetch(&r->ents[q->r[2] & mask]);
}

static const ent *scan(const rec *r, const req *q)
{
    size_t k, i, mask;

    if (r == NULL || r->nent == 0)
        return NULL;
    mask = r->entcap - 1;
    for (k = 0; k < 3; k++) {
        uint64_t rh = q->r[k];

        if ((k > 0 && rh == q->r[0]) || (k > 1 && rh == q->r[1]))
            continue;
        /* The table is never full, so every run ends at a free slot. */
        for (i = rh & mask; r->ents[i].a != NULL; i = (i + 1) & mask) {
            const ent *en = &r->ents[i];
            const asg *a = en->a;
            size_t j;

            if (en->res_h != rh ||
                (en->perm_h != q->p[0] && en->perm_h != q->p[1] && en->perm_h != q->p[2]))
                continue;
            if (!azc_resource_covers(a->resource, q->resource))
                continue;
            for (j = 0; j < a->nperm; j++)
                if (a->perm_h[j] == en->perm_h && azc_permission_grants(a->perm[j], q->action))
                    return en;
        }
    }
    return NULL;
}

void af_index_check(af_index *ix, const af_query *q, af_result *out)
{
    char wbuf[AZC_POLICY_NAME_MAX + 3], rbuf[AZC_POLICY_NAME_MAX + 3];
    const char *c;
    req rq;
    gen *g;
    const rec *s, *tr[MAX_PREFETCH];
    const bucket *bk[MAX_PREFETCH];
    size_t i, j, n, nt;

    rcu_read_lock();
    g = rcu_dereference(ix->cur);
    if (g == NULL) {
        rcu_read_unlock();
        memset(out, 0, sizeof *out);
        return;
    }
    out->loaded = 1;
    out->allowed = 0;
    out->origin = -1;
    out->via_origin = -1;
    out->generation = g->number;
    out->cursor = g->cursor;
    out->published_ms = g->published_ms;
    out->n_origins = g->n_origins;
    memcpy(out->marks, g->marks, g->n_origins * sizeof g->marks[0]);
    if (q == NULL || q->subject == NULL || q->action == NULL || q->resource == NULL)
        goto done;
    /* The wildcards of the request: "<type>:" "*" and "<type>/" "*". */
    if ((c = strchr(q->action, ':')) == NULL || (n = (size_t)(c - q->action)) == 0 ||
        n > AZC_POLICY_NAME_MAX)
        goto done;
    memcpy(wbuf, q->action, n + 1);
    wbuf[n + 1] = '*';
    rq.p[0] = hash_str(q->action);
    rq.p[1] = hash_mem(wbuf, n + 2, 0x51ed270b27a1c3e5ULL);
    if ((c = strchr(q->resource, '/')) == NULL || (n = (size_t)(c - q->resource)) == 0 ||
        n > AZC_POLICY_NAME_MAX)
        goto done;
    memcpy(rbuf, q->resource, n + 1);
    rbuf[n + 1] = '*';
    rq.r[0] = hash_str(q->resource);
    rq.r[1] = hash_mem(rbuf, n + 2, 0x51ed270b27a1c3e5ULL);
    rq.p[2] = rq.r[2] = hash_mem("*", 1, 0x51ed270b27a1c3e5ULL);
    rq.action = q->action;
    rq.resource = q->resource;
    s = table_find(&g->main, K_SUBJ, key_hash(K_SUBJ, q->subject), q->subject);
    for (i = 0; s != NULL && i < s->nusers; i++) {
        const rec *u = s->users[i].r;
        const ent *en;

        if (u == NULL)
            continue;
        /* The team lookups miss the cache on a cold user: start every
         * team's bucket load before scanning the user's own entries. */
        nt = u->nteams < MAX_PREFETCH ? u->nteams : MAX_PREFETCH;
        for (j = 0; j < nt; j++)
            __builtin_prefetch(&g->main.b[u->teams[j].h & (g->main.nb - 1)]);
        prefetch_runs(u, &rq);
        if ((en = scan(u, &rq)) != NULL) {
            out->allowed = 1;
            out->origin = en->a->origin;
            goto done;
        }
        /* Then the buckets, then the records: each stage's loads for all
         * teams are in flight together instead of one chain at a time. */
        for (j = 0; j < nt; j++) {
            bk[j] = g->main.b[u->teams[j].h & (g->main.nb - 1)];
            if (bk[j] != NULL)
                __builtin_prefetch(bk[j]->s);
        }
        for (j = 0; j < nt; j++) {
            size_t k;

            tr[j] = NULL;
            for (k = 0; bk[j] != NULL && k < bk[j]->n; k++)
                if (bk[j]->s[k].h == u->teams[j].h)
                    __builtin_prefetch(bk[j]->s[k].r);
        }
        for (j = 0; j < nt; j++) {
            tr[j] = table_find(&g->main, K_TEAM, u->teams[j].h, ref_id(&u->teams[j]));
            if (tr[j] != NULL)
                prefetch_runs(tr[j], &rq);
        }
        for (j = 0; j < u->nteams; j++) {
            const rec *t = j < nt ? tr[j]
                                  : table_find(&g->main, K_TEAM, u->teams[j].h,
                                               ref_id(&u->teams[j]));

            if ((en = scan(t, &rq)) != NULL) {
                out->allowed = 1;
                out->origin = en->a->origin;
                out->via_origin = u->teams[j].origin;
                goto done;
            }
        }
    }
done:
    rcu_read_unlock();
}

void af_index_get_stats(af_index *ix, af_index_stats *st)
{
    gen *g;

    memset(st, 0, sizeof *st);
    rcu_read_lock();
    g = rcu_dereference(ix->cur);
    st->cursor = -1;
    if (g != NULL) {
        st->generation = g->number;
        st->cursor = g->cursor;
        st->users = g->users;
        st->teams = g->teams;
        st->memberships = g->memberships;
        st->assignments = g->assignments;
        st->bytes = g->bytes;
    }
    rcu_read_unlock();
}
