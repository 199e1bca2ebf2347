/*
 * Revision tokens (DESIGN section 4): opaque to clients, they name the
 * origin region and the HLC of a change, so any region can tell whether it
 * has applied that change yet (applied[origin] >= hlc).
 *
 * Text form: "v1.<origin>.<hlc as 16 lower-case hex digits>", e.g.
 * "v1.us.0001936a4c2f0003". Clients must not parse it; the version prefix
 * lets the form change later without breaking tokens in flight.
 */
#ifndef AZC_REVISION_H
#define AZC_REVISION_H

#include <stddef.h>

#include "common/err.h"
#include "common/hlc.h"

/* Region names: 1-32 chars of [a-z0-9-], starting with a letter. */
#define AZC_REGION_MAX 32
#define AZC_REVISION_MAX 64   /* buffer size that fits any token and its NUL */

typedef struct azc_revision {
    char origin[AZC_REGION_MAX + 1];
    azc_hlc_t hlc;
} azc_revision;

/* 1 if s is a valid region name. */
int azc_region_valid(const char *s);

/* Writes the token into buf (size len, AZC_REVISION_MAX is enough).
 * AZC_EINVAL if the origin is not a valid region name or hlc is 0. */
int azc_revision_encode(const azc_revision *rev, char *buf, size_t len, azc_err *e) AZC_WARN_UNUSED;

/* Parses a token (NUL-terminated). AZC_EINVAL for anything malformed:
 * wrong version, bad origin, hex of the wrong length or case, zero HLC,
 * trailing bytes. *rev is untouched on error. */
int azc_revision_decode(const char *token, azc_revision *rev, azc_err *e) AZC_WARN_UNUSED;

#endif
