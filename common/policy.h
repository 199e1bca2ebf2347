/*
 * The policy vocabulary (DESIGN section 3), shared by the identity service
 * (which accepts it from admins), the authz server (which applies and
 * checks it) and the gateway filter. Pure functions, no I/O.
 *
 *   permission  "<type>:<verb>" | "<type>:*" | "*"
 *   resource    "<type>/<id>" | "<type>/" "*" | "*"       (in assignments)
 *   action      "<type>:<verb>"                            (in checks)
 *   resource    "<type>/<id>"                              (in checks)
 *   type, verb  [a-z][a-z0-9_-]{0,63}
 *   id          1-256 of [A-Za-z0-9._~:@+=-]
 *   subject     1-256 printable ASCII characters, no spaces
 */
#ifndef AZC_POLICY_H
#define AZC_POLICY_H

#include <stddef.h>

#include "common/err.h"

#define AZC_POLICY_NAME_MAX 64
#define AZC_POLICY_ID_MAX 256
#define AZC_SUBJECT_MAX 256

/* 1 if s (may be NULL: 0) is a permission, possibly a wildcard. */
int azc_permission_valid(const char *s);
/* 1 if s is a resource pattern of an assignment, possibly a wildcard. */
int azc_resource_valid(const char *s);
/* 1 if s is a subject. */
int azc_subject_valid(const char *s);

/* 1 if s is a concrete action "<type>:<verb>" (no wildcard). */
int azc_action_valid(const char *s);
/* 1 if s is a concrete resource "<type>/<id>" (no wildcard). */
int azc_check_resource_valid(const char *s);

/* 1 iff `permission` grants `action`: equal, "<type>:*" of the action's
 * type, or "*". Invalid input never grants. */
int azc_permission_grants(const char *permission, const char *action);
/* 1 iff `pattern` covers `resource`: equal, "<type>/" "*" of the
 * resource's type, or "*". Invalid input never covers. */
int azc_resource_covers(const char *pattern, const char *resource);
/* 1 iff `pattern` (a region or "*") covers `region`. */
int azc_region_covers(const char *pattern, const char *region);

/* Writes "<type>:*" of a valid action into buf (len bytes): AZC_EINVAL for
 * an invalid action, AZC_ETOOBIG when buf is too small. */
int azc_action_wildcards(const char *action, char *buf, size_t len) AZC_WARN_UNUSED;
/* Writes "<type>/" "*" of a valid concrete resource into buf. Same codes. */
int azc_resource_wildcard(const char *resource, char *buf, size_t len) AZC_WARN_UNUSED;

#endif
