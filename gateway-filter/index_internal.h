/*
 * What gateway-filter/index.c (records, tables, generations, the reader's
 * check) and gateway-filter/index_apply.c (the writer: rows, snapshots and
 * feed answers into new generations) share: the layout (described at the
 * top of index.c), the hashing and lookups both sides run (inline, since
 * the check's hot path runs them), and the writer's primitives.
 * Internal to the index: nothing outside those two files includes it.
 */
#ifndef AF_INDEX_INTERNAL_H
#define AF_INDEX_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "gateway-filter/index.h"

enum { K_USER = 1, K_TEAM = 2, K_SUBJ = 3, K_ASG = 4 };

#define MAIN_BUCKETS (1u << 16)
#define ENT_LOAD_PCT 70
#define ASG_BUCKETS (1u << 17)

/* An assignment as the index keeps it (only when its region applies): one
 * allocation holding the struct and every array and string it points to. */
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

/* One (assignment, permission) of a principal, in its record's entry
 * table: open addressing by res_h with linear probing, a NULL `a` marks a
 * free slot. */
typedef struct ent {
    uint64_t perm_h, res_h;
    const asg *a;       /* owned by the asg table's record */
} ent;

/* A user's team, or a subject's user: the id is kept inside the reference
 * when it fits (a UUID does), so a check that follows it to the record
 * does not miss the cache a second time on a string of its own. One
 * reference is one cache line. */
#define REF_SMALL 38

typedef struct ref {
    uint64_t h;         /* main-table hash of the referenced key */
    char *big;          /* the id when longer than small holds, else NULL */
    /* A subject's reference: its user's record in this generation, so a
     * check goes from the subject to the user without a table lookup.
     * The writer re-points it whenever it commits a new copy of the user
     * (index_apply.c, subj_point); both are retired in one grace period. */
    const struct rec *r;
    short origin;       /* a team reference: the membership's origin */
    char small[REF_SMALL];
} ref;

typedef struct ref team_ref;
typedef struct ref user_ref;

static inline const char *ref_id(const ref *x)
{
    return x->big != NULL ? x->big : x->small;
}

/* One immutable record; all memory it points to is its own, except
 * ents[].a (the asg table owns assignments) and users[].r. The fields a
 * check reads come first, so that they share the record's first cache
 * line (the key, inline after the struct, is read last). */
typedef struct rec {
    uint64_t h;
    int kind;
    uint32_t refcap;    /* room for references, inside this allocation */
    char *key;
    /* K_USER: its teams; K_SUBJ: its users (one array, by kind), inside
     * this allocation after the key, so following them misses no further
     * cache line of their own */
    union {
        size_t nteams;
        size_t nusers;
    };
    union {
        team_ref *teams;
        user_ref *users;
    };
    /* K_USER, K_TEAM: nent entries in a table of entcap slots (0 or a
     * power of two, at most ENT_LOAD_PCT percent full) */
    size_t nent, entcap;
    ent *ents;
    /* the writer's */
    uint64_t born;
    char *subject;      /* K_USER: NULL while no user row is live */
    asg *a;             /* K_ASG: owned */
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

typedef struct build {
    af_index *ix;
    gen *g;
    uint64_t born;
    garbage gc;
} build;

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
static inline uint64_t hash_mem(const void *p, size_t n, uint64_t seed)
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

static inline uint64_t hash_str(const char *s)
{
    return hash_mem(s, strlen(s), 0x51ed270b27a1c3e5ULL);
}

static inline uint64_t key_hash(int kind, const char *key)
{
    return hash_mem(key, strlen(key), (uint64_t)kind * 0x2545f4914f6cdd1dULL);
}

static inline rec *table_find(const table *t, int kind, uint64_t h, const char *key)
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

/* ---- the writer's primitives (index.c) ---- */

void af__rec_free(rec *r);
void af__gc_run(garbage *g, int free_items);
int af__table_put(table *t, int kind, uint64_t h, const char *key, rec *r, uint64_t born,
                     garbage *gc);
rec *af__rec_alloc(const char *key, size_t refcap);
int af__ref_set(ref *x, const char *id, uint64_t h);
int af__ref_copy(ref *dst, const ref *src);
int af__ents_add(rec *r, const asg *a);
int af__ents_drop(rec *r, const asg *a);
rec *af__rec_writable(rec *r, int kind, const char *key, uint64_t h, uint64_t born,
                      size_t extra_refs);
int af__rec_commit(table *t, rec *r, uint64_t born, garbage *gc);
int af__table_init(table *t, size_t nb, uint64_t born);
void af__gen_free_all(gen *g);
int af__index_refs_ok(const af_index *ix);

#endif
