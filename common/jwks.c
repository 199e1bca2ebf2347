/*
 * Key sets from a JWKS document (RFC 7517): each signing key's JWK turned
 * into the PEM text libjwt 1.10 takes, with the algorithm pinned by the
 * JWK or the configuration, never by a token. RSA keys under 2048 bits,
 * EC points off their curve and symmetric keys are refused.
 */
#include "common/jwt.h"
#include "common/jwt_internal.h"

#include <stdlib.h>
#include <string.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

/* A JWK member holding a big-endian unsigned integer in base64url. */
static int jwk_bytes(const json_t *jwk, const char *name, size_t idx, unsigned char **out,
                     size_t *len, azc_err *e)
{
    const char *v = json_string_value(json_object_get(jwk, name));
    size_t i, n;

    *out = NULL;
    if (v == NULL || (n = strlen(v)) == 0 || n > 2048)
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: \"%s\" missing or not a short string",
                           idx, name);
    for (i = 0; i < n; i++)
        if (!azc__jwt_b64url_char(v[i]))
            return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: \"%s\" is not base64url", idx,
                               name);
    *out = azc__jwt_b64url_decode(v, n, len);
    if (*out == NULL || *len == 0) {
        free(*out);
        *out = NULL;
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: \"%s\" is not base64url", idx, name);
    }
    return AZC_OK;
}

/* EVP_PKEY_fromdata from an OSSL_PARAM list, then PEM SubjectPublicKeyInfo
 * text: libjwt 1.10 takes keys only as PEM. */
static int pkey_to_pem(const char *type, OSSL_PARAM *params, size_t idx, unsigned char **pem,
                       size_t *pem_len, int *bits, azc_err *e)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pk = NULL;
    BIO *bio = NULL;
    char *data;
    long n;
    int rc = AZC_OK;

    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1 || pk == NULL) {
        rc = azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: not a valid %s public key", idx, type);
        goto out;
    }
    *bits = EVP_PKEY_get_bits(pk);
    if ((bio = BIO_new(BIO_s_mem())) == NULL || PEM_write_bio_PUBKEY(bio, pk) != 1 ||
        (n = BIO_get_mem_data(bio, &data)) <= 0) {
        rc = azc_err_set(e, AZC_ERROR, "jwks keys[%zu]: cannot write the key as PEM", idx);
        goto out;
    }
    if ((*pem = malloc((size_t)n + 1)) == NULL) {
        rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(*pem, data, (size_t)n);
    (*pem)[n] = '\0';
    *pem_len = (size_t)n;
out:
    BIO_free(bio);
    EVP_PKEY_free(pk);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

static int jwk_rsa(const json_t *jwk, size_t idx, unsigned char **pem, size_t *len, azc_err *e)
{
    unsigned char *nb = NULL, *eb = NULL;
    size_t nl, el;
    BIGNUM *n = NULL, *x = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    int rc, bits = 0;

    if ((rc = jwk_bytes(jwk, "n", idx, &nb, &nl, e)) != AZC_OK ||
        (rc = jwk_bytes(jwk, "e", idx, &eb, &el, e)) != AZC_OK)
        goto out;
    n = BN_bin2bn(nb, (int)nl, NULL);
    x = BN_bin2bn(eb, (int)el, NULL);
    if (n == NULL || x == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, x) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        rc = azc_err_set(e, AZC_ERROR, "jwks keys[%zu]: cannot build RSA parameters", idx);
        goto out;
    }
    if ((rc = pkey_to_pem("RSA", params, idx, pem, len, &bits, e)) != AZC_OK)
        goto out;
    if (bits < MIN_RSA_BITS) {
        free(*pem);
        *pem = NULL;
        rc = azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: RSA key of %d bits, under %d", idx,
                         bits, MIN_RSA_BITS);
    }
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(x);
    free(nb);
    free(eb);
    return rc;
}

static int jwk_ec(const json_t *jwk, size_t idx, jwt_alg_t *curve_alg, unsigned char **pem,
                  size_t *len, azc_err *e)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const char *group;
    unsigned char *xb = NULL, *yb = NULL, point[1 + 2 * 66];
    size_t xl, yl, size;
    OSSL_PARAM params[3];
    int rc, bits = 0;

    if (crv != NULL && strcmp(crv, "P-256") == 0) {
        group = "prime256v1", size = 32, *curve_alg = JWT_ALG_ES256;
    } else if (crv != NULL && strcmp(crv, "P-384") == 0) {
        group = "secp384r1", size = 48, *curve_alg = JWT_ALG_ES384;
    } else if (crv != NULL && strcmp(crv, "P-521") == 0) {
        group = "secp521r1", size = 66, *curve_alg = JWT_ALG_ES512;
    } else {
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: crv is not P-256, P-384 or P-521", idx);
    }
    if ((rc = jwk_bytes(jwk, "x", idx, &xb, &xl, e)) != AZC_OK ||
        (rc = jwk_bytes(jwk, "y", idx, &yb, &yl, e)) != AZC_OK)
        goto out;
    /* RFC 7518 6.2.1.2: x and y are exactly the field size, zero-padded. */
    if (xl != size || yl != size) {
        rc = azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: x and y must be %zu bytes for %s", idx,
                         size, crv);
        goto out;
    }
    point[0] = 0x04;   /* uncompressed point */
    memcpy(point + 1, xb, size);
    memcpy(point + 1 + size, yb, size);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size);
    params[2] = OSSL_PARAM_construct_end();
    /* OpenSSL decodes the point when importing it and refuses one that is
     * not on the curve (an invalid-curve attack needs such a point). */
    rc = pkey_to_pem("EC", params, idx, pem, len, &bits, e);
out:
    free(xb);
    free(yb);
    return rc;
}

static int jwks_key(azc_jwt_keys *ks, const json_t *jwk, size_t idx, const json_t *algs,
                    azc_err *e)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    const json_t *use = json_object_get(jwk, "use");
    const json_t *jalg = json_object_get(jwk, "alg");
    const char *alg = NULL, *cfg_alg;
    jwt_alg_t a, curve_alg = JWT_ALG_INVAL;
    unsigned char *pem = NULL;
    size_t len = 0, j;
    int rc;

    if (!json_is_object(jwk))
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: not an object", idx);
    if (use != NULL && !json_is_string(use))
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: \"use\" is not a string", idx);
    if (use != NULL && strcmp(json_string_value(use), "sig") != 0)
        return AZC_OK;   /* an encryption key: not ours to verify with */
    if (kty == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: no \"kty\"", idx);
    /* A JWKS is a public document: a symmetric secret in it is no secret,
     * and accepting HS keys from it would reopen the HS/RS confusion. */
    if (strcmp(kty, "oct") == 0)
        return azc_err_set(e, AZC_EINVAL,
                           "jwks keys[%zu]: symmetric (oct) keys are refused in a JWKS", idx);
    if (kid == NULL || kid[0] == '\0' || strlen(kid) > 128)
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: \"kid\" missing or not a short string",
                           idx);
    if (jalg != NULL && !json_is_string(jalg))
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: \"alg\" is not a string", idx);
    alg = json_string_value(jalg);
    cfg_alg = json_string_value(json_object_get(algs, kid));
    if (algs != NULL && json_object_get(algs, kid) != NULL && cfg_alg == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwks_algs[\"%s\"] is not a string", kid);
    if (alg != NULL && cfg_alg != NULL && strcmp(alg, cfg_alg) != 0)
        return azc_err_set(e, AZC_EINVAL,
                           "jwks key \"%s\": alg %s in the JWKS but %s in the configuration", kid,
                           alg, cfg_alg);
    if (alg == NULL)
        alg = cfg_alg;
    if (alg == NULL)
        return azc_err_set(e, AZC_EINVAL,
                           "jwks key \"%s\": no \"alg\" in the JWK nor in jwks_algs", kid);
    a = jwt_str_alg(alg);
    for (j = 0; j < ks->n; j++)
        if (strcmp(ks->keys[j].kid, kid) == 0)
            return azc_err_set(e, AZC_EINVAL, "jwks: duplicate kid \"%s\"", kid);
    if (ks->n >= MAX_KEYS)
        return azc_err_set(e, AZC_EINVAL, "jwks: more than %d signing keys", MAX_KEYS);
    if (strcmp(kty, "RSA") == 0) {
        if (!azc__jwt_is_rsa(a))
            return azc_err_set(e, AZC_EINVAL,
                               "jwks key \"%s\": alg %s does not suit an RSA key (RS256/384/512)",
                               kid, alg);
        rc = jwk_rsa(jwk, idx, &pem, &len, e);
    } else if (strcmp(kty, "EC") == 0) {
        if ((rc = jwk_ec(jwk, idx, &curve_alg, &pem, &len, e)) == AZC_OK && a != curve_alg) {
            free(pem);
            return azc_err_set(e, AZC_EINVAL, "jwks key \"%s\": alg %s does not suit its curve",
                               kid, alg);
        }
    } else {
        return azc_err_set(e, AZC_EINVAL, "jwks keys[%zu]: kty \"%s\" is not RSA or EC", idx, kty);
    }
    if (rc != AZC_OK)
        return rc;
    ks->keys[ks->n].kid = strdup(kid);
    if (ks->keys[ks->n].kid == NULL) {
        free(pem);
        return azc_err_set(e, AZC_ENOMEM, "out of memory");
    }
    ks->keys[ks->n].alg = a;
    ks->keys[ks->n].material = pem;
    ks->keys[ks->n].len = len;
    ks->n++;
    return AZC_OK;
}

int azc_jwt_keys_load_jwks(const char *path, const json_t *algs, azc_jwt_keys **out,
                           azc_err *e)
{
    unsigned char *text = NULL;
    size_t len = 0, i;
    json_error_t jerr;
    json_t *doc, *keys, *jwk;
    azc_jwt_keys *ks;
    int rc;

    *out = NULL;
    if (path == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwks: no file");
    if (algs != NULL && !json_is_object(algs))
        return azc_err_set(e, AZC_EINVAL, "jwks_algs: expected an object {\"kid\": \"alg\"}");
    if ((rc = azc__jwt_read_key_file(path, &text, &len, e)) != AZC_OK)
        return rc;
    doc = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (doc == NULL)
        return azc_err_set(e, AZC_EINVAL, "jwks %s: %s (line %d)", path, jerr.text, jerr.line);
    keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        json_decref(doc);
        return azc_err_set(e, AZC_EINVAL, "jwks %s: expected {\"keys\": [...]}", path);
    }
    if ((rc = azc__jwt_keys_alloc(&ks, e)) != AZC_OK) {
        json_decref(doc);
        return rc;
    }
    json_array_foreach(keys, i, jwk) {
        if ((rc = jwks_key(ks, jwk, i, algs, e)) != AZC_OK)
            goto fail;
    }
    if (ks->n == 0) {
        rc = azc_err_set(e, AZC_EINVAL, "jwks %s: no signing key", path);
        goto fail;
    }
    json_decref(doc);
    *out = ks;
    return AZC_OK;
fail:
    json_decref(doc);
    azc_jwt_keys_free(ks);
    return rc;
}
