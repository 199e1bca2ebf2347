/*
 * Migrations runner; see migrate.h for the rules and why each exists.
 */
#include "common/migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/digest.h"
#include "common/pg.h"

/* Any constant works; it only has to be the same in every runner. */
static const char SQL_LOCK[] =
    "SELECT pg_advisory_xact_lock(hashtext('authz_schema_migrations'))";
static const char SQL_CREATE[] =
    "CREATE TABLE IF NOT EXISTS public.authz_schema_migrations ("
    " schema text NOT NULL,"
    " version integer NOT NULL,"
    " name text NOT NULL,"
    " sha256 text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (schema, version))";
static const char SQL_APPLIED[] =
    "SELECT version, name, sha256 FROM public.authz_schema_migrations"
    " WHERE schema = $1 ORDER BY version";
static const char SQL_ONE[] =
    "SELECT sha256 FROM public.authz_schema_migrations WHERE schema = $1 AND version = $2";
static const char SQL_RECORD[] =
    "INSERT INTO public.authz_schema_migrations (schema, version, name, sha256)"
    " VALUES ($1, $2, $3, $4)";

/* "NNN_name.sql" -> version; 0 if the name does not follow the rule. */
static int parse_name(const char *name)
{
    size_t i = 0, n = strlen(name);
    long v = 0;

    if (n < 4 + 2 || strcmp(name + n - 4, ".sql") != 0)
        return 0;
    while (i < n && isdigit((unsigned char)name[i])) {
        v = v * 10 + (name[i] - '0');
        if (v > 1000000)
            return 0;
        i++;
    }
    if (i < 3 || name[i] != '_' || i + 1 >= n - 4)
        return 0;
    for (i++; i < n - 4; i++) {
        char c = name[i];
        if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '_'))
            return 0;
    }
    return (int)v;
}

static int read_file(const char *path, char **out, azc_err *e)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, got;

    *out = NULL;
    if (f == NULL)
        return azc_err_set(e, AZC_ERROR, "migration %s: %s", path, strerror(errno));
    do {
        if (len + 4096 + 1 > cap) {
            char *nb;
            cap = cap ? cap * 2 : 8192;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return azc_err_set(e, AZC_ENOMEM, "out of memory");
            }
            buf = nb;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (len > AZC_MIGRATION_MAX_BYTES) {
            free(buf);
            fclose(f);
            return azc_err_set(e, AZC_ETOOBIG, "migration %s: larger than %d bytes", path,
                               AZC_MIGRATION_MAX_BYTES);
        }
    } while (got > 0);
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return azc_err_set(e, AZC_ERROR, "migration %s: read error", path);
    }
    fclose(f);
    buf[len] = '\0';
    if (strlen(buf) != len) {
        free(buf);
        return azc_err_set(e, AZC_EINVAL, "migration %s: contains a NUL byte", path);
    }
    *out = buf;
    return AZC_OK;
}

static int by_version(const void *a, const void *b)
{
    const azc_migration *x = a, *y = b;

    return (x->version > y->version) - (x->version < y->version);
}

void azc_migrations_free(azc_migration *list, size_t n)
{
    size_t i;

    if (list == NULL)
        return;
    for (i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].sql);
    }
    free(list);
}

int azc_migrations_scan(const char *dir, azc_migration **out, size_t *n, azc_err *e)
{
    azc_migration *list = NULL;
    size_t count = 0, cap = 0, i;
    struct dirent *de;
    DIR *d;
    int rc = AZC_OK;

    *out = NULL;
    *n = 0;
    d = opendir(dir);
    if (d == NULL)
        return azc_err_set(e, AZC_EINVAL, "migrations directory %s: %s", dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        char path[4096];
        azc_migration *m;
        int version;

        if (de->d_name[0] == '.')
            continue;
        version = parse_name(de->d_name);
        if (version <= 0) {
            rc = azc_err_set(e, AZC_EINVAL,
                             "migrations directory %s: \"%s\" is not named NNN_name.sql "
                             "(digits, underscore, lower-case name, version >= 1)",
                             dir, de->d_name);
            goto fail;
        }
        if (count == cap) {
            azc_migration *nl;
            cap = cap ? cap * 2 : 16;
            nl = realloc(list, cap * sizeof *nl);
            if (nl == NULL) {
                rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
                goto fail;
            }
            list = nl;
        }
        m = &list[count];
        memset(m, 0, sizeof *m);
        count++;
        m->version = version;
        m->name = strdup(de->d_name);
        if (m->name == NULL) {
            rc = azc_err_set(e, AZC_ENOMEM, "out of memory");
            goto fail;
        }
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= sizeof path) {
            rc = azc_err_set(e, AZC_EINVAL, "migration path too long");
            goto fail;
        }
        if ((rc = read_file(path, &m->sql, e)) != AZC_OK)
            goto fail;
        if (azc_sha256_hex(m->sql, strlen(m->sql), m->sha256) != AZC_OK) {
            rc = azc_err_set(e, AZC_ERROR, "migration %s: cannot hash", path);
            goto fail;
        }
    }
    closedir(d);
    d = NULL;
    if (count > 0)
        qsort(list, count, sizeof *list, by_version);
    for (i = 1; i < count; i++) {
        if (list[i].version == list[i - 1].version) {
            rc = azc_err_set(e, AZC_EINVAL, "migrations directory %s: %s and %s share version %d",
                             dir, list[i - 1].name, list[i].name, list[i].version);
            goto fail;
        }
    }
    *out = list;
    *n = count;
    return AZC_OK;
fail:
    if (d != NULL)
        closedir(d);
    azc_migrations_free(list, count);
    return rc;
}

/* Checks applied rows against the files; sets *max_applied. */
static int check_applied(PGresult *r, const azc_migration *list, size_t n, const char *schema,
                         azc_log *lg, int *max_applied, azc_err *e)
{
    int rows = PQntuples(r), i;
    size_t j;

    *max_applied = 0;
    for (i = 0; i < rows; i++) {
        int version = atoi(PQgetvalue(r, i, 0));   /* server-formatted integer */
        const char *sha = PQgetvalue(r, i, 2);
        int found = 0;

        if (version > *max_applied)
            *max_applied = version;
        for (j = 0; j < n; j++) {
            if (list[j].version != version)
                continue;
            found = 1;
            if (strcmp(list[j].sha256, sha) != 0)
                return azc_err_set(e, AZC_ECONFLICT,
                                   "migration %s/%s was changed after it was applied "
                                   "(add a new migration instead of editing an applied one)",
                                   schema, list[j].name);
        }
        if (!found)
            azc_logf(lg, AZC_LOG_WARN,
                     "migration %s version %d (%s) is applied but unknown to this build",
                     schema, version, PQgetvalue(r, i, 1));
    }
    return AZC_OK;
}

/* Applies one file in its own transaction unless a concurrent runner did. */
static int apply_one(PGconn *c, const azc_migration *m, const char *schema, azc_log *lg,
                     int *ran, azc_err *e)
{
    char version[16];
    const char *p1[2], *p2[4];
    PGresult *r = NULL;
    int rc;

    *ran = 0;
    snprintf(version, sizeof version, "%d", m->version);
    if ((rc = azc_pg_begin(c, e)) != AZC_OK)
        return rc;
    if ((rc = azc_pg_query(c, SQL_LOCK, 0, NULL, NULL, e)) != AZC_OK)
        goto fail;
    p1[0] = schema;
    p1[1] = version;
    if ((rc = azc_pg_query(c, SQL_ONE, 2, p1, &r, e)) != AZC_OK)
        goto fail;
    if (PQntuples(r) > 0) {
        rc = strcmp(PQgetvalue(r, 0, 0), m->sha256) == 0
                 ? AZC_OK
                 : azc_err_set(e, AZC_ECONFLICT, "migration %s/%s was changed after it was applied",
                               schema, m->name);
        PQclear(r);
        azc_pg_rollback(c);
        return rc;
    }
    PQclear(r);
    if ((rc = azc_pg_exec_script(c, m->sql, e)) != AZC_OK) {
        if (e != NULL) {
            char why[AZC_ERRMSG_MAX];
            memcpy(why, e->msg, sizeof why);
            azc_err_set(e, rc, "migration %s/%s failed: %s", schema, m->name, why);
        }
        goto fail;
    }
    p2[0] = schema;
    p2[1] = version;
    p2[2] = m->name;
    p2[3] = m->sha256;
    if ((rc = azc_pg_query(c, SQL_RECORD, 4, p2, NULL, e)) != AZC_OK)
        goto fail;
    if ((rc = azc_pg_commit(c, e)) != AZC_OK)
        return rc;
    *ran = 1;
    azc_logf(lg, AZC_LOG_INFO, "migration %s/%s applied", schema, m->name);
    return AZC_OK;
fail:
    azc_pg_rollback(c);
    return rc;
}

int azc_migrate(PGconn *c, const char *dir, const char *schema, azc_log *lg, int *applied,
                azc_err *e)
{
    azc_migration *list = NULL;
    size_t n = 0, i;
    PGresult *r = NULL;
    int rc, max_applied = 0, count = 0;
    const char *p[1];

    if (applied != NULL)
        *applied = 0;
    if (schema == NULL || schema[0] == '\0')
        return azc_err_set(e, AZC_EINVAL, "migrations: empty schema name");
    if ((rc = azc_migrations_scan(dir, &list, &n, e)) != AZC_OK)
        return rc;
    /* Create the bookkeeping table and read it under the lock. */
    if ((rc = azc_pg_begin(c, e)) != AZC_OK)
        goto out;
    p[0] = schema;
    if ((rc = azc_pg_query(c, SQL_LOCK, 0, NULL, NULL, e)) != AZC_OK ||
        (rc = azc_pg_query(c, SQL_CREATE, 0, NULL, NULL, e)) != AZC_OK ||
        (rc = azc_pg_query(c, SQL_APPLIED, 1, p, &r, e)) != AZC_OK) {
        azc_pg_rollback(c);
        goto out;
    }
    if ((rc = azc_pg_commit(c, e)) != AZC_OK)
        goto out;
    if ((rc = check_applied(r, list, n, schema, lg, &max_applied, e)) != AZC_OK)
        goto out;
    for (i = 0; i < n; i++) {
        int j, done = 0;
        for (j = 0; j < PQntuples(r); j++)
            done |= atoi(PQgetvalue(r, j, 0)) == list[i].version;
        if (!done && list[i].version < max_applied) {
            rc = azc_err_set(e, AZC_ECONFLICT,
                             "migration %s/%s is numbered below the applied version %d "
                             "(renumber it after the applied ones)",
                             schema, list[i].name, max_applied);
            goto out;
        }
    }
    for (i = 0; i < n; i++) {
        int ran;
        if ((rc = apply_one(c, &list[i], schema, lg, &ran, e)) != AZC_OK)
            goto out;
        count += ran;
    }
    if (applied != NULL)
        *applied = count;
out:
    PQclear(r);
    azc_migrations_free(list, n);
    return rc;
}

int azc_migrate_url(const char *conninfo, const char *application_name, int timeout_ms,
                    const char *dir, const char *schema, azc_log *lg, azc_err *e)
{
    PGconn *c = NULL;
    int applied = 0, rc;

    if ((rc = azc_pg_connect(conninfo, application_name, timeout_ms, lg, &c, e)) != AZC_OK)
        return rc;
    rc = azc_migrate(c, dir, schema, lg, &applied, e);
    PQfinish(c);
    if (rc == AZC_OK)
        azc_logf(lg, AZC_LOG_INFO, "migrations of %s: %d applied", schema, applied);
    return rc;
}
