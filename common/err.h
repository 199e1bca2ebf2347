/*
 * Status codes and the error record every fallible function fills.
 *
 * A function that can fail returns one of the AZC_* codes (0 on success,
 * negative on failure) and, when given a non-NULL azc_err, writes a short
 * lower-case message there for its caller. The message is meant for logs and
 * for the "message" field of an HTTP error body; it never holds secrets.
 */
#ifndef AZC_ERR_H
#define AZC_ERR_H

#include <stddef.h>

#define AZC_WARN_UNUSED __attribute__((warn_unused_result))
#define AZC_PRINTF(f, a) __attribute__((format(printf, f, a)))

enum azc_status {
    AZC_OK = 0,
    AZC_ERROR = -1,     /* internal failure (library call, I/O) */
    AZC_EINVAL = -2,    /* caller's input is malformed */
    AZC_ENOMEM = -3,
    AZC_ETOOBIG = -4,   /* input over a configured size limit */
    AZC_ENOTFOUND = -5,
    AZC_ECONFLICT = -6, /* state does not allow it (e.g. changed migration) */
    AZC_EUNAVAIL = -7   /* a server could not be reached in time */
};

#define AZC_ERRMSG_MAX 256

typedef struct azc_err {
    int code;
    char msg[AZC_ERRMSG_MAX];
} azc_err;

/* Fills e (if not NULL) and returns code, so callers can write
 * `return azc_err_set(e, AZC_EINVAL, "...", ...);`. The message is always
 * valid UTF-8: a long one is cut on a character boundary and bytes that are
 * not UTF-8 become '?' (common/text.h). */
int azc_err_set(azc_err *e, int code, const char *fmt, ...) AZC_PRINTF(3, 4);

/* Clears e (if not NULL) to AZC_OK and an empty message. */
void azc_err_clear(azc_err *e);

/* Short fixed name of a status code ("invalid", "too_big", ...). */
const char *azc_status_name(int code);

#endif
