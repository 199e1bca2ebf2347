/*
 * Text that ends up in JSON: cutting on UTF-8 character boundaries and
 * making bytes from clients encodable.
 *
 * jansson refuses a string that is not valid UTF-8, so a message cut in the
 * middle of a character (a %.64s of "é"s) cannot be sent as a reply body,
 * logged as a line or stored in a text column, and turns a 400 into a 500.
 * Everything that truncates text into a fixed buffer goes through here:
 * azc_err_set and azc_text_fmt cut on a boundary and replace bytes that are
 * not UTF-8 (headers, paths and query strings are not checked by anyone
 * before they reach a message) with '?', so their result is always valid.
 *
 * "Valid" is jansson's definition (RFC 3629): no overlong forms, no
 * surrogates, nothing above U+10FFFF.
 */
#ifndef AZC_TEXT_H
#define AZC_TEXT_H

#include <stdarg.h>
#include <stddef.h>

#include "common/err.h"

/* Length of the longest prefix of the first `len` bytes of `s` that is at
 * most `max` bytes and does not end inside a valid multi-byte sequence.
 * Bytes that are not part of a valid sequence count as one-byte units, so
 * invalid input can be cut anywhere around them. */
size_t azc_utf8_prefix(const char *s, size_t len, size_t max);

/* The same for a NUL-terminated string; NULL counts as "". For
 * `"%.*s", (int)azc_utf8_cut(s, 64), s` in a format. */
size_t azc_utf8_cut(const char *s, size_t max);

/* 1 when the `len` bytes at s are valid UTF-8 without NUL bytes, else 0. */
int azc_utf8_valid(const char *s, size_t len);

/* Replaces every byte of s[0..len) that is not part of a valid UTF-8
 * sequence (NUL included) with '?', in place, so the length never changes.
 * Returns the number of bytes replaced. */
size_t azc_utf8_scrub(char *s, size_t len);

/*
 * snprintf into buf[size] whose result is always valid UTF-8: when the
 * output does not fit it is cut on a character boundary (not in the middle
 * of one), and bytes that are not UTF-8 are replaced with '?'. size 0 writes
 * nothing. Returns 1 when the output was cut, 0 when it fitted.
 */
int azc_text_fmt(char *buf, size_t size, const char *fmt, ...) AZC_PRINTF(3, 4);
int azc_text_vfmt(char *buf, size_t size, const char *fmt, va_list ap) AZC_PRINTF(3, 0);

#endif
