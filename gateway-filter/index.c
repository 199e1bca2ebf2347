/*
 * The gateway filter's policy index: immutable generations published with
 * RCU (liburcu-bp); see index.h for the contract.
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
 * A user or team record carries flat entries, one per (assignment,
 * permission), each holding the permission's and the resource's hash, so
 * a check scans integers; a hash match is confirmed on the real strings
 * (azc_permission_grants, azc_resource_covers), so a collision can never
 * allow.
 */
#include "gateway-filter/index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <urcu-bp.h>

#include "common/policy.h"

enum { K_USER = 1, K_TEAM = 2, K_SUBJ = 3, K_ASG = 4 };

#define MAIN_BUCKETS (1u << 16)
#define ASG_BUCKETS (1u << 17)

/* An assignment as the index keeps it (only when its region applies). */
typedef struct asg {
    char *id;
    char *ptype_id;     /* principal id */
    int ptype;          /* K_USER or K_TEAM */
    int origin;
    char *resource;
    uint64_t res_h;
    size_t nperm;
    char **perm;
    uint64_t *perm_h;
} asg;

typedef struct ent {
    uint64_t perm_h, res_h;
    const asg *a;       /* owned by the asg table's record */
} ent;

typedef struct team_ref {
    char *id;
    uint64_t h;         /* main-table hash of the team's key */
    int origin;         /* the membership's origin */
} team_ref;

typedef struct user_ref {
    char *id;
    uint64_t h;
} user_ref;

/* One immutable record; all memory it points to is its own, except
 * ents[].a (the asg table owns assignments). */
typedef struct rec {
    int kind;
    uint64_t born;
    uint64_t h;
    char *key;
    /* K_USER */
    char *subject;      /* NULL while no user row is live */
    size_t nteams;
    team_ref *teams;
    /* K_USER, K_TEAM */
    size_t nent;
    ent *ents;
    /* K_SUBJ */
    size_t nusers;
    user_ref *users;
    /* K_ASG: owned */
    asg *a;
} rec;

typedef struct slot {
    uint64_t h;
    rec *r;
} slot;

typedef struct bucket {
    uint64_t born;
    size_t n, cap;
    slot s[];
} bucket;

typedef struct table {
    uint64_t top_born;
    size_t nb;          /* a power of two */
    bucket **b;
} table;

typedef struct gen {
    uint64_t number;
    long long cursor;
    uint64_t published_ms;
    size_t n_origins;
    af_origin_mark marks[AF_MAX_ORIGINS];
    table main, asg;
    size_t users, teams, memberships, assignments, bytes;
} gen;

struct af_index {
    char region[AZC_REGION_MAX + 1];
    gen *cur;           /* rcu-protected */
    uint64_t next_number;
};

/* Pointers the writer frees after a grace period. */
typedef struct garbage {
    size_t n, cap;
    struct gitem {
        int what;       /* 0 free(), 1 rec, 2 bucket */
        void *p;
    } *v;
    int failed;
} garbage;

/* ---- hashing -------------------------------------------------------- */

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

/* Fast non-cryptographic hash, 8 bytes a step; equality is always
 * confirmed on the strings, so quality only affects speed. */
static uint64_t hash_mem(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ULL), w;

    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ mix(w)) * 0x9e3779b97f4a7c15ULL;
        s += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ mix(w ^ 0xff)) * 0x9e3779b97f4a7c15ULL;
    return mix(h);
}

static uint64_t hash_str(const char *s)
{
    return hash_mem(s, strlen(s), 0x51ed270b27a1c3e5ULL);
}

static uint64_t key_hash(int kind, const char *key)
{
    return hash_mem(key, strlen(key), (uint64_t)kind * 0x2545f4914f6cdd1dULL);
}

/* ---- records and tables --------------------------------------------- */

static void asg_free(asg *a)
{
    size_t i;

    if (a == NULL)
        return;
    for (i = 0; i < a->nperm; i++)
        free(a->perm[i]);
    free(a->perm);
    free(a->perm_h);
    free(a->id);
    free(a->ptype_id);
    free(a->resource);
    free(a);
}

static void rec_free(rec *r)
{
    size_t i;

    if (r == NULL)
        return;
    free(r->subject);
    for (i = 0; i < r->nteams; i++)
        free(r->teams[i].id);
    free(r->teams);
    free(r->ents);
    for (i = 0; i < r->nusers; i++)
        free(r->users[i].id);
    free(r->users);
    asg_free(r->a);
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

static void gc_run(garbage *g, int free_items)
{
    size_t i;

    for (i = 0; free_items && i < g->n; i++) {
        if (g->v[i].what == 1)
            rec_free(g->v[i].p);
        else
            free(g->v[i].p);
    }
    free(g->v);
    memset(g, 0, sizeof *g);
}

static rec *table_find(const table *t, int kind, uint64_t h, const char *key)
{
    const bucket *b = t->b[h & (t->nb - 1)];
    size_t i;

    if (b == NULL)
        return NULL;
    for (i = 0; i < b->n; i++)
        if (b->s[i].h == h && b->s[i].r->kind == kind && strcmp(b->s[i].r->key, key) == 0)
            return b->s[i].r;
    return NULL;
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
static int table_put(table *t, int kind, uint64_t h, const char *key, rec *r, uint64_t born,
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
                rec_free(o);
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

/* A zeroed record with its key in the same allocation, so a lookup that
 * confirms a hash match touches one block, not two. */
static rec *rec_alloc(const char *key)
{
    size_t n = strlen(key) + 1;
    rec *r = calloc(1, sizeof *r + n);

    if (r == NULL)
        return NULL;
    r->key = (char *)(r + 1);
    memcpy(r->key, key, n);
    return r;
}

/* A writable copy of r (or a new empty record): the caller puts it back
 * with table_put. NULL when out of memory. */
static rec *rec_writable(rec *r, int kind, const char *key, uint64_t h, uint64_t born)
{
    rec *n;
    size_t i;

    if (r != NULL && r->born == born)
        return r;
    if ((n = rec_alloc(key)) == NULL)
        return NULL;
    n->kind = kind;
    n->born = born;
    n->h = h;
    if (r == NULL)
        return n;
    if (r->subject != NULL && (n->subject = strdup(r->subject)) == NULL)
        goto fail;
    if (r->nteams > 0) {
        if ((n->teams = calloc(r->nteams, sizeof *n->teams)) == NULL)
            goto fail;
        for (i = 0; i < r->nteams; i++) {
            n->teams[i] = r->teams[i];
            if ((n->teams[i].id = strdup(r->teams[i].id)) == NULL)
                goto fail;
            n->nteams++;
        }
    }
    if (r->nent > 0) {
        if ((n->ents = malloc(r->nent * sizeof *n->ents)) == NULL)
            goto fail;
        memcpy(n->ents, r->ents, r->nent * sizeof *n->ents);
        n->nent = r->nent;
    }
    if (r->nusers > 0) {
        if ((n->users = calloc(r->nusers, sizeof *n->users)) == NULL)
            goto fail;
        for (i = 0; i < r->nusers; i++) {
            n->users[i] = r->users[i];
            if ((n->users[i].id = strdup(r->users[i].id)) == NULL)
                goto fail;
            n->nusers++;
        }
    }
    return n;
fail:
    rec_free(n);
    return NULL;
}

static int rec_empty(const rec *r)
{
    return r->subject == NULL && r->nteams == 0 && r->nent == 0 && r->nusers == 0 &&
           r->a == NULL;
}

/* Commits a writable record: removed when it holds nothing any more. */
static int rec_commit(table *t, rec *r, uint64_t born, garbage *gc)
{
    rec *in;
    int rc;

    if (!rec_empty(r))
        return table_put(t, r->kind, r->h, r->key, r, born, gc);
    in = table_find(t, r->kind, r->h, r->key);
    rc = table_put(t, r->kind, r->h, r->key, NULL, born, gc);
    /* table_put disposed of what was in the table; a fresh copy never was. */
    if (in != r)
        rec_free(r);
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
            rec_free(t->b[i]->s[j].r);
        free(t->b[i]);
    }
    free(t->b);
    t->b = NULL;
}

static int table_init(table *t, size_t nb, uint64_t born)
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

static void gen_free_all(gen *g)
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
    gen_free_all(ix->cur);
    free(ix);
}

long long af_index_cursor(const af_index *ix)
{
    /* Writer side: the writer is the only one that changes cur. */
    return ix->cur != NULL ? ix->cur->cursor : -1;
}

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

typedef struct build {
    af_index *ix;
    gen *g;
    uint64_t born;
    garbage gc;
} build;

static rec *find_main(build *b, int kind, const char *key, uint64_t *h)
{
    *h = key_hash(kind, key);
    return table_find(&b->g->main, kind, *h, key);
}

static int subj_change(build *b, const char *subject, const char *user_id, int add)
{
    uint64_t h, uh = key_hash(K_USER, user_id);
    rec *o = find_main(b, K_SUBJ, subject, &h), *r;
    size_t i;

    if (o == NULL && !add)
        return AZC_OK;
    if ((r = rec_writable(o, K_SUBJ, subject, h, b->born)) == NULL)
        return AZC_ENOMEM;
    for (i = 0; i < r->nusers; i++)
        if (strcmp(r->users[i].id, user_id) == 0)
            break;
    if (add && i == r->nusers) {
        user_ref *u = realloc(r->users, (r->nusers + 1) * sizeof *u);

        if (u == NULL || (u[r->nusers].id = strdup(user_id)) == NULL) {
            if (u != NULL)
                r->users = u;
            if (r != o)
                rec_free(r);
            return AZC_ENOMEM;
        }
        u[r->nusers++].h = uh;
        r->users = u;
    } else if (!add && i < r->nusers) {
        free(r->users[i].id);
        r->users[i] = r->users[--r->nusers];
    }
    return rec_commit(&b->g->main, r, b->born, &b->gc);
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
    if ((r = rec_writable(o, K_USER, id, h, b->born)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (o == NULL || o->subject == NULL)
        b->g->users += deleted ? 0 : 1;
    else if (deleted)
        b->g->users--;
    free(r->subject);
    r->subject = NULL;
    if (!deleted && (r->subject = strdup(subject)) == NULL) {
        if (r != o)
            rec_free(r);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    if ((rc = rec_commit(&b->g->main, r, b->born, &b->gc)) != AZC_OK)
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
        if (strcmp(o->teams[i].id, team) == 0)
            break;
    if (o == NULL && deleted)
        return AZC_OK;
    if (o != NULL && i == o->nteams && deleted)
        return AZC_OK;
    if (o != NULL && i < o->nteams && !deleted && o->teams[i].origin == origin)
        return AZC_OK;
    if ((r = rec_writable(o, K_USER, user, h, b->born)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (deleted) {
        free(r->teams[i].id);
        r->teams[i] = r->teams[--r->nteams];
        b->g->memberships--;
    } else if (i < r->nteams) {
        r->teams[i].origin = origin;
    } else {
        team_ref *t = realloc(r->teams, (r->nteams + 1) * sizeof *t);

        if (t == NULL || (t[r->nteams].id = strdup(team)) == NULL) {
            if (t != NULL)
                r->teams = t;
            if (r != o)
                rec_free(r);
            return azc_err_set(e, AZC_ENOMEM, "out of memory");
        }
        t[r->nteams].h = key_hash(K_TEAM, team);
        t[r->nteams++].origin = origin;
        r->teams = t;
        b->g->memberships++;
    }
    if ((rc = rec_commit(&b->g->main, r, b->born, &b->gc)) != AZC_OK)
        return azc_err_set(e, rc, "out of memory");
    return AZC_OK;
}

/* Removes the entries of a from its principal's record. */
static int principal_drop(build *b, const asg *a)
{
    uint64_t h;
    rec *o = find_main(b, a->ptype, a->ptype_id, &h), *r;
    size_t i, j;

    if (o == NULL)
        return AZC_OK;
    if ((r = rec_writable(o, a->ptype, a->ptype_id, h, b->born)) == NULL)
        return AZC_ENOMEM;
    if (a->ptype == K_TEAM && r->nent > 0)
        b->g->teams--;
    for (i = j = 0; i < r->nent; i++)
        if (r->ents[i].a != a)
            r->ents[j++] = r->ents[i];
    r->nent = j;
    if (a->ptype == K_TEAM && r->nent > 0)
        b->g->teams++;
    return rec_commit(&b->g->main, r, b->born, &b->gc);
}

static int principal_add(build *b, const asg *a)
{
    uint64_t h;
    rec *o = find_main(b, a->ptype, a->ptype_id, &h), *r;
    ent *n;
    size_t i;

    if ((r = rec_writable(o, a->ptype, a->ptype_id, h, b->born)) == NULL)
        return AZC_ENOMEM;
    if ((n = realloc(r->ents, (r->nent + a->nperm) * sizeof *n)) == NULL) {
        if (r != o)
            rec_free(r);
        return AZC_ENOMEM;
    }
    r->ents = n;
    if (a->ptype == K_TEAM && r->nent == 0)
        b->g->teams++;
    for (i = 0; i < a->nperm; i++) {
        n[r->nent].perm_h = a->perm_h[i];
        n[r->nent].res_h = a->res_h;
        n[r->nent++].a = a;
    }
    return rec_commit(&b->g->main, r, b->born, &b->gc);
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
            (rc = table_put(&b->g->asg, K_ASG, h, id, NULL, b->born, &b->gc)) != AZC_OK)
            return azc_err_set(e, rc, "out of memory");
        b->g->assignments--;
    }
    if (!applies)
        return AZC_OK;
    if ((r = rec_alloc(id)) == NULL ||
        (r->a = a = calloc(1, sizeof *a)) == NULL)
        goto oom;
    r->kind = K_ASG;
    r->born = b->born;
    r->h = h;
    a->ptype = strcmp(pt, "user") == 0 ? K_USER : K_TEAM;
    a->origin = origin;
    if ((a->id = strdup(id)) == NULL || (a->ptype_id = strdup(pid)) == NULL ||
        (a->resource = strdup(res)) == NULL ||
        (a->perm = calloc(json_array_size(perms), sizeof *a->perm)) == NULL ||
        (a->perm_h = calloc(json_array_size(perms), sizeof *a->perm_h)) == NULL)
        goto oom;
    a->res_h = hash_str(res);
    json_array_foreach(perms, i, p) {
        if ((a->perm[i] = strdup(json_string_value(p))) == NULL)
            goto oom;
        a->perm_h[i] = hash_str(a->perm[i]);
        a->nperm++;
    }
    if ((rc = table_put(&b->g->asg, K_ASG, h, id, r, b->born, &b->gc)) != AZC_OK)
        goto oom;
    b->g->assignments++;
    if ((rc = principal_add(b, a)) != AZC_OK)
        return azc_err_set(e, rc, "out of memory");
    return AZC_OK;
oom:
    rec_free(r);
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
    /* Approximate: tables, records and entries at their typical sizes. */
    return sizeof *g + (g->main.nb + g->asg.nb) * sizeof(bucket *) +
           (g->users + g->teams) * (sizeof(rec) + sizeof(bucket) + 2 * sizeof(slot) + 48) +
           g->memberships * (sizeof(team_ref) + 40) + g->assignments * (sizeof(rec) +
           sizeof(slot) + sizeof(asg) + 160 + 2 * sizeof(ent));
}

static void publish(af_index *ix, gen *g, garbage *gc, gen *old, int old_whole)
{
    g->number = ix->next_number++;
    g->published_ms = now_ms();
    g->bytes = gen_bytes(g);
    rcu_assign_pointer(ix->cur, g);
    synchronize_rcu();
    if (old_whole)
        gen_free_all(old);
    else
        free(old);
    gc_run(gc, 1);
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
    gen_free_all(l->b.g);
    gc_run(&l->b.gc, 0);
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
        table_init(&l->b.g->main, MAIN_BUCKETS, l->b.born) != AZC_OK ||
        table_init(&l->b.g->asg, ASG_BUCKETS, l->b.born) != AZC_OK) {
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
                        rec_free(bk->s[s].r);
                free(bk);
            }
            free(t->b);
            (void)ot;
        }
        free(b.g);
        gc_run(&b.gc, 0);
    }
    return rc;
}

/* ---- reader side ---------------------------------------------------- */

typedef struct req {
    const char *action, *resource;
    uint64_t p[3], r[3];
} req;

#define MAX_PREFETCH 16

static const ent *scan(const rec *r, const req *q)
{
    size_t i;

    if (r == NULL)
        return NULL;
    for (i = 0; i < r->nent; i++) {
        const ent *en = &r->ents[i];

        if ((en->perm_h == q->p[0] || en->perm_h == q->p[1] || en->perm_h == q->p[2]) &&
            (en->res_h == q->r[0] || en->res_h == q->r[1] || en->res_h == q->r[2])) {
            const asg *a = en->a;
            size_t k;

            if (!azc_resource_covers(a->resource, q->resource))
                continue;
            for (k = 0; k < a->nperm; k++)
                if (a->perm_h[k] == en->perm_h && azc_permission_grants(a->perm[k], q->action))
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
        const rec *u = table_find(&g->main, K_USER, s->users[i].h, s->users[i].id);
        const ent *en;

        if (u == NULL)
            continue;
        /* The team lookups miss the cache on a cold user: start every
         * team's bucket load before scanning the user's own entries. */
        nt = u->nteams < MAX_PREFETCH ? u->nteams : MAX_PREFETCH;
        for (j = 0; j < nt; j++)
            __builtin_prefetch(&g->main.b[u->teams[j].h & (g->main.nb - 1)]);
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
                if (bk[j]->s[k].h == u->teams[j].h) {
                    __builtin_prefetch(bk[j]->s[k].r);
                    __builtin_prefetch(u->teams[j].id);
                }
        }
        for (j = 0; j < nt; j++) {
            tr[j] = table_find(&g->main, K_TEAM, u->teams[j].h, u->teams[j].id);
            if (tr[j] != NULL)
                __builtin_prefetch(tr[j]->ents);
        }
        for (j = 0; j < u->nteams; j++) {
            const rec *t = j < nt ? tr[j]
                                  : table_find(&g->main, K_TEAM, u->teams[j].h, u->teams[j].id);

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
