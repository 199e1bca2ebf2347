/* Error record helpers; see err.h. */
#include "common/err.h"

#include <stdarg.h>

#include "common/text.h"

int azc_err_set(azc_err *e, int code, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return code;
    e->code = code;
    va_start(ap, fmt);
    /* Messages quote input: cut on a character, never inside one, and
     * scrub bytes that are not UTF-8, so the message always encodes as
     * JSON (reply bodies, log lines, text columns). */
    (void)azc_text_vfmt(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

void azc_err_clear(azc_err *e)
{
    if (e == NULL)
        return;
    e->code = AZC_OK;
    e->msg[0] = '\0';
}

const char *azc_status_name(int code)
{
    switch (code) {
    case AZC_OK: return "ok";
    case AZC_EINVAL: return "invalid";
    case AZC_ENOMEM: return "out_of_memory";
    case AZC_ETOOBIG: return "too_big";
    case AZC_ENOTFOUND: return "not_found";
    case AZC_ECONFLICT: return "conflict";
    case AZC_EUNAVAIL: return "unavailable";
    default: return "error";
    }
}
