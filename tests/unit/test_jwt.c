/* Unit tests: strict JWT verification (alg pinning, none, key confusion,
 * exp/nbf/iss/aud), duplicate members, NumericDates, the lifetime bound,
 * key-set loading, malformed tokens. Keys are generated
 * per run with OpenSSL into a temp directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "common/jwt.h"

#define ISS "https://idp.test"
#define AUD "authz-admin"
#define NOW 1763800000L

struct fixture {
    char dir[64];
    char *rsa_priv, *rsa_pub, *ec_priv, *ec_pub;
    azc_jwt_keys *keys;
};

static char *pem_of(EVP_PKEY *k, int priv)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    assert_non_null(b);
    if (priv)
        assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static const char SECRET[] = "0123456789abcdef0123456789abcdef-hmac";

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    json_t *spec;
    azc_err e;

    strcpy(fx->dir, "/tmp/azc-jwt-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    fx->rsa_priv = pem_of(rsa, 1);
    fx->rsa_pub = pem_of(rsa, 0);
    fx->ec_priv = pem_of(ec, 1);
    fx->ec_pub = pem_of(ec, 0);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    write_file(fx->dir, "rsa.pub", fx->rsa_pub, strlen(fx->rsa_pub));
    write_file(fx->dir, "ec.pub", fx->ec_pub, strlen(fx->ec_pub));
    write_file(fx->dir, "hmac.key", SECRET, strlen(SECRET));
    write_file(fx->dir, "short.key", "short", 5);
    spec = json_pack("[{s:s,s:s,s:s},{s:s,s:s,s:s},{s:s,s:s,s:s}]",
                     "kid", "rsa1", "alg", "RS256", "file", "rsa.pub",
                     "kid", "ec1", "alg", "ES256", "file", "ec.pub",
                     "kid", "hs1", "alg", "HS256", "file", "hmac.key");
    if (azc_jwt_keys_load(spec, fx->dir, &fx->keys, &e) != AZC_OK)
        fail_msg("load: %s", e.msg);
    json_decref(spec);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char cmd[128];

    azc_jwt_keys_free(fx->keys);
    free(fx->rsa_priv);
    free(fx->rsa_pub);
    free(fx->ec_priv);
    free(fx->ec_pub);
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

static json_t *claims(long exp_off)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", ISS, "aud", AUD, "sub", "alice",
                     "iat", (json_int_t)NOW, "exp", (json_int_t)(NOW + exp_off));
}

static char *sign(const char *alg, const char *key, size_t len, const char *kid, json_t *c)
{
    char *tok = NULL;
    azc_err e;

    if (azc_jwt_sign(alg, (const unsigned char *)key, len, kid, c, &tok, &e) != AZC_OK)
        fail_msg("sign: %s", e.msg);
    json_decref(c);
    return tok;
}

static int verify(struct fixture *fx, const char *tok, azc_err *e)
{
    azc_jwt_policy p = { ISS, AUD, 30, NOW, 0 };
    json_t *c = NULL;
    int rc;

    azc_err_clear(e);
    rc = azc_jwt_verify(fx->keys, tok, &p, &c, e);
    if (rc == AZC_OK)
        assert_string_equal(json_string_value(json_object_get(c, "sub")), "alice");
    else
        assert_null(c);
    json_decref(c);
    return rc;
}

static void test_valid_tokens(void **state)
{
    struct fixture *fx = *state;
    char *t;
    azc_err e;

    t = sign("RS256", fx->rsa_priv, strlen(fx->rsa_priv), "rsa1", claims(300));
    assert_int_equal(verify(fx, t, &e), AZC_OK);
    free(t);
    t = sign("ES256", fx->ec_priv, strlen(fx->ec_priv), "ec1", claims(300));
    assert_int_equal(verify(fx, t, &e), AZC_OK);
    free(t);
    t = sign("HS256", SECRET, strlen(SECRET), "hs1", claims(300));
    assert_int_equal(verify(fx, t, &e), AZC_OK);
    free(t);
}

/* Builds "header.payload.signature" by hand for attacks libjwt would
 * never produce. */
static char *b64url(const unsigned char *d, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1), *p;
    int len = EVP_EncodeBlock((unsigned char *)out, d, (int)n);

    for (p = out; p < out + len; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    while (len > 0 && out[len - 1] == '=')
        out[--len] = '\0';
    return out;
}

static char *handmade(const char *header, json_t *c, const unsigned char *hmac_key, size_t klen)
{
    char *payload = json_dumps(c, JSON_COMPACT);
    char *h = b64url((const unsigned char *)header, strlen(header));
    char *p = b64url((const unsigned char *)payload, strlen(payload));
    char *tok = malloc(strlen(h) + strlen(p) + 200);
    unsigned char mac[64];
    unsigned int maclen = 0;

    sprintf(tok, "%s.%s", h, p);
    if (hmac_key != NULL) {
        char *s;
        assert_non_null(HMAC(EVP_sha256(), hmac_key, (int)klen, (unsigned char *)tok, strlen(tok),
                             mac, &maclen));
        s = b64url(mac, maclen);
        strcat(tok, ".");
        strcat(tok, s);
        free(s);
    } else {
        strcat(tok, ".");
    }
    free(payload);
    free(h);
    free(p);
    json_decref(c);
    return tok;
}

static void test_alg_none_rejected(void **state)
{
    struct fixture *fx = *state;
    char *t = handmade("{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"hs1\"}", claims(300), NULL, 0);
    azc_err e;

    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
    t = handmade("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims(300), NULL, 0);
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
}

static void test_key_confusion_rejected(void **state)
{
    struct fixture *fx = *state;
    /* HS256 "signed" with the RSA public key text, claiming the RSA kid:
     * libjwt 1.10 alone accepts this. */
    char *t = handmade("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"rsa1\"}", claims(300),
                       (const unsigned char *)fx->rsa_pub, strlen(fx->rsa_pub));
    azc_err e;

    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "algorithm HS256 not allowed"));
    free(t);
}

static void test_wrong_key_and_kid(void **state)
{
    struct fixture *fx = *state;
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *other_priv = pem_of(other, 1);
    char *t;
    azc_err e;

    t = sign("ES256", other_priv, strlen(other_priv), "ec1", claims(300));
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "bad signature"));
    free(t);
    t = sign("ES256", fx->ec_priv, strlen(fx->ec_priv), "nope", claims(300));
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "no configured key"));
    free(t);
    /* no kid and several keys: refused rather than guessed */
    t = sign("ES256", fx->ec_priv, strlen(fx->ec_priv), NULL, claims(300));
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
    /* RS256 token presented under the ES key id */
    t = sign("RS256", fx->rsa_priv, strlen(fx->rsa_priv), "ec1", claims(300));
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
    free(other_priv);
    EVP_PKEY_free(other);
}

static void test_claims_checked(void **state)
{
    struct fixture *fx = *state;
    struct { json_t *c; const char *why; } cases[] = {
        { claims(-60), "expired" },
        { json_pack("{s:s,s:s,s:s}", "iss", ISS, "aud", AUD, "sub", "alice"), "exp claim missing" },
        { json_pack("{s:s,s:s,s:s,s:s}", "iss", ISS, "aud", AUD, "sub", "alice", "exp", "soon"),
          "exp claim missing" },
        { json_pack("{s:s,s:s,s:s,s:I,s:I}", "iss", ISS, "aud", AUD, "sub", "alice",
                    "exp", (json_int_t)(NOW + 300), "nbf", (json_int_t)(NOW + 120)), "not valid yet" },
        { json_pack("{s:s,s:s,s:s,s:I}", "iss", "https://evil", "aud", AUD, "sub", "alice",
                    "exp", (json_int_t)(NOW + 300)), "wrong issuer" },
        { json_pack("{s:s,s:s,s:I}", "aud", AUD, "sub", "alice", "exp", (json_int_t)(NOW + 300)),
          "wrong issuer" },
        { json_pack("{s:s,s:s,s:s,s:I}", "iss", ISS, "aud", "other", "sub", "alice",
                    "exp", (json_int_t)(NOW + 300)), "wrong audience" },
        { json_pack("{s:s,s:[s,s],s:s,s:I}", "iss", ISS, "aud", "x", "y", "sub", "alice",
                    "exp", (json_int_t)(NOW + 300)), "wrong audience" },
        { json_pack("{s:s,s:s,s:I}", "iss", ISS, "aud", AUD, "exp", (json_int_t)(NOW + 300)),
          "sub claim missing" },
    };
    size_t i;
    azc_err e;
    char *t;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        t = sign("HS256", SECRET, strlen(SECRET), "hs1", cases[i].c);
        assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
        if (strstr(e.msg, cases[i].why) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, e.msg, cases[i].why);
        free(t);
    }
    /* within leeway, audience in an array, nbf in the past: accepted */
    t = sign("HS256", SECRET, strlen(SECRET), "hs1", claims(-10));
    assert_int_equal(verify(fx, t, &e), AZC_OK);
    free(t);
    t = sign("HS256", SECRET, strlen(SECRET), "hs1",
             json_pack("{s:s,s:[s,s],s:s,s:I,s:I}", "iss", ISS, "aud", "x", AUD, "sub", "alice",
                       "exp", (json_int_t)(NOW + 300), "nbf", (json_int_t)(NOW - 5)));
    assert_int_equal(verify(fx, t, &e), AZC_OK);
    free(t);
}

static void test_malformed_tokens(void **state)
{
    struct fixture *fx = *state;
    char *valid = sign("HS256", SECRET, strlen(SECRET), "hs1", claims(300));
    char *big = malloc(AZC_JWT_MAX_BYTES + 2);
    const char *bad[] = {
        "", "abc", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.", "a b.c.d", "!!!.e30.sig",
        "e30.e30.c2ln",            /* header without alg */
        "bm90IGpzb24.e30.c2ln",    /* header not JSON */
        "W10.e30.c2ln",            /* header an array */
    };
    size_t i;
    azc_err e;
    char *t;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (verify(fx, bad[i], &e) != AZC_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(verify(fx, NULL, &e), AZC_EINVAL);
    memset(big, 'a', AZC_JWT_MAX_BYTES + 1);
    big[AZC_JWT_MAX_BYTES + 1] = '\0';
    assert_int_equal(verify(fx, big, &e), AZC_EINVAL);
    free(big);
    /* flip one character of the payload */
    t = strdup(valid);
    t[strchr(t, '.') - t + 5] ^= 1;
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
    /* crit header */
    t = handmade("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"hs1\",\"crit\":[\"x\"]}", claims(300),
                 (const unsigned char *)SECRET, strlen(SECRET));
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
    free(valid);
}

static void test_key_loading_errors(void **state)
{
    struct fixture *fx = *state;
    struct { json_t *spec; const char *why; } cases[] = {
        { json_pack("[]"), "non-empty array" },
        { json_pack("{}"), "non-empty array" },
        { json_pack("[{s:s,s:s,s:s}]", "kid", "a", "alg", "none", "file", "hmac.key"), "algorithm \"none\"" },
        { json_pack("[{s:s,s:s,s:s}]", "kid", "a", "alg", "PS256", "file", "hmac.key"), "algorithm \"PS256\"" },
        { json_pack("[{s:s,s:s,s:s}]", "kid", "a", "alg", "HS256", "file", "short.key"), "at least 32 bytes" },
        { json_pack("[{s:s,s:s,s:s}]", "kid", "a", "alg", "RS256", "file", "ec.pub"), "does not match RS256" },
        { json_pack("[{s:s,s:s,s:s}]", "kid", "a", "alg", "ES256", "file", "hmac.key"), "not a PEM public key" },
        { json_pack("[{s:s,s:s,s:s}]", "kid", "a", "alg", "ES256", "file", "missing.pub"), "missing.pub" },
        { json_pack("[{s:s,s:s,s:s},{s:s,s:s,s:s}]", "kid", "a", "alg", "ES256", "file", "ec.pub",
                    "kid", "a", "alg", "RS256", "file", "rsa.pub"), "duplicate kid" },
        { json_pack("[{s:s,s:s}]", "kid", "a", "alg", "ES256"), "expected exactly" },
        { json_pack("[{s:s,s:s,s:i}]", "kid", "a", "alg", "ES256", "file", 3), "expected exactly" },
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        azc_jwt_keys *ks = NULL;
        azc_err e;

        azc_err_clear(&e);
        assert_int_equal(azc_jwt_keys_load(cases[i].spec, fx->dir, &ks, &e), AZC_EINVAL);
        assert_null(ks);
        if (strstr(e.msg, cases[i].why) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, e.msg, cases[i].why);
        json_decref(cases[i].spec);
    }
    assert_int_equal(azc_jwt_keys_count(fx->keys), 3);
}

static void test_single_key_without_kid(void **state)
{
    struct fixture *fx = *state;
    json_t *spec = json_pack("[{s:s,s:s,s:s}]", "kid", "only", "alg", "ES256", "file", "ec.pub");
    azc_jwt_policy p = { ISS, AUD, 0, NOW, 0 };
    azc_jwt_keys *ks;
    char *t;
    azc_err e;

    assert_int_equal(azc_jwt_keys_load(spec, fx->dir, &ks, &e), AZC_OK);
    t = sign("ES256", fx->ec_priv, strlen(fx->ec_priv), NULL, claims(300));
    assert_int_equal(azc_jwt_verify(ks, t, &p, NULL, &e), AZC_OK);
    free(t);
    azc_jwt_keys_free(ks);
    json_decref(spec);
}

static void test_cache(void **state)
{
    struct fixture *fx = *state;
    azc_jwt_cache *c = azc_jwt_cache_new(8);
    azc_jwt_policy p = { ISS, AUD, 0, NOW, 0 };
    json_t *spec = json_pack("[{s:s,s:s,s:s}]", "kid", "hs1", "alg", "HS256", "file", "hmac.key");
    azc_jwt_keys *rotated;
    json_t *cl = NULL;
    char *t = sign("HS256", SECRET, strlen(SECRET), "hs1", claims(300));
    char *bad;
    azc_err e;
    int i;

    for (i = 0; i < 3; i++) {      /* miss, then hits */
        assert_int_equal(azc_jwt_verify_cached(c, fx->keys, t, &p, &cl, &e), AZC_OK);
        assert_string_equal(json_string_value(json_object_get(cl, "sub")), "alice");
        json_decref(cl);
        cl = NULL;
    }
    /* a hit still checks time and audience */
    p.now = NOW + 400;
    assert_int_equal(azc_jwt_verify_cached(c, fx->keys, t, &p, &cl, &e), AZC_EINVAL);
    assert_non_null(strstr(e.msg, "expired"));
    assert_null(cl);
    p.now = NOW;
    p.audience = "other";
    assert_int_equal(azc_jwt_verify_cached(c, fx->keys, t, &p, NULL, &e), AZC_EINVAL);
    p.audience = AUD;
    /* a tampered token is not a hit */
    bad = strdup(t);
    bad[strlen(bad) - 2] ^= 1;
    assert_int_equal(azc_jwt_verify_cached(c, fx->keys, bad, &p, NULL, &e), AZC_EINVAL);
    free(bad);
    /* another key set (rotation) verifies again: same secret here, so OK */
    assert_int_equal(azc_jwt_keys_load(spec, fx->dir, &rotated, &e), AZC_OK);
    assert_int_equal(azc_jwt_verify_cached(c, rotated, t, &p, NULL, &e), AZC_OK);
    azc_jwt_keys_free(rotated);
    /* a key set without the kid: the cached entry of the old set is not used */
    json_decref(spec);
    spec = json_pack("[{s:s,s:s,s:s}]", "kid", "ec1", "alg", "ES256", "file", "ec.pub");
    assert_int_equal(azc_jwt_keys_load(spec, fx->dir, &rotated, &e), AZC_OK);
    assert_int_equal(azc_jwt_verify_cached(c, rotated, t, &p, NULL, &e), AZC_EINVAL);
    azc_jwt_keys_free(rotated);
    json_decref(spec);
    free(t);
    azc_jwt_cache_free(c);
    azc_jwt_cache_free(NULL);
}

/* A token over the exact payload text (HS256, kid hs1), so duplicate
 * members reach the verifier byte for byte. */
static char *raw_token(const char *header, const char *payload)
{
    char *h = b64url((const unsigned char *)header, strlen(header));
    char *p = b64url((const unsigned char *)payload, strlen(payload));
    char *tok = malloc(strlen(h) + strlen(p) + 200), *sig;
    unsigned char mac[64];
    unsigned int maclen = 0;

    sprintf(tok, "%s.%s", h, p);
    assert_non_null(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (unsigned char *)tok,
                         strlen(tok), mac, &maclen));
    sig = b64url(mac, maclen);
    strcat(tok, ".");
    strcat(tok, sig);
    free(sig);
    free(h);
    free(p);
    return tok;
}

#define HS_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"hs1\"}"

/* Each registered claim and the admin claim given twice: refused, whichever
 * copy comes last. libjwt alone keeps the last one. */
static void test_duplicate_claims_rejected(void **state)
{
    struct fixture *fx = *state;
    char base[256], dup[512], *t;
    const char *cases[][2] = {
        { "exp", "%lld" }, { "nbf", "%lld" }, { "iat", "%lld" },
        { "iss", "\"" ISS "\"" }, { "aud", "\"" AUD "\"" }, { "sub", "\"alice\"" },
        { "jti", "\"j1\"" }, { "authz_admin", "true" },
    };
    size_t i;
    azc_err e;

    snprintf(base, sizeof base, "\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"alice\",\"iat\":%lld,"
             "\"exp\":%lld", ISS, AUD, (long long)NOW, (long long)NOW + 300);
    /* the control: the same builder without a duplicate passes */
    snprintf(dup, sizeof dup, "{%s,\"authz_admin\":false}", base);
    t = raw_token(HS_HEADER, dup);
    assert_int_equal(verify(fx, t, &e), AZC_OK);
    free(t);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char val[64];

        snprintf(val, sizeof val, cases[i][1], (long long)NOW + 100);
        /* "exp":<past> last, and "authz_admin":false,...,true */
        snprintf(dup, sizeof dup, "{%s,\"%s\":%s,\"%s\":%s}", base, cases[i][0],
                 strcmp(cases[i][0], "authz_admin") == 0 ? "false" : val, cases[i][0],
                 strcmp(cases[i][0], "exp") == 0 ? "1" : val);
        t = raw_token(HS_HEADER, dup);
        assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
        if (strstr(e.msg, "duplicate") == NULL)
            fail_msg("claim %s: \"%s\"", cases[i][0], e.msg);
        free(t);
    }
    /* "exp":<past>,"exp":<future>: the libjwt copy would say valid */
    snprintf(dup, sizeof dup, "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"alice\",\"exp\":%lld,"
             "\"exp\":%lld}", ISS, AUD, (long long)NOW - 1000, (long long)NOW + 300);
    t = raw_token(HS_HEADER, dup);
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
    /* a duplicate inside a nested object, and in the header */
    snprintf(dup, sizeof dup, "{%s,\"x\":{\"a\":1,\"a\":2}}", base);
    t = raw_token(HS_HEADER, dup);
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
    snprintf(dup, sizeof dup, "{%s}", base);
    t = raw_token("{\"alg\":\"HS256\",\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"hs1\"}", dup);
    assert_int_equal(verify(fx, t, &e), AZC_EINVAL);
    free(t);
}

/* RFC 7519 NumericDate may be non-integer. */
static void test_numeric_dates(void **state)
{
    struct fixture *fx = *state;
    char payload[256], *t;
    azc_err e;
    const struct { const char *exp, *nbf; int ok; const char *why; } cases[] = {
        { "%lld.5", NULL, 1, NULL },
        { "%lld.5e0", "1.5", 1, NULL },
        { "-100.25", NULL, 0, "expired" },
        { "%lld.5", "1e10", 0, "not valid yet" },
        { "\"soon\"", NULL, 0, "not a number" },
        { "%lld", "\"now\"", 0, "nbf claim is not a number" },
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char exp[32], nbf[64] = "";

        snprintf(exp, sizeof exp, cases[i].exp, (long long)NOW + 300);
        if (cases[i].nbf != NULL)
            snprintf(nbf, sizeof nbf, ",\"nbf\":%s", cases[i].nbf);
        snprintf(payload, sizeof payload,
                 "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"alice\",\"exp\":%s%s}", ISS, AUD, exp,
                 nbf);
        t = raw_token(HS_HEADER, payload);
        assert_int_equal(verify(fx, t, &e), cases[i].ok ? AZC_OK : AZC_EINVAL);
        if (!cases[i].ok && strstr(e.msg, cases[i].why) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, e.msg, cases[i].why);
        free(t);
    }
}

static void test_max_lifetime(void **state)
{
    struct fixture *fx = *state;
    azc_jwt_policy p = { ISS, AUD, 30, NOW, 0 };
    struct { long long iat, exp; long long max; int ok; } cases[] = {
        { NOW, NOW + 86400, 0, 1 },                 /* exactly the 24 h default */
        { NOW, NOW + 86401, 0, 0 },
        { NOW - 86000, NOW + 401, 0, 0 },           /* counted from iat, not now */
        { -1, NOW + 86400, 0, 1 },                  /* no iat: from now */
        { -1, NOW + 90000, 0, 0 },
        { NOW + 10 * 86400, NOW + 10 * 86400 + 1, 0, 0 },   /* a future iat is not trusted */
        { NOW, NOW + 300, 600, 1 },
        { NOW, NOW + 700, 600, 0 },
    };
    size_t i;
    azc_err e;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *c = json_pack("{s:s, s:s, s:s, s:I}", "iss", ISS, "aud", AUD, "sub", "alice",
                              "exp", (json_int_t)cases[i].exp);
        char *t;
        int rc;

        if (cases[i].iat >= 0)
            assert_int_equal(json_object_set_new(c, "iat", json_integer(cases[i].iat)), 0);
        t = sign("HS256", SECRET, strlen(SECRET), "hs1", c);
        p.max_lifetime_secs = cases[i].max;
        rc = azc_jwt_verify(fx->keys, t, &p, NULL, &e);
        if (rc != (cases[i].ok ? AZC_OK : AZC_EINVAL))
            fail_msg("case %zu: rc %d (%s)", i, rc, e.msg);
        if (!cases[i].ok)
            assert_non_null(strstr(e.msg, "lifetime"));
        free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_tokens),
        cmocka_unit_test(test_alg_none_rejected),
        cmocka_unit_test(test_key_confusion_rejected),
        cmocka_unit_test(test_wrong_key_and_kid),
        cmocka_unit_test(test_claims_checked),
        cmocka_unit_test(test_malformed_tokens),
        cmocka_unit_test(test_key_loading_errors),
        cmocka_unit_test(test_single_key_without_kid),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_duplicate_claims_rejected),
        cmocka_unit_test(test_numeric_dates),
        cmocka_unit_test(test_max_lifetime),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
