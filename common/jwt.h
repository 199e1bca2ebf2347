/*
 * Strict JWT verification around libjwt 1.10, which itself checks neither
 * the algorithm nor exp/nbf/iss/aud and accepts `alg: none` when given no
 * key (DESIGN section 6). Here:
 *   - the key is chosen by the token's `kid` from a configured key set (or
 *     is the only key), and the algorithm is the one configured for that
 *     key, never the token's: a token whose header names another algorithm
 *     is refused before libjwt sees it, which also blocks `none` and the
 *     HS256-signed-with-the-RSA-public-key confusion;
 *   - the header and the claims are parsed from the token's own bytes with
 *     duplicate members refused (libjwt keeps the last of two "exp"s);
 *   - `exp` is required, `nbf` honoured, both NumericDates (integer or
 *     not) with a small leeway; the lifetime (exp minus iat, or minus now
 *     without iat) is at most a configured maximum; `iss` must equal the
 *     configured issuer and `aud` (string or array) contain the configured
 *     audience; `sub` must be a non-empty string.
 * A key set is immutable once loaded; rotating keys means loading a new
 * set and swapping the pointer (services do it on SIGHUP), so verifiers in
 * flight never see a half-loaded set.
 */
#ifndef AZC_JWT_H
#define AZC_JWT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "common/err.h"

/* Longer tokens are refused before any parsing (an HTTP header line must
 * hold them anyway). */
#define AZC_JWT_MAX_BYTES 8192
#define AZC_JWT_DEFAULT_MAX_LIFETIME (24 * 3600)

typedef struct azc_jwt_keys azc_jwt_keys;

/*
 * Loads a key set from a JSON array of {"kid": "...", "alg": "RS256",
 * "file": "path"}: for HS256/384/512 the file holds the raw secret (at least
 * 32 bytes), for RS and ES a PEM public key (SubjectPublicKeyInfo) of the
 * matching type. `base_dir` (may be NULL) resolves relative file names.
 * On success *out is owned by the caller (azc_jwt_keys_free).
 */
int azc_jwt_keys_load(const json_t *spec, const char *base_dir, azc_jwt_keys **out,
                      azc_err *e) AZC_WARN_UNUSED;
/*
 * Reads the key-set file at `path` (that JSON array; duplicate members
 * refused) and loads it with azc_jwt_keys_load, key files relative to the
 * key-set file's folder. Every service with a keys_file setting uses this,
 * at start and on SIGHUP. *out is owned by the caller.
 */
int azc_jwt_keys_load_file(const char *path, azc_jwt_keys **out, azc_err *e) AZC_WARN_UNUSED;
void azc_jwt_keys_free(azc_jwt_keys *ks);

/*
 * Loads a JWKS file (RFC 7517: {"keys": [...]}, duplicate members refused)
 * as a key set. RSA keys ("n", "e", at least 2048 bits) and EC keys
 * ("crv" P-256, P-384 or P-521, "x", "y") are converted to PEM public keys
 * for libjwt. Each key needs a "kid"; its algorithm is the JWK's "alg" or
 * `algs`[kid] (a {"kid": "RS256"} object, may be NULL; both given: they
 * must agree) and must suit the key (RSA: RS256/384/512, libjwt 1.10 has
 * no PS*; EC: the ES algorithm of its curve), else the whole set is
 * refused. Keys with a "use" other than "sig" are skipped; "oct"
 * (symmetric) keys are refused. *out is owned by the caller.
 */
int azc_jwt_keys_load_jwks(const char *path, const json_t *algs, azc_jwt_keys **out,
                           azc_err *e) AZC_WARN_UNUSED;

/* One set holding the keys of `a` and of `b` (both taken, freed even on
 * failure); a kid present in both is refused. *out owned by the caller. */
int azc_jwt_keys_merge(azc_jwt_keys *a, azc_jwt_keys *b, azc_jwt_keys **out,
                       azc_err *e) AZC_WARN_UNUSED;

/* Key rotation (SIGHUP): replaces *slot with `fresh` (taken) while holding
 * `lock` for writing, so verifiers holding it for reading see the old set
 * or the new one whole, then frees the old set. */
void azc_jwt_keys_swap(pthread_rwlock_t *lock, azc_jwt_keys **slot, azc_jwt_keys *fresh);
size_t azc_jwt_keys_count(const azc_jwt_keys *ks);

/* The token of an "Authorization: Bearer <token>" header value (scheme
 * case-insensitive, RFC 6750): 1 with *token pointing into h, 0 when h is
 * NULL, names another scheme or has an empty token. */
int azc_jwt_bearer(const char *h, const char **token);

/* Whether the `scope` claim of `claims` (RFC 8693: a string of
 * space-separated scope names) names `scope` exactly; a missing claim, a
 * claim of another type or an empty `scope` never does. */
int azc_jwt_has_scope(const json_t *claims, const char *scope);

typedef struct azc_jwt_policy {
    const char *issuer;      /* required */
    const char *audience;    /* required */
    long leeway_secs;        /* clock skew allowed for exp/nbf */
    time_t now;              /* 0: the real clock (tests set it) */
    long long max_lifetime_secs; /* exp - iat (or now) above it: refused;
                                  * 0: AZC_JWT_DEFAULT_MAX_LIFETIME */
} azc_jwt_policy;

/*
 * Verifies `token`. On success *claims (may be NULL) is the claims object,
 * owned by the caller (json_decref). Every failure is AZC_EINVAL with a
 * message fit for a log line; callers answer clients with a generic 401.
 */
int azc_jwt_verify(const azc_jwt_keys *ks, const char *token, const azc_jwt_policy *p,
                   json_t **claims, azc_err *e) AZC_WARN_UNUSED;

/*
 * A cache of verified tokens, for a thread's own use (no locking). Signature
 * checks through libjwt and OpenSSL 3 cost several hundred microseconds
 * (the PEM key is parsed on every call), while an admin or a gateway sends
 * the same token many times: a hit costs a SHA-256 of the token and the
 * claim checks (exp, nbf, iss, aud run again on every hit, so an expired
 * token never passes). Entries are keyed by the whole token's digest and
 * by the key set that verified them, so a rotated key set never reuses
 * them. Direct-mapped: a colliding token replaces the older entry.
 */
typedef struct azc_jwt_cache azc_jwt_cache;

/* capacity: number of slots (at least 1). NULL when out of memory. */
azc_jwt_cache *azc_jwt_cache_new(size_t capacity);
void azc_jwt_cache_free(azc_jwt_cache *c);

/* azc_jwt_verify through the cache `c` (NULL: no cache). */
int azc_jwt_verify_cached(azc_jwt_cache *c, const azc_jwt_keys *ks, const char *token,
                          const azc_jwt_policy *p, json_t **claims, azc_err *e) AZC_WARN_UNUSED;

/*
 * Signs `claims` (borrowed) with `alg` and `key` (raw secret for HS algorithms, PEM
 * private key for RS and ES algorithms), adding `kid` to the header when not NULL. For
 * the dev-token tool and tests. *out is malloc'd, owned by the caller.
 */
int azc_jwt_sign(const char *alg, const unsigned char *key, size_t key_len, const char *kid,
                 const json_t *claims, char **out, azc_err *e) AZC_WARN_UNUSED;

#endif
