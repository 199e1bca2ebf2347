/*
 * Structured logging: one JSON object per line on a stream (stderr in the
 * services), so log shippers never have to parse free text.
 *
 *   {"ts":"2026-11-22T10:00:00.123Z","level":"info","component":"identity",
 *    "msg":"listening","request_id":"9f...","port":8080}
 *
 * A line is rendered in memory and written with one fwrite, so lines from
 * several threads never interleave. Levels below the logger's minimum cost
 * one comparison.
 */
#ifndef AZC_LOG_H
#define AZC_LOG_H

#include <stdio.h>
#include <jansson.h>

#include "common/err.h"

typedef enum azc_log_level {
    AZC_LOG_DEBUG = 0,
    AZC_LOG_INFO,
    AZC_LOG_WARN,
    AZC_LOG_ERROR
} azc_log_level;

typedef struct azc_log azc_log;

/* New logger for `component` writing to `out` (borrowed; stderr if NULL).
 * Returns NULL only when out of memory. Free with azc_log_free. */
azc_log *azc_log_new(const char *component, azc_log_level min, FILE *out);
void azc_log_free(azc_log *lg);

void azc_log_set_level(azc_log *lg, azc_log_level min);
int azc_log_enabled(const azc_log *lg, azc_log_level lvl);

/* "debug" | "info" | "warn" | "error" -> level. AZC_EINVAL otherwise. */
int azc_log_level_parse(const char *s, azc_log_level *out, azc_err *e) AZC_WARN_UNUSED;
const char *azc_log_level_name(azc_log_level lvl);

/* Writes one line. `request_id` may be NULL. `fields` (may be NULL) is an
 * object whose members are added to the line; it is borrowed, not stolen.
 * Reserved keys (ts, level, component, msg, request_id) in it are ignored.
 * A NULL logger drops the line. */
void azc_log_write(azc_log *lg, azc_log_level lvl, const char *request_id,
                   json_t *fields, const char *msg);

/* printf-style message, no extra fields. */
void azc_logf(azc_log *lg, azc_log_level lvl, const char *fmt, ...) AZC_PRINTF(3, 4);

/* printf-style message tagged with a request id (may be NULL). */
void azc_log_reqf(azc_log *lg, azc_log_level lvl, const char *request_id,
                  const char *fmt, ...) AZC_PRINTF(4, 5);

/* Fills buf with a new random request id: 32 lowercase hex characters and
 * a NUL, from the OpenSSL CSPRNG. */
#define AZC_REQUEST_ID_LEN 33
int azc_request_id_new(char buf[AZC_REQUEST_ID_LEN]) AZC_WARN_UNUSED;

#endif
