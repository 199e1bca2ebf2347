/*
 * Schema migrations: the files sql/<schema>/NNN_name.sql are applied in
 * ascending NNN order, each in its own transaction together with its row in
 * public.authz_schema_migrations (schema, version, name, sha256), so a
 * crash mid-file leaves nothing half-applied and a rerun resumes.
 *
 * Rules, checked before anything is applied:
 *   - file names are exactly three or more digits, '_', [a-z0-9_]+, ".sql";
 *     versions are unique and start at 1;
 *   - an applied file whose text changed is refused (AZC_ECONFLICT): fix
 *     forward with a new file, never edit an applied one;
 *   - a new file numbered below an applied one is refused (AZC_ECONFLICT);
 *   - applied versions with no file (a newer build ran here) are logged and
 *     left alone, so an older binary can still start during a rollout.
 * Concurrent runners (several services starting at once) serialise on a
 * transaction-scoped advisory lock. Files must not contain BEGIN/COMMIT.
 */
#ifndef AZC_MIGRATE_H
#define AZC_MIGRATE_H

#include <stddef.h>

#include <libpq-fe.h>

#include "common/err.h"
#include "common/log.h"

#define AZC_MIGRATION_MAX_BYTES (4 * 1024 * 1024)

typedef struct azc_migration {
    int version;
    char *name;          /* "001_init.sql" */
    char *sql;           /* file contents, NUL-terminated */
    char sha256[65];     /* hex digest of the contents */
} azc_migration;

/* Reads and validates every migration file in `dir`, sorted by version.
 * On success *out (n entries) is owned by the caller: azc_migrations_free.
 * An empty directory is a valid, empty list. */
int azc_migrations_scan(const char *dir, azc_migration **out, size_t *n,
                        azc_err *e) AZC_WARN_UNUSED;
void azc_migrations_free(azc_migration *list, size_t n);

/* Applies the pending migrations of `dir` to `schema` (the name recorded in
 * the migrations table). *applied (may be NULL) gets how many ran now. */
int azc_migrate(PGconn *c, const char *dir, const char *schema, azc_log *lg, int *applied,
                azc_err *e) AZC_WARN_UNUSED;

/* Connects to `conninfo` (waiting up to timeout_ms for the server, as
 * azc_pg_connect does), applies `dir` as azc_migrate does, logs how many
 * files ran, and disconnects: what every service does at start-up. */
int azc_migrate_url(const char *conninfo, const char *application_name, int timeout_ms,
                    const char *dir, const char *schema, azc_log *lg, azc_err *e) AZC_WARN_UNUSED;

#endif
