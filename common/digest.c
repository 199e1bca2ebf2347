/* SHA-256 helper; see digest.h. */
#include "common/digest.h"

#include <openssl/evp.h>

int azc_sha256_hex(const void *data, size_t len, char out[AZC_SHA256_HEX_LEN])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return AZC_ERROR;
    for (i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xf];
    }
    out[64] = '\0';
    return AZC_OK;
}
