/*
 * Random (version 4) UUIDs for server-generated ids, from the OpenSSL
 * CSPRNG, and a strict validator for ids that arrive from outside.
 */
#ifndef AZC_UUID_H
#define AZC_UUID_H

#include "common/err.h"

#define AZC_UUID_LEN 37   /* 36 characters and the NUL */

/* Writes a new lower-case canonical UUID into buf. AZC_ERROR if the
 * random generator fails. */
int azc_uuid_new(char buf[AZC_UUID_LEN]) AZC_WARN_UNUSED;

/* 1 if s is a canonical lower-case UUID (8-4-4-4-12 hex digits). */
int azc_uuid_valid(const char *s);

#endif
