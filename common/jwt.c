/*
 * JWT verification and signing, and key sets from PEM files; see jwt.h
 * for the checks and why libjwt alone is not enough. Key sets from a
 * JWKS document are in jwks.c.
 */
#include "common/jwt.h"
#include "common/jwt_internal.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#define MAX_KEY_FILE (64 * 1024)
#define MIN_HMAC_SECRET 32

struct cache_slot {
    unsigned char digest[32];
    uint64_t keys_id;
    json_t *claims;            /* NULL: empty slot */
};

struct azc_jwt_cache {
    struct cache_slot *slots;
    size_t n;
};

static void wipe_free(unsigned char *p, size_t n)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, n);
    free(p);
}

void azc_jwt_keys_free(azc_jwt_keys *ks)
{
    size_t i;

    if (ks == NULL)
        return;
    for (i = 0; i < ks->n; i++) {
        free(ks->keys[i].kid);
        wipe_free(ks->keys[i].material, ks->keys[i].len + 1);
    }
    free(ks);
}

size_t azc_jwt_keys_count(const azc_jwt_keys *ks)
{
    return ks != NULL ? ks->n : 0;
}

static int is_hmac(jwt_alg_t a)
{
    return a == JWT_ALG_HS256 || a == JWT_ALG_HS384 || a == JWT_ALG_HS512;
}

int azc__jwt_is_rsa(jwt_alg_t a)
{
    return a == JWT_ALG_RS256 || a == JWT_ALG_RS384 || a == JWT_ALG_RS512;
}

int azc__jwt_read_key_file(const char *path, unsigned char **out, size_t *len, azc_err *e)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    unsigned char *buf;
    size_t got;

    if (f == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwt key file %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > MAX_KEY_FILE) {
        fclose(f);
        return azc_err_set(e, AZC_EINVAL, "jwt key file %s: not a regular file of 1 to %d bytes",
                           path, MAX_KEY_FILE);
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        fclose(f);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) {
        wipe_free(buf, (size_t)st.st_size + 1);
        return azc_err_set(e, AZC_EINVAL, "jwt key file %s: short read", path);
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return AZC_OK;
}

/* The PEM must be a public key of the family the algorithm needs, so a
 * misconfigured key fails at load, not at the first request. */
static int check_public_pem(const struct jwt_key *k, const char *path, azc_err *e)
{
    BIO *bio = BIO_new_mem_buf(k->material, (int)k->len);
    EVP_PKEY *pk;
    int type, want;

    if (bio == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (pk == NULL)
        return azc_err_set(e, AZC_EINVAL,
                           "jwt key file %s: not a PEM public key (BEGIN PUBLIC KEY)", path);
    type = EVP_PKEY_get_base_id(pk);
    EVP_PKEY_free(pk);
    want = azc__jwt_is_rsa(k->alg) ? EVP_PKEY_RSA : EVP_PKEY_EC;
    if (type != want)
        return azc_err_set(e, AZC_EINVAL, "jwt key file %s: key type does not match %s",
                           path, jwt_alg_str(k->alg));
    return AZC_OK;
}

int azc__jwt_keys_alloc(azc_jwt_keys **out, azc_err *e)
{
    azc_jwt_keys *ks = calloc(1, sizeof *ks);

    *out = NULL;
    if (ks == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (RAND_bytes((unsigned char *)&ks->id, sizeof ks->id) != 1) {
        free(ks);
        return azc_err_set(e, AZC_ERROR, "random generator failed");
    }
    *out = ks;
    return AZC_OK;
}

int azc_jwt_keys_load(const json_t *spec, const char *base_dir, azc_jwt_keys **out,
                      azc_err *e)
{
    azc_jwt_keys *ks;
    size_t i, j;
    json_t *item;
    int rc;

    *out = NULL;
    if (!json_is_array(spec) || json_array_size(spec) == 0)
        return azc_err_set(e, AZC_EINVAL, "jwt keys: expected a non-empty array of {kid, alg, file}");
    if (json_array_size(spec) > MAX_KEYS)
        return azc_err_set(e, AZC_EINVAL, "jwt keys: more than %d keys", MAX_KEYS);
    if ((rc = azc__jwt_keys_alloc(&ks, e)) != AZC_OK)
        return rc;
    json_array_foreach(spec, i, item) {
        const char *kid = json_string_value(json_object_get(item, "kid"));
        const char *alg = json_string_value(json_object_get(item, "alg"));
        const char *file = json_string_value(json_object_get(item, "file"));
        struct jwt_key *k = &ks->keys[ks->n];
        char path[4096];

        if (!json_is_object(item) || kid == NULL || alg == NULL || file == NULL ||
            json_object_size(item) != 3 || kid[0] == '\0' || strlen(kid) > 128) {
            rc = azc_err_set(e, AZC_EINVAL,
                             "jwt keys[%zu]: expected exactly {\"kid\", \"alg\", \"file\"} strings", i);
            goto fail;
        }
        k->alg = jwt_str_alg(alg);
        if (k->alg == JWT_ALG_NONE || k->alg == JWT_ALG_INVAL) {
            rc = azc_err_set(e, AZC_EINVAL,
                             "jwt keys[%zu]: algorithm \"%s\" is not one of HS256/384/512, "
                             "RS256/384/512, ES256/384/512", i, alg);
            goto fail;
        }
        for (j = 0; j < ks->n; j++) {
            if (strcmp(ks->keys[j].kid, kid) == 0) {
                rc = azc_err_set(e, AZC_EINVAL, "jwt keys: duplicate kid \"%s\"", kid);
                goto fail;
            }
        }
        if (file[0] == '/' || base_dir == NULL)
            snprintf(path, sizeof path, "%s", file);
        else
            snprintf(path, sizeof path, "%s/%s", base_dir, file);
        k->kid = strdup(kid);
        if (k->kid == NULL) {
            rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
            goto fail;
        }
        ks->n++;
        if ((rc = azc__jwt_read_key_file(path, &k->material, &k->len, e)) != AZC_OK)
            goto fail;
        if (is_hmac(k->alg)) {
            if (k->len < MIN_HMAC_SECRET) {
                rc = azc_err_set(e, AZC_EINVAL, "jwt key file %s: an HMAC secret needs at least %d bytes",
                                 path, MIN_HMAC_SECRET);
                goto fail;
            }
        } else if ((rc = check_public_pem(k, path, e)) != AZC_OK) {
            goto fail;
        }
    }
    *out = ks;
    return AZC_OK;
fail:
    azc_jwt_keys_free(ks);
    return rc;
}

int azc_jwt_keys_load_file(const char *path, azc_jwt_keys **out, azc_err *e)
{
    char dir[PATH_MAX];
    json_error_t jerr;
    json_t *spec;
    int rc;

    *out = NULL;
    if (path == NULL || strlen(path) >= sizeof dir)
        return azc_err_set(e, AZC_EINVAL, "jwt keys: no key-set file, or its name is too long");
    spec = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (spec == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwt keys %s: %s (line %d)", path, jerr.text,
                           jerr.line);
    memcpy(dir, path, strlen(path) + 1);
    rc = azc_jwt_keys_load(spec, dirname(dir), out, e);
    json_decref(spec);
    return rc;
}

void azc_jwt_keys_swap(pthread_rwlock_t *lock, azc_jwt_keys **slot, azc_jwt_keys *fresh)
{
    azc_jwt_keys *old;

    pthread_rwlock_wrlock(lock);
    old = *slot;
    *slot = fresh;
    pthread_rwlock_unlock(lock);
    azc_jwt_keys_free(old);
}

int azc_jwt_bearer(const char *h, const char **token)
{
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    *token = h;
    return *h != '\0';
}

int azc_jwt_has_scope(const json_t *claims, const char *scope)
{
    const char *s = json_string_value(json_object_get(claims, "scope"));
    size_t want = scope != NULL ? strlen(scope) : 0;

    if (s == NULL || want == 0)
        return 0;
    while (*s != '\0') {
        size_t n = strcspn(s, " ");

        if (n == want && memcmp(s, scope, n) == 0)
            return 1;
        s += n;
        s += strspn(s, " ");
    }
    return 0;
}

/* base64url (no padding) -> bytes, NUL-terminated. */
unsigned char *azc__jwt_b64url_decode(const char *in, size_t n, size_t *out_len)
{
    size_t padded = (n + 3) / 4 * 4, i;
    char *tmp;
    unsigned char *out;
    int got;

    if (n % 4 == 1)
        return NULL;
    tmp = malloc(padded + 1);
    out = malloc(padded / 4 * 3 + 1);
    if (tmp == NULL || out == NULL) {
        free(tmp);
        free(out);
        return NULL;
    }
    for (i = 0; i < n; i++)
        tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    for (; i < padded; i++)
        tmp[i] = '=';
    got = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded);
    free(tmp);
    if (got < 0) {
        free(out);
        return NULL;
    }
    *out_len = (size_t)got - (padded - n);   /* EVP_DecodeBlock counts padding */
    out[*out_len] = '\0';
    return out;
}

int azc__jwt_b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Reads alg and kid from the header without trusting anything else. */
static int parse_header(const char *token, size_t hlen, char *alg, size_t alen, char *kid,
                        size_t klen, azc_err *e)
{
    size_t n;
    unsigned char *raw = azc__jwt_b64url_decode(token, hlen, &n);
    json_t *h, *v;
    int rc = AZC_OK;

    if (raw == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwt: header is not base64url");
    h = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (!json_is_object(h)) {
        json_decref(h);
        return azc_err_set(e, AZC_EINVAL, "jwt: header is not a JSON object");
    }
    v = json_object_get(h, "alg");
    if (!json_is_string(v) || json_string_length(v) >= alen)
        rc = azc_err_set(e, AZC_EINVAL, "jwt: header has no valid alg");
    else
        memcpy(alg, json_string_value(v), json_string_length(v) + 1);
    kid[0] = '\0';
    v = json_object_get(h, "kid");
    if (rc == AZC_OK && v != NULL) {
        if (!json_is_string(v) || json_string_length(v) >= klen || json_string_length(v) == 0)
            rc = azc_err_set(e, AZC_EINVAL, "jwt: header kid is not a short string");
        else
            memcpy(kid, json_string_value(v), json_string_length(v) + 1);
    }
    if (rc == AZC_OK && json_object_get(h, "crit") != NULL)
        rc = azc_err_set(e, AZC_EINVAL, "jwt: critical header extensions are not supported");
    json_decref(h);
    return rc;
}

static const struct jwt_key *find_key(const azc_jwt_keys *ks, const char *kid)
{
    size_t i;

    if (kid[0] == '\0')
        return ks->n == 1 ? &ks->keys[0] : NULL;
    for (i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return &ks->keys[i];
    return NULL;
}

/* RFC 7519 NumericDate: seconds since the epoch, "possibly non-integer". */
static int numeric_date(const json_t *v, double *out)
{
    if (!json_is_number(v))
        return 0;
    *out = json_number_value(v);
    return 1;
}

static int check_claims(json_t *c, const azc_jwt_policy *p, azc_err *e)
{
    double now = (double)(p->now != 0 ? p->now : time(NULL));
    double leeway = (double)p->leeway_secs, exp_at, nbf_at, iat_at, start;
    long long max_life = p->max_lifetime_secs > 0 ? p->max_lifetime_secs
                                                  : AZC_JWT_DEFAULT_MAX_LIFETIME;
    json_t *exp = json_object_get(c, "exp"), *nbf = json_object_get(c, "nbf");
    json_t *iat = json_object_get(c, "iat");
    json_t *iss = json_object_get(c, "iss"), *aud = json_object_get(c, "aud");
    json_t *sub = json_object_get(c, "sub"), *v;
    size_t i;
    int aud_ok = 0;

    if (!numeric_date(exp, &exp_at))
        return azc_err_set(e, AZC_EINVAL, "jwt: exp claim missing or not a number");
    if (exp_at + leeway <= now)
        return azc_err_set(e, AZC_EINVAL, "jwt: token expired");
    if (nbf != NULL) {
        if (!numeric_date(nbf, &nbf_at))
            return azc_err_set(e, AZC_EINVAL, "jwt: nbf claim is not a number");
        if (nbf_at - leeway > now)
            return azc_err_set(e, AZC_EINVAL, "jwt: token not valid yet (nbf)");
    }
    /* A leaked long-lived token stays usable for its whole life: bound it.
     * The lifetime counts from iat, or from now when iat is absent or in
     * the future (a future iat must not make a distant exp look short). */
    start = now;
    if (iat != NULL) {
        if (!numeric_date(iat, &iat_at))
            return azc_err_set(e, AZC_EINVAL, "jwt: iat claim is not a number");
        if (iat_at < start)
            start = iat_at;
    }
    if (exp_at - start > (double)max_life)
        return azc_err_set(e, AZC_EINVAL, "jwt: token lifetime over the maximum of %lld s",
                           max_life);
    if (!json_is_string(iss) || p->issuer == NULL || strcmp(json_string_value(iss), p->issuer) != 0)
        return azc_err_set(e, AZC_EINVAL, "jwt: wrong issuer");
    if (json_is_string(aud)) {
        aud_ok = p->audience != NULL && strcmp(json_string_value(aud), p->audience) == 0;
    } else if (json_is_array(aud)) {
        json_array_foreach(aud, i, v) {
            if (json_is_string(v) && p->audience != NULL &&
                strcmp(json_string_value(v), p->audience) == 0)
                aud_ok = 1;
        }
    }
    if (!aud_ok)
        return azc_err_set(e, AZC_EINVAL, "jwt: wrong audience");
    if (!json_is_string(sub) || json_string_length(sub) == 0 || json_string_length(sub) > 256)
        return azc_err_set(e, AZC_EINVAL, "jwt: sub claim missing or not a short string");
    return AZC_OK;
}

/*
 * CVE-2022-21449 ("psychic signatures"): a verifier that skips the range
 * check accepts r = s = 0 for any message. OpenSSL 3 does check, but the
 * rule is ours to enforce, not a property of whichever library version is
 * linked: a JOSE ECDSA signature is r||s of exactly twice the curve size,
 * and r and s must both lie in [1, n-1].
 */
static int check_ecdsa_sig(jwt_alg_t alg, const char *sig_b64, azc_err *e)
{
    size_t half, got = 0, i;
    int nid, rc = AZC_OK;
    unsigned char *sig;
    EC_GROUP *g;
    const BIGNUM *order;
    BIGNUM *r = NULL, *s = NULL;

    switch (alg) {
    case JWT_ALG_ES256: half = 32; nid = NID_X9_62_prime256v1; break;
    case JWT_ALG_ES384: half = 48; nid = NID_secp384r1; break;
    case JWT_ALG_ES512: half = 66; nid = NID_secp521r1; break;
    default: return AZC_OK;
    }
    sig = azc__jwt_b64url_decode(sig_b64, strlen(sig_b64), &got);
    if (sig == NULL || got != 2 * half) {
        free(sig);
        return azc_err_set(e, AZC_EINVAL, "jwt: ECDSA signature is not %zu bytes of r||s",
                           2 * half);
    }
    for (i = 0; i < half && sig[i] == 0; i++)
        ;
    if (i == half) {
        rc = azc_err_set(e, AZC_EINVAL, "jwt: ECDSA signature has r = 0");
        goto out;
    }
    for (i = half; i < 2 * half && sig[i] == 0; i++)
        ;
    if (i == 2 * half) {
        rc = azc_err_set(e, AZC_EINVAL, "jwt: ECDSA signature has s = 0");
        goto out;
    }
    g = EC_GROUP_new_by_curve_name(nid);
    order = g != NULL ? EC_GROUP_get0_order(g) : NULL;
    r = BN_bin2bn(sig, (int)half, NULL);
    s = BN_bin2bn(sig + half, (int)half, NULL);
    if (order == NULL || r == NULL || s == NULL)
        rc = azc_err_set(e, AZC_ERROR, "jwt: cannot check the ECDSA signature range");
    else if (BN_cmp(r, order) >= 0 || BN_cmp(s, order) >= 0)
        rc = azc_err_set(e, AZC_EINVAL, "jwt: ECDSA signature r or s not below the curve order");
    BN_free(r);
    BN_free(s);
    EC_GROUP_free(g);
out:
    free(sig);
    return rc;
}

int azc_jwt_verify(const azc_jwt_keys *ks, const char *token, const azc_jwt_policy *p,
                   json_t **claims, azc_err *e)
{
    char alg[16], kid[130];
    const char *dot1, *dot2;
    const struct jwt_key *k;
    size_t n, i;
    jwt_t *j = NULL;
    unsigned char *raw;
    json_t *c;
    int rc;

    if (claims != NULL)
        *claims = NULL;
    if (ks == NULL || p == NULL || token == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwt: no token or no keys");
    n = strlen(token);
    if (n == 0 || n > AZC_JWT_MAX_BYTES)
        return azc_err_set(e, AZC_EINVAL, "jwt: token empty or over %d bytes", AZC_JWT_MAX_BYTES);
    for (i = 0; i < n; i++)
        if (!azc__jwt_b64url_char(token[i]) && token[i] != '.')
            return azc_err_set(e, AZC_EINVAL, "jwt: token has characters outside base64url");
    dot1 = strchr(token, '.');
    dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
    if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL || dot2[1] == '\0' ||
        dot1 == token || dot2 == dot1 + 1)
        return azc_err_set(e, AZC_EINVAL, "jwt: not three non-empty parts (a signed JWS)");
    if ((rc = parse_header(token, (size_t)(dot1 - token), alg, sizeof alg, kid, sizeof kid, e)) !=
        AZC_OK)
        return rc;
    k = find_key(ks, kid);
    if (k == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwt: no configured key for kid \"%s\"", kid);
    /* Pin: the token must name exactly the configured algorithm. */
    if (strcmp(alg, jwt_alg_str(k->alg)) != 0)
        return azc_err_set(e, AZC_EINVAL, "jwt: algorithm %s not allowed for key \"%s\"", alg, k->kid);
    /* The claims are read from the token's own bytes: libjwt parses them
     * without duplicate rejection (the last "exp" or "authz_admin" wins)
     * and re-serialises them, so checking its copy would never see a
     * duplicate. */
    raw = azc__jwt_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &n);
    if (raw == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwt: payload is not base64url");
    c = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (!json_is_object(c)) {
        json_decref(c);
        return azc_err_set(e, AZC_EINVAL,
                           "jwt: claims are not a JSON object without duplicate members");
    }
    if ((rc = check_ecdsa_sig(k->alg, dot2 + 1, e)) != AZC_OK) {
        json_decref(c);
        return rc;
    }
    if (jwt_decode(&j, token, k->material, (int)k->len) != 0 || j == NULL) {
        json_decref(c);
        return azc_err_set(e, AZC_EINVAL, "jwt: bad signature or malformed token");
    }
    if (jwt_get_alg(j) != k->alg) {
        jwt_free(j);
        json_decref(c);
        return azc_err_set(e, AZC_EINVAL, "jwt: algorithm mismatch after decode");
    }
    jwt_free(j);
    if ((rc = check_claims(c, p, e)) != AZC_OK) {
        json_decref(c);
        return rc;
    }
    if (claims != NULL)
        *claims = c;
    else
        json_decref(c);
    return AZC_OK;
}

azc_jwt_cache *azc_jwt_cache_new(size_t capacity)
{
    azc_jwt_cache *c = calloc(1, sizeof *c);

    if (c == NULL)
        return NULL;
    c->n = capacity > 0 ? capacity : 1;
    c->slots = calloc(c->n, sizeof *c->slots);
    if (c->slots == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void azc_jwt_cache_free(azc_jwt_cache *c)
{
    size_t i;

    if (c == NULL)
        return;
    for (i = 0; i < c->n; i++)
        json_decref(c->slots[i].claims);
    free(c->slots);
    free(c);
}

int azc_jwt_verify_cached(azc_jwt_cache *c, const azc_jwt_keys *ks, const char *token,
                          const azc_jwt_policy *p, json_t **claims, azc_err *e)
{
    unsigned char digest[32];
    unsigned int dlen = 0;
    struct cache_slot *slot;
    json_t *fresh = NULL;
    uint64_t index;
    int rc;

    if (c == NULL || ks == NULL || p == NULL || token == NULL || strlen(token) > AZC_JWT_MAX_BYTES ||
        EVP_Digest(token, strlen(token), digest, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
        return azc_jwt_verify(ks, token, p, claims, e);
    memcpy(&index, digest, sizeof index);
    slot = &c->slots[index % c->n];
    if (slot->claims != NULL && slot->keys_id == ks->id &&
        memcmp(slot->digest, digest, sizeof digest) == 0) {
        /* The signature was good; time and audience may not be any more. */
        if ((rc = check_claims(slot->claims, p, e)) != AZC_OK)
            return rc;
        if (claims != NULL)
            *claims = json_incref(slot->claims);
        return AZC_OK;
    }
    if ((rc = azc_jwt_verify(ks, token, p, &fresh, e)) != AZC_OK)
        return rc;
    json_decref(slot->claims);
    memcpy(slot->digest, digest, sizeof digest);
    slot->keys_id = ks->id;
    slot->claims = json_incref(fresh);
    if (claims != NULL)
        *claims = fresh;
    else
        json_decref(fresh);
    return AZC_OK;
}

int azc_jwt_sign(const char *alg, const unsigned char *key, size_t key_len, const char *kid,
                 const json_t *claims, char **out, azc_err *e)
{
    jwt_alg_t a = jwt_str_alg(alg);
    jwt_t *j = NULL;
    char *text;
    int rc = AZC_OK;

    *out = NULL;
    if (a == JWT_ALG_NONE || a == JWT_ALG_INVAL)
        return azc_err_set(e, AZC_EINVAL, "jwt: cannot sign with algorithm \"%s\"", alg);
    if (!json_is_object(claims))
        return azc_err_set(e, AZC_EINVAL, "jwt: claims must be an object");
    text = json_dumps(claims, JSON_COMPACT);
    if (text == NULL)
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    if (jwt_new(&j) != 0 || jwt_add_grants_json(j, text) != 0 ||
        (kid != NULL && jwt_add_header(j, "kid", kid) != 0) ||
        jwt_set_alg(j, a, key, (int)key_len) != 0) {
        rc = azc_err_set(e, AZC_EINVAL, "jwt: cannot build token (bad key for %s?)", alg);
    } else if ((*out = jwt_encode_str(j)) == NULL) {
        rc = azc_err_set(e, AZC_EINVAL, "jwt: signing failed (bad key for %s?)", alg);
    }
    free(text);
    jwt_free(j);
    return rc;
}

int azc_jwt_keys_merge(azc_jwt_keys *a, azc_jwt_keys *b, azc_jwt_keys **out, azc_err *e)
{
    size_t i, j;

    *out = NULL;
    if (a == NULL || b == NULL) {
        azc_jwt_keys_free(a);
        azc_jwt_keys_free(b);
        return azc_err_set(e, AZC_EINVAL, "jwt keys: nothing to merge");
    }
    if (a->n + b->n > MAX_KEYS) {
        azc_jwt_keys_free(a);
        azc_jwt_keys_free(b);
        return azc_err_set(e, AZC_EINVAL, "jwt keys: more than %d keys", MAX_KEYS);
    }
    for (i = 0; i < b->n; i++) {
        for (j = 0; j < a->n; j++) {
            if (strcmp(a->keys[j].kid, b->keys[i].kid) == 0) {
                int rc = azc_err_set(e, AZC_EINVAL, "jwt keys: kid \"%s\" in both key sets",
                                     a->keys[j].kid);

                azc_jwt_keys_free(a);
                azc_jwt_keys_free(b);
                return rc;
            }
        }
    }
    /* Moved, not copied: b gives up its keys so freeing it frees nothing. */
    for (i = 0; i < b->n; i++)
        a->keys[a->n++] = b->keys[i];
    b->n = 0;
    azc_jwt_keys_free(b);
    *out = a;
    return AZC_OK;
}
