/*
 * JSON-lines logger. See log.h for the line format and why a line is
 * written with a single fwrite.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "common/text.h"

struct azc_log {
    char *component;
    azc_log_level min;
    FILE *out;
};

static const char *const level_names[] = { "debug", "info", "warn", "error" };

azc_log *azc_log_new(const char *component, azc_log_level min, FILE *out)
{
    azc_log *lg = calloc(1, sizeof *lg);

    if (lg == NULL)
        return NULL;
    lg->component = strdup(component != NULL ? component : "authz");
    if (lg->component == NULL) {
        free(lg);
        return NULL;
    }
    lg->min = min;
    lg->out = out != NULL ? out : stderr;
    return lg;
}

void azc_log_free(azc_log *lg)
{
    if (lg == NULL)
        return;
    free(lg->component);
    free(lg);
}

void azc_log_set_level(azc_log *lg, azc_log_level min)
{
    if (lg != NULL)
        lg->min = min;
}

int azc_log_enabled(const azc_log *lg, azc_log_level lvl)
{
    return lg != NULL && lvl >= lg->min;
}

int azc_log_level_parse(const char *s, azc_log_level *out, azc_err *e)
{
    size_t i;

    for (i = 0; s != NULL && i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (azc_log_level)i;
            return AZC_OK;
        }
    }
    return azc_err_set(e, AZC_EINVAL,
                       "unknown log level \"%s\" (expected debug, info, warn or error)",
                       s != NULL ? s : "");
}

const char *azc_log_level_name(azc_log_level lvl)
{
    if ((unsigned)lvl >= sizeof level_names / sizeof level_names[0])
        return "unknown";
    return level_names[lvl];
}

static void format_now(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    /* strftime for the date (a year past 9999 cannot overflow the buffer
     * the way a %04d could in the compiler's eyes), then the milliseconds. */
    if (strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(buf, len, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(buf + strlen(buf), len - strlen(buf), ".%03dZ", (int)(ts.tv_nsec / 1000000L) % 1000);
}

static int is_reserved(const char *key)
{
    return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 ||
           strcmp(key, "component") == 0 || strcmp(key, "msg") == 0 ||
           strcmp(key, "request_id") == 0;
}

/* json_string refuses invalid UTF-8, which a message quoting a client's
 * header or path may hold: keep the line and the message, with the bad
 * bytes as '?'. */
static json_t *utf8_string(const char *s)
{
    size_t n;
    char *copy;
    json_t *v;

    if (s == NULL)
        s = "";
    if ((v = json_string(s)) != NULL)
        return v;
    n = strlen(s);
    if ((copy = malloc(n + 1)) == NULL)
        return json_string("(out of memory)");
    memcpy(copy, s, n + 1);
    azc_utf8_scrub(copy, n);
    v = json_string(copy);
    free(copy);
    return v;
}

void azc_log_write(azc_log *lg, azc_log_level lvl, const char *request_id,
                   json_t *fields, const char *msg)
{
    char ts[32];
    json_t *line;
    const char *key;
    json_t *val;
    char *text;

    if (!azc_log_enabled(lg, lvl))
        return;
    format_now(ts, sizeof ts);
    /* Build in the fixed key order readers expect first; a failed set only
     * loses that member, never the line. */
    line = json_object();
    if (line == NULL)
        return;
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(azc_log_level_name(lvl)));
    json_object_set_new(line, "component", json_string(lg->component));
    json_object_set_new(line, "msg", utf8_string(msg));
    if (request_id != NULL)
        json_object_set_new(line, "request_id", utf8_string(request_id));
    if (json_is_object(fields)) {
        json_object_foreach(fields, key, val) {
            if (!is_reserved(key))
                json_object_set(line, key, val);
        }
    }
    text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(line);
    if (text == NULL)
        return;
    {
        size_t n = strlen(text);
        text[n] = '\n';   /* overwrite the NUL: one write for the line */
        fwrite(text, 1, n + 1, lg->out);
        fflush(lg->out);
        text[n] = '\0';
    }
    free(text);
}

static void vlog(azc_log *lg, azc_log_level lvl, const char *request_id,
                 const char *fmt, va_list ap)
{
    char msg[1024];

    if (!azc_log_enabled(lg, lvl))
        return;
    (void)azc_text_vfmt(msg, sizeof msg, fmt, ap);
    azc_log_write(lg, lvl, request_id, NULL, msg);
}

void azc_logf(azc_log *lg, azc_log_level lvl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(lg, lvl, NULL, fmt, ap);
    va_end(ap);
}

void azc_log_reqf(azc_log *lg, azc_log_level lvl, const char *request_id,
                  const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(lg, lvl, request_id, fmt, ap);
    va_end(ap);
}

int azc_request_id_new(char buf[AZC_REQUEST_ID_LEN])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    size_t i;

    if (RAND_bytes(raw, sizeof raw) != 1)
        return AZC_ERROR;
    for (i = 0; i < sizeof raw; i++) {
        buf[2 * i] = hex[raw[i] >> 4];
        buf[2 * i + 1] = hex[raw[i] & 0xf];
    }
    buf[32] = '\0';
    return AZC_OK;
}
