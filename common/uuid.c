/* UUID generation and validation; see uuid.h. */
#include "common/uuid.h"

#include <string.h>

#include <openssl/rand.h>

int azc_uuid_new(char buf[AZC_UUID_LEN])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    size_t i, o = 0;

    if (RAND_bytes(b, sizeof b) != 1)
        return AZC_ERROR;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);   /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            buf[o++] = '-';
        buf[o++] = hex[b[i] >> 4];
        buf[o++] = hex[b[i] & 0xf];
    }
    buf[o] = '\0';
    return AZC_OK;
}

int azc_uuid_valid(const char *s)
{
    size_t i;

    if (s == NULL || strlen(s) != 36)
        return 0;
    for (i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}
