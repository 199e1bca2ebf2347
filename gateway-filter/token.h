/*
 * Bearer-token verification for the gateway filter, around common/jwt.h.
 *
 * Keys come from a key-set file (common/jwt.h format: [{kid, alg, file}],
 * PEM or raw secret files) or from a JWKS file (RFC 7517; RSA and EC P-256/
 * P-384/P-521 public keys), the algorithm of each key pinned by
 * configuration (the key-set entry's alg, or the JWK's "alg" member, or
 * jwks_algs[kid]), never taken from the token. Header members jku, jwk,
 * x5u, x5c are ignored: a token never chooses its own key. A zero (or
 * out-of-range) ECDSA r or s is refused before OpenSSL sees it.
 *
 * Verified tokens are cached until their expiry, so the hot path does no
 * signature work: each thread has its own cache (no locks, no shared cache
 * lines), AF_TOKEN_CACHE_WAYS-way set-associative so that hot tokens whose
 * hashes share a set do not evict each other, keyed by a seeded XXH3 of
 * the token bytes (the set: the hash modulo the number of sets) with an
 * exact compare of the bytes; a hit re-checks exp/nbf against the clock and
 * the key-set generation, so an expired token or one verified by a key set
 * since rotated never passes. Keys reload without a restart
 * (af_tokens_reload, called on SIGHUP or when a file's mtime changes); a set
 * that does not load keeps the old one.
 */
#ifndef AF_TOKEN_H
#define AF_TOKEN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "common/err.h"

#define AF_SUBJECT_MAX 257   /* 256 bytes and the NUL */
#define AF_TOKEN_CACHE_WAYS 8 /* tokens per set of the per-thread cache */

typedef struct af_tokens af_tokens;

typedef struct af_token_config {
    const char *keys_file;       /* key-set file, or NULL */
    const char *jwks_file;       /* JWKS file, or NULL (at least one of the two) */
    const json_t *jwks_algs;     /* {"kid": "RS256", ...} or NULL */
    const char *issuer;          /* required */
    const char *audience;        /* required */
    long leeway_secs;            /* exp/nbf skew, default 30 when 0 */
    long long max_lifetime_secs; /* 0: common/jwt.h's default */
    size_t cache_entries;        /* per thread, rounded up to a power of two, at
                                    least AF_TOKEN_CACHE_WAYS; 0: 4096 */
    uint64_t cache_seed;         /* the hash's seed; 0: a secret random one
                                    (anything else is for tests only) */
} af_token_config;

/* The strings of `cfg` are copied. *out owned by the caller. */
int af_tokens_new(const af_token_config *cfg, af_tokens **out, azc_err *e) AZC_WARN_UNUSED;
void af_tokens_free(af_tokens *t);

/* Reads the key files again and swaps the set in whole (readers see the
 * old set or the new one); on failure the old set stays and e says why.
 * `only_if_changed`: do nothing unless a file's mtime or size changed. */
int af_tokens_reload(af_tokens *t, int only_if_changed, azc_err *e) AZC_WARN_UNUSED;
uint64_t af_tokens_generation(const af_tokens *t);

typedef struct af_token_info {
    char subject[AF_SUBJECT_MAX];
    long long exp;        /* the token's exp, seconds since the epoch */
    int cached;           /* 1: answered from this thread's cache */
} af_token_info;

/*
 * Verifies the bearer token `token` (`len` bytes, not NUL-terminated) at
 * time `now` (0: the real clock). AZC_OK with *info filled, or AZC_EINVAL
 * (any bad token: the caller answers 401; e says why, for logs only).
 * Thread-safe; hits cost a hash and a compare, no signature work.
 */
int af_tokens_verify(af_tokens *t, const char *token, size_t len, time_t now,
                     af_token_info *info, azc_err *e) AZC_WARN_UNUSED;

#endif
