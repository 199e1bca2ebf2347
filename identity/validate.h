/*
 * Checks of admin input beyond the policy vocabulary (common/policy.h):
 * display texts, e-mail addresses, permission lists. Pure functions: no
 * I/O, unit-tested.
 */
#ifndef ID_VALIDATE_H
#define ID_VALIDATE_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/policy.h"   /* permission, resource and subject syntax */

#define ID_MAX_PERMISSIONS 256


/* A display text: valid UTF-8 (jansson guarantees it), 1..max bytes
 * (0..max when allow_empty), not only white space unless allow_empty, no
 * control character (C0, DEL, C1) and no invisible format character
 * (Unicode Cf: U+200B-U+200F, U+202A-U+202E, U+2060-U+2064, U+FEFF ...). */
int id_text_valid(const char *s, size_t max, int allow_empty);


/* email: 3-254 characters, one '@' with text on both sides, no spaces. */
int id_email_valid(const char *s);

/*
 * Checks a JSON array of permissions: strings, valid, no duplicates, at
 * most ID_MAX_PERMISSIONS. On failure fills `field` ("permissions[3]")
 * and e.
 */
int id_permissions_check(const json_t *a, char *field, size_t field_len,
                         azc_err *e) AZC_WARN_UNUSED;

#endif
