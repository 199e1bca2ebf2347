/*
 * Bearer-token verification for the gateway filter: key sets loaded and
 * reloaded from files (common/jwt.h does the strict checks), and a
 * per-thread cache of verified tokens so that the hot path does a hash and
 * a compare instead of a signature check. See token.h for the contract.
 *
 * Key-set swap: the current set sits behind a pthread rwlock that readers
 * hold only to copy a pointer and bump a reference count (a few tens of
 * nanoseconds, taken only on a cache miss, which costs a signature check
 * anyway); the reloader holds it for writing only to replace the pointer,
 * and the last reference frees the old set. So no reader ever sees a
 * half-loaded set and none waits behind a file read or a key parse.
 *
 * Cache: one table per thread (pthread_key_t owned by the handle), of sets
 * of AF_TOKEN_CACHE_WAYS slots: a set's hashes sit together in one cache
 * line, so a lookup reads one line and then the one slot whose hash
 * matches. A full set replaces by CLOCK (second chance): a hit marks its
 * way, the hand skips and clears marked ways, so a token in use survives a
 * stream of one-off tokens landing in its set. Allocated on a thread's
 * first verification and freed by the
 * key's destructor when the thread exits, or by af_tokens_free for the
 * calling thread. Limitation: af_tokens_free deletes the key, so threads
 * still alive then never run the destructor and their caches leak; free
 * the handle after the worker threads have exited.
 */
#include "gateway-filter/token.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/rand.h>
#include <xxhash.h>

#include "common/jwt.h"

/* Tokens up to this size are cached; a typical access token is 600-1200
 * bytes, and a longer one is still verified, just never cached. */
#define SLOT_TOKEN_MAX 1536
#define DEFAULT_LEEWAY 30
#define DEFAULT_ENTRIES 4096
#define MAX_ENTRIES (1u << 20)

struct keyset_ref {
    azc_jwt_keys *ks;
    uint64_t generation;
    unsigned refs;             /* atomic; the handle holds one */
};

struct file_stamp {
    int have;
    struct timespec mtime;
    off_t size;
};

struct slot {
    uint64_t generation;       /* key set that verified it; 0: empty */
    double exp_at, nbf_at;     /* nbf_at: -1e18 when absent */
    long long exp;
    size_t len;
    char subject[AF_SUBJECT_MAX];
    char token[SLOT_TOKEN_MAX];
};

/* A set's lookup data, one cache line: the ways' hashes (0: empty; a
 * hash of 0 is stored as 1), then CLOCK's marks and hand. */
struct set_tags {
    uint64_t hash[AF_TOKEN_CACHE_WAYS];
};

struct set_clock {
    uint8_t used;              /* bit w: way w was hit since the hand passed */
    uint8_t hand;
};

struct thread_cache {
    size_t mask;               /* sets - 1 */
    struct set_tags *tags;     /* [sets], cache-line aligned */
    struct set_clock *clock;   /* [sets] */
    struct slot *slots;        /* [sets * AF_TOKEN_CACHE_WAYS] */
};

struct af_tokens {
    char *keys_file, *jwks_file, *issuer, *audience;
    json_t *jwks_algs;
    long leeway;
    long long max_lifetime;
    size_t entries;            /* power of two */
    uint64_t seed;

    pthread_rwlock_t lock;     /* guards cur (the pointer only) */
    struct keyset_ref *cur;
    uint64_t generation;       /* atomic: the current set's generation */

    pthread_mutex_t reload_mu; /* one reload at a time; guards the stamps */
    struct file_stamp keys_stamp, jwks_stamp;

    pthread_key_t tls;
};

static void ref_put(struct keyset_ref *r)
{
    if (r != NULL && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        azc_jwt_keys_free(r->ks);
        free(r);
    }
}

static void cache_destroy(void *p)
{
    struct thread_cache *c = p;

    if (c == NULL)
        return;
    free(c->tags);
    free(c->clock);
    free(c->slots);
    free(c);
}

static int stamp_of(const char *path, struct file_stamp *st, azc_err *e)
{
    struct stat s;

    memset(st, 0, sizeof *st);
    if (path == NULL)
        return AZC_OK;
    if (stat(path, &s) != 0)
        return azc_err_set(e, AZC_EINVAL, "token keys %s: %s", path, strerror(errno));
    st->have = 1;
    st->mtime = s.st_mtim;
    st->size = s.st_size;
    return AZC_OK;
}

static int stamp_same(const struct file_stamp *a, const struct file_stamp *b)
{
    return a->have == b->have && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Loads both files into one fresh set; *out owned by the caller. */
static int load_set(const af_tokens *t, azc_jwt_keys **out, azc_err *e)
{
    azc_jwt_keys *a = NULL, *b = NULL;
    int rc;

    *out = NULL;
    if (t->keys_file != NULL && (rc = azc_jwt_keys_load_file(t->keys_file, &a, e)) != AZC_OK)
        return rc;
    if (t->jwks_file != NULL &&
        (rc = azc_jwt_keys_load_jwks(t->jwks_file, t->jwks_algs, &b, e)) != AZC_OK) {
        azc_jwt_keys_free(a);
        return rc;
    }
    if (a != NULL && b != NULL)
        return azc_jwt_keys_merge(a, b, out, e);
    *out = a != NULL ? a : b;
    return AZC_OK;
}

static int dup_str(const char *s, char **out, azc_err *e)
{
    *out = NULL;
    if (s == NULL)
        return AZC_OK;
    if ((*out = strdup(s)) == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    return AZC_OK;
}

void af_tokens_free(af_tokens *t)
{
    if (t == NULL)
        return;
    cache_destroy(pthread_getspecific(t->tls));
    pthread_setspecific(t->tls, NULL);
    pthread_key_delete(t->tls);
    ref_put(t->cur);
    pthread_rwlock_destroy(&t->lock);
    pthread_mutex_destroy(&t->reload_mu);
    json_decref(t->jwks_algs);
    free(t->keys_file);
    free(t->jwks_file);
    free(t->issuer);
    free(t->audience);
    free(t);
}

int af_tokens_new(const af_token_config *cfg, af_tokens **out, azc_err *e)
{
    af_tokens *t;
    size_t want;
    int rc;

    *out = NULL;
    if (cfg == NULL || (cfg->keys_file == NULL && cfg->jwks_file == NULL))
        return azc_err_set(e, AZC_EINVAL, "token: keys_file or jwks_file is required");
    if (cfg->issuer == NULL || cfg->issuer[0] == '\0' || cfg->audience == NULL ||
        cfg->audience[0] == '\0')
        return azc_err_set(e, AZC_EINVAL, "token: issuer and audience are required");
    if (cfg->leeway_secs < 0 || cfg->leeway_secs > 3600 || cfg->max_lifetime_secs < 0)
        return azc_err_set(e, AZC_EINVAL,
                           "token: leeway_secs must be 0 to 3600, max_lifetime_secs >= 0");
    if (cfg->jwks_algs != NULL && !json_is_object(cfg->jwks_algs))
        return azc_err_set(e, AZC_EINVAL, "token: jwks_algs must be an object {kid: alg}");
    want = cfg->cache_entries != 0 ? cfg->cache_entries : DEFAULT_ENTRIES;
    if (want < AF_TOKEN_CACHE_WAYS)
        want = AF_TOKEN_CACHE_WAYS;
    if (want > MAX_ENTRIES)
        return azc_err_set(e, AZC_EINVAL, "token: cache_entries over %u", MAX_ENTRIES);
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    /* Power of two so the set is a mask, not a division. */
    for (t->entries = 1; t->entries < want; t->entries <<= 1)
        ;
    t->leeway = cfg->leeway_secs != 0 ? cfg->leeway_secs : DEFAULT_LEEWAY;
    t->max_lifetime = cfg->max_lifetime_secs;
    if (pthread_rwlock_init(&t->lock, NULL) != 0) {
        free(t);
        return azc_err_set(e, AZC_ERROR, "token: rwlock init failed");
    }
    if (pthread_mutex_init(&t->reload_mu, NULL) != 0) {
        pthread_rwlock_destroy(&t->lock);
        free(t);
        return azc_err_set(e, AZC_ERROR, "token: mutex init failed");
    }
    if (pthread_key_create(&t->tls, cache_destroy) != 0) {
        pthread_mutex_destroy(&t->reload_mu);
        pthread_rwlock_destroy(&t->lock);
        free(t);
        return azc_err_set(e, AZC_ERROR, "token: pthread_key_create failed");
    }
    /* A secret seed: an attacker who cannot predict sets cannot aim
     * tokens at one set to keep evicting a victim's entry. */
    t->seed = cfg->cache_seed;
    if (t->seed == 0 && RAND_bytes((unsigned char *)&t->seed, sizeof t->seed) != 1) {
        rc = azc_err_set(e, AZC_ERROR, "token: random generator failed");
        goto fail;
    }
    if ((rc = dup_str(cfg->keys_file, &t->keys_file, e)) != AZC_OK ||
        (rc = dup_str(cfg->jwks_file, &t->jwks_file, e)) != AZC_OK ||
        (rc = dup_str(cfg->issuer, &t->issuer, e)) != AZC_OK ||
        (rc = dup_str(cfg->audience, &t->audience, e)) != AZC_OK)
        goto fail;
    if (cfg->jwks_algs != NULL &&
        (t->jwks_algs = json_deep_copy(cfg->jwks_algs)) == NULL) {
        rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = af_tokens_reload(t, 0, e)) != AZC_OK)
        goto fail;
    *out = t;
    return AZC_OK;
fail:
    af_tokens_free(t);
    return rc;
}

int af_tokens_reload(af_tokens *t, int only_if_changed, azc_err *e)
{
    struct file_stamp ks, js;
    struct keyset_ref *fresh, *old;
    azc_jwt_keys *set;
    int rc;

    if (t == NULL)
        return azc_err_set(e, AZC_EINVAL, "token: no handle");
    pthread_mutex_lock(&t->reload_mu);
    /* Stamps are taken before reading: a file changed during the read gets
     * a new stamp and is read again on the next call. */
    if ((rc = stamp_of(t->keys_file, &ks, e)) != AZC_OK ||
        (rc = stamp_of(t->jwks_file, &js, e)) != AZC_OK)
        goto out;
    if (only_if_changed && t->cur != NULL && stamp_same(&ks, &t->keys_stamp) &&
        stamp_same(&js, &t->jwks_stamp))
        goto out;
    if ((rc = load_set(t, &set, e)) != AZC_OK)
        goto out;
    fresh = calloc(1, sizeof *fresh);
    if (fresh == NULL) {
        azc_jwt_keys_free(set);
        rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
        goto out;
    }
    fresh->ks = set;
    fresh->refs = 1;
    fresh->generation = __atomic_load_n(&t->generation, __ATOMIC_RELAXED) + 1;
    pthread_rwlock_wrlock(&t->lock);
    old = t->cur;
    t->cur = fresh;
    __atomic_store_n(&t->generation, fresh->generation, __ATOMIC_RELEASE);
    pthread_rwlock_unlock(&t->lock);
    ref_put(old);
    t->keys_stamp = ks;
    t->jwks_stamp = js;
out:
    pthread_mutex_unlock(&t->reload_mu);
    return rc;
}

uint64_t af_tokens_generation(const af_tokens *t)
{
    return t != NULL ? __atomic_load_n(&t->generation, __ATOMIC_ACQUIRE) : 0;
}

static struct thread_cache *thread_cache(af_tokens *t)
{
    struct thread_cache *c = pthread_getspecific(t->tls);

    if (c != NULL)
        return c;
    size_t sets = t->entries / AF_TOKEN_CACHE_WAYS;

    c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->mask = sets - 1;
    if (posix_memalign((void **)&c->tags, 64, sets * sizeof *c->tags) != 0)
        c->tags = NULL;
    else
        memset(c->tags, 0, sets * sizeof *c->tags);
    c->clock = calloc(sets, sizeof *c->clock);
    c->slots = calloc(t->entries, sizeof *c->slots);
    if (c->tags == NULL || c->clock == NULL || c->slots == NULL ||
        pthread_setspecific(t->tls, c) != 0) {
        cache_destroy(c);
        return NULL;
    }
    return c;
}

/* The same time rules as common/jwt.c's claim checks, for a cache hit. */
static int still_valid(const struct slot *s, double now, double leeway, azc_err *e)
{
    if (s->exp_at + leeway <= now)
        return azc_err_set(e, AZC_EINVAL, "jwt: token expired");
    if (s->nbf_at - leeway > now)
        return azc_err_set(e, AZC_EINVAL, "jwt: token not valid yet (nbf)");
    return AZC_OK;
}

/* The way of set `set` that holds (h, token), or -1. */
static int cache_find(const struct thread_cache *c, size_t set, uint64_t h, const char *token,
                      size_t len)
{
    const struct set_tags *tg = &c->tags[set];
    int w;

    for (w = 0; w < AF_TOKEN_CACHE_WAYS; w++) {
        const struct slot *s;

        if (tg->hash[w] != h)
            continue;
        s = &c->slots[set * AF_TOKEN_CACHE_WAYS + (size_t)w];
        if (s->generation != 0 && s->len == len && memcmp(s->token, token, len) == 0)
            return w;
    }
    return -1;
}

/* The way to fill in set `set`: an empty one, else one whose token had
 * expired by `expired_at` (now less the leeway), else CLOCK's victim. */
static int cache_victim(struct thread_cache *c, size_t set, double expired_at)
{
    struct set_clock *ck = &c->clock[set];
    int w, i;

    for (w = 0; w < AF_TOKEN_CACHE_WAYS; w++)
        if (c->tags[set].hash[w] == 0)
            return w;
    for (w = 0; w < AF_TOKEN_CACHE_WAYS; w++)
        if (c->slots[set * AF_TOKEN_CACHE_WAYS + (size_t)w].exp_at <= expired_at)
            return w;
    /* At most one full turn clears every mark; the second finds a way. */
    for (i = 0; i < 2 * AF_TOKEN_CACHE_WAYS; i++) {
        w = ck->hand;
        ck->hand = (uint8_t)((ck->hand + 1) % AF_TOKEN_CACHE_WAYS);
        if (!(ck->used & (1u << w)))
            return w;
        ck->used &= (uint8_t)~(1u << w);
    }
    return ck->hand;
}

static void fill_info(af_token_info *info, const char *sub, long long exp, int cached)
{
    size_t n = strlen(sub);

    memcpy(info->subject, sub, n + 1);
    info->exp = exp;
    info->cached = cached;
}

int af_tokens_verify(af_tokens *t, const char *token, size_t len, time_t now,
                     af_token_info *info, azc_err *e)
{
    char buf[AZC_JWT_MAX_BYTES + 1];
    struct thread_cache *c;
    struct slot *s = NULL;
    struct keyset_ref *ref;
    azc_jwt_policy pol;
    json_t *claims = NULL;
    const char *sub;
    double exp_at, nbf_at = -1e18;
    uint64_t h = 0;
    size_t set = 0;
    int rc, w = 0;

    /* Not a memset of the whole record: the hit path is counted in ns. */
    if (info != NULL) {
        info->subject[0] = '\0';
        info->exp = 0;
        info->cached = 0;
    }
    if (t == NULL || info == NULL)
        return azc_err_set(e, AZC_EINVAL, "token: no handle or no result");
    if (token == NULL || len == 0)
        return azc_err_set(e, AZC_EINVAL, "jwt: no token");
    /* Before hashing or copying anything: a 100 KB header costs nothing. */
    if (len > AZC_JWT_MAX_BYTES)
        return azc_err_set(e, AZC_EINVAL, "jwt: token over %d bytes", AZC_JWT_MAX_BYTES);
    if (now == 0)
        now = time(NULL);
    c = thread_cache(t);
    if (c != NULL && len <= SLOT_TOKEN_MAX) {
        h = XXH3_64bits_withSeed(token, len, t->seed);
        h += h == 0;             /* 0 marks an empty way */
        set = (size_t)h & c->mask;
        if ((w = cache_find(c, set, h, token, len)) >= 0) {
            s = &c->slots[set * AF_TOKEN_CACHE_WAYS + (size_t)w];
            if (s->generation == __atomic_load_n(&t->generation, __ATOMIC_ACQUIRE)) {
                if ((rc = still_valid(s, (double)now, (double)t->leeway, e)) != AZC_OK)
                    return rc;
                c->clock[set].used |= (uint8_t)(1u << w);
                fill_info(info, s->subject, s->exp, 1);
                return AZC_OK;
            }
            /* Verified by a set since replaced: it never answers again
             * from this way unless verified again, into the same way. */
            c->tags[set].hash[w] = 0;
            s->generation = 0;
            c->clock[set].used &= (uint8_t)~(1u << w);
        } else {
            /* The victim is chosen only once the token has verified: a
             * stream of bad tokens must neither evict good ones nor move
             * the CLOCK hand past them. */
            w = -1;
        }
    }
    /* azc_jwt_verify reads a C string: an embedded NUL would hide the rest. */
    if (memchr(token, '\0', len) != NULL)
        return azc_err_set(e, AZC_EINVAL, "jwt: token holds a NUL byte");
    memcpy(buf, token, len);
    buf[len] = '\0';
    pthread_rwlock_rdlock(&t->lock);
    ref = t->cur;
    __atomic_add_fetch(&ref->refs, 1, __ATOMIC_RELAXED);
    pthread_rwlock_unlock(&t->lock);
    pol.issuer = t->issuer;
    pol.audience = t->audience;
    pol.leeway_secs = t->leeway;
    pol.now = now;
    pol.max_lifetime_secs = t->max_lifetime;
    rc = azc_jwt_verify(ref->ks, buf, &pol, &claims, e);
    if (rc != AZC_OK) {
        ref_put(ref);
        return rc;
    }
    /* azc_jwt_verify has checked sub (a string of 1 to 256 bytes), exp
     * and nbf (numbers). */
    sub = json_string_value(json_object_get(claims, "sub"));
    exp_at = json_number_value(json_object_get(claims, "exp"));
    if (json_object_get(claims, "nbf") != NULL)
        nbf_at = json_number_value(json_object_get(claims, "nbf"));
    if (sub == NULL || strlen(sub) >= AF_SUBJECT_MAX) {
        json_decref(claims);
        ref_put(ref);
        return azc_err_set(e, AZC_EINVAL, "jwt: sub claim missing or too long");
    }
    fill_info(info, sub, exp_at > 9e18 ? (long long)9e18 : (long long)exp_at, 0);
    if (c != NULL && len <= SLOT_TOKEN_MAX) {
        if (w < 0) {
            w = cache_victim(c, set, (double)now - (double)t->leeway);
            s = &c->slots[set * AF_TOKEN_CACHE_WAYS + (size_t)w];
            c->clock[set].used &= (uint8_t)~(1u << w);
        }
        c->tags[set].hash[w] = h;
        s->generation = ref->generation;
        s->exp_at = exp_at;
        s->nbf_at = nbf_at;
        s->exp = info->exp;
        s->len = len;
        memcpy(s->token, token, len);
        memcpy(s->subject, info->subject, sizeof s->subject);
    }
    json_decref(claims);
    ref_put(ref);
    return AZC_OK;
}
