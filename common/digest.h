/* SHA-256 as lower-case hex, through OpenSSL's EVP interface: checksums of
 * migration files and request fingerprints for idempotency keys. */
#ifndef AZC_DIGEST_H
#define AZC_DIGEST_H

#include <stddef.h>

#include "common/err.h"

#define AZC_SHA256_HEX_LEN 65   /* 64 hex digits and the NUL */

int azc_sha256_hex(const void *data, size_t len, char out[AZC_SHA256_HEX_LEN]) AZC_WARN_UNUSED;

#endif
