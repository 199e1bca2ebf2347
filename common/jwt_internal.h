/*
 * What common/jwt.c (verification, PEM key sets) and common/jwks.c (JWKS
 * key sets) share: the key set's layout and the helpers both use.
 * Internal to those two files.
 */
#ifndef AZC_JWT_INTERNAL_H
#define AZC_JWT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jwt.h>

#include "common/err.h"
#include "common/jwt.h"

#define MAX_KEYS 32
#define MIN_RSA_BITS 2048

struct jwt_key {
    char *kid;
    jwt_alg_t alg;
    unsigned char *material;   /* secret bytes or PEM text (NUL-terminated) */
    size_t len;
};

struct azc_jwt_keys {
    struct jwt_key keys[MAX_KEYS];
    size_t n;
    uint64_t id;               /* random: tells key sets apart in caches */
};

/* An empty key set with a fresh random id (*out is the caller's). */
int azc__jwt_keys_alloc(azc_jwt_keys **out, azc_err *e);
int azc__jwt_is_rsa(jwt_alg_t a);
/* A regular file of 1 to 64 KB, NUL-terminated; *out is the caller's. */
int azc__jwt_read_key_file(const char *path, unsigned char **out, size_t *len, azc_err *e);
/* Newly allocated, NUL-terminated; NULL when not base64url. */
unsigned char *azc__jwt_b64url_decode(const char *in, size_t n, size_t *out_len);
int azc__jwt_b64url_char(char c);

#endif
