/*
 * authz-dev-token: prints a signed JWT for the demo, the tests and people
 * trying the services out. Development only: it signs whatever it is told
 * with the development key that tools/setup generates.
 *
 *   authz-dev-token --sub alice [--admin] [--scope S] [--ttl 3600] [--key FILE]
 *                   [--kid dev-1] [--alg ES256] [--iss authz-dev]
 *                   [--aud authz-admin] [--claim name=json]...
 *
 * A negative --ttl gives a token that has already expired.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "common/jwt.h"

#define MAX_KEY (64 * 1024)

static void usage(FILE *f)
{
    fputs("usage: authz-dev-token --sub SUBJECT [--admin] [--scope SCOPES] [--ttl SECONDS]\n"
          "                       [--key FILE] [--kid KID] [--alg ALG] [--iss ISSUER]\n"
          "                       [--aud AUDIENCE] [--claim NAME=JSON]...\n"
          "\n"
          "Prints a JWT signed with the development key. Defaults: --ttl 3600,\n"
          "--key $AUTHZ_DEV_KEY (else .dev/keys/dev-es256.key under the repo),\n"
          "--kid dev-1, --alg ES256, --iss authz-dev, --aud authz-admin.\n"
          "--admin adds the claim \"authz_admin\": true. --scope adds the claim\n"
          "\"scope\" (space-separated names, e.g. \"authz:replicate\"; peers of an\n"
          "authz-server with auth.keys_file need it). A negative --ttl gives an\n"
          "already expired token.\n",
          f);
}

static unsigned char *read_key(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    struct stat st;

    if (f == NULL) {
        fprintf(stderr, "authz-dev-token: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > MAX_KEY) {
        fprintf(stderr, "authz-dev-token: %s: not a key file\n", path);
        fclose(f);
        return NULL;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fprintf(stderr, "authz-dev-token: %s: cannot read\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[st.st_size] = '\0';
    *len = (size_t)st.st_size;
    return buf;
}

static int parse_ttl(const char *s, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(s, &end, 10);
    return *s != '\0' && *end == '\0' && errno == 0 && *out > -315360000L && *out < 315360000L;
}

int main(int argc, char **argv)
{
    const char *sub = NULL, *key_path = getenv("AUTHZ_DEV_KEY"), *kid = "dev-1", *alg = "ES256";
    const char *iss = "authz-dev", *aud = "authz-admin", *scope = NULL;
    json_t *claims = json_object();
    unsigned char *key;
    size_t key_len = 0;
    long ttl = 3600, now = (long)time(NULL);
    char *token = NULL;
    azc_err e;
    int i, admin = 0, rc;

    if (claims == NULL)
        return 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            json_decref(claims);
            return 0;
        }
        if (strcmp(a, "--admin") == 0) {
            admin = 1;
            continue;
        }
        if (v == NULL)
            goto bad;
        i++;
        if (strcmp(a, "--sub") == 0)
            sub = v;
        else if (strcmp(a, "--key") == 0)
            key_path = v;
        else if (strcmp(a, "--kid") == 0)
            kid = v[0] != '\0' ? v : NULL;
        else if (strcmp(a, "--alg") == 0)
            alg = v;
        else if (strcmp(a, "--iss") == 0)
            iss = v;
        else if (strcmp(a, "--aud") == 0)
            aud = v;
        else if (strcmp(a, "--scope") == 0) {
            if (v[0] == '\0') {
                fprintf(stderr, "authz-dev-token: --scope needs at least one scope name\n");
                goto bad;
            }
            scope = v;
        }
        else if (strcmp(a, "--ttl") == 0) {
            if (!parse_ttl(v, &ttl)) {
                fprintf(stderr, "authz-dev-token: --ttl needs an integer number of seconds\n");
                goto bad;
            }
        } else if (strcmp(a, "--claim") == 0) {
            const char *eq = strchr(v, '=');
            char name[128];
            json_t *val;

            if (eq == NULL || eq == v || (size_t)(eq - v) >= sizeof name)
                goto bad;
            memcpy(name, v, (size_t)(eq - v));
            name[eq - v] = '\0';
            val = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
            if (val == NULL) {
                fprintf(stderr, "authz-dev-token: --claim %s: value is not JSON\n", name);
                goto bad;
            }
            json_object_set_new(claims, name, val);
        } else {
            fprintf(stderr, "authz-dev-token: unknown option %s\n", a);
            goto bad;
        }
    }
    if (sub == NULL || sub[0] == '\0') {
        fprintf(stderr, "authz-dev-token: --sub is required\n");
        goto bad;
    }
    if (key_path == NULL) {
        fprintf(stderr, "authz-dev-token: no key: give --key or set AUTHZ_DEV_KEY\n");
        goto bad;
    }
    if (json_object_set_new(claims, "sub", json_string(sub)) != 0 ||
        json_object_set_new(claims, "iss", json_string(iss)) != 0 ||
        json_object_set_new(claims, "aud", json_string(aud)) != 0 ||
        json_object_set_new(claims, "iat", json_integer(now)) != 0 ||
        json_object_set_new(claims, "exp", json_integer(now + ttl)) != 0 ||
        (admin && json_object_set_new(claims, "authz_admin", json_true()) != 0) ||
        (scope != NULL && json_object_set_new(claims, "scope", json_string(scope)) != 0)) {
        fprintf(stderr, "authz-dev-token: cannot build the claims\n");
        json_decref(claims);
        return 1;
    }
    key = read_key(key_path, &key_len);
    if (key == NULL) {
        json_decref(claims);
        return 1;
    }
    rc = azc_jwt_sign(alg, key, key_len, kid, claims, &token, &e);
    free(key);
    json_decref(claims);
    if (rc != AZC_OK) {
        fprintf(stderr, "authz-dev-token: %s\n", e.msg);
        return 1;
    }
    printf("%s\n", token);
    free(token);
    return 0;
bad:
    usage(stderr);
    json_decref(claims);
    return 2;
}
