/*
 * Syntax of the policy vocabulary (DESIGN section 3), shared by the REST
 * handlers that accept it. Pure functions: no I/O, unit-tested.
 *
 *   permission  "<type>:<verb>" | "<type>:*" | "*"
 *   resource    "<type>/<id>" | "<type>/" followed by "*" | "*"
 *   type, verb  [a-z][a-z0-9_-]{0,63}
 *   id          1-256 of [A-Za-z0-9._~:@+=-]
 */
#ifndef ID_VALIDATE_H
#define ID_VALIDATE_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

#define ID_MAX_PERMISSIONS 256

int id_permission_valid(const char *s);
int id_resource_valid(const char *s);

/* A display text: valid UTF-8 (jansson guarantees it), 1..max bytes
 * (0..max when allow_empty), no control characters. */
int id_text_valid(const char *s, size_t max, int allow_empty);

/* subject: 1-256 printable ASCII characters, no spaces. */
int id_subject_valid(const char *s);

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
