/*
 * Command line, control commands, status line and delay queue of
 * authz-netem-proxy; see netem.h. Pure functions and a FIFO: the proxy's
 * sockets live in netem-proxy.c.
 */
#include "tools/netem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define PROG "authz-netem-proxy"

struct nm_chunk {
    nm_chunk *next;
    uint64_t due_us;
    size_t len;
    unsigned char data[];
};

/* ---- parsing ------------------------------------------------------------ */

/* Strict unsigned decimal: digits only, no sign, no blanks, <= max. */
static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    const char *p;

    if (s == NULL || *s == '\0' || strlen(s) > 10)
        return AZC_EINVAL;
    for (p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return AZC_EINVAL;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > max)
        return AZC_EINVAL;
    *out = v;
    return AZC_OK;
}

int nm_addr_parse(const char *s, struct sockaddr_in *out, azc_err *e)
{
    char host[INET_ADDRSTRLEN];
    const char *colon;
    unsigned long port;
    size_t hlen;

    if (s == NULL || (colon = strrchr(s, ':')) == NULL)
        return azc_err_set(e, AZC_EINVAL, "\"%s\" is not HOST:PORT", s ? s : "");
    hlen = (size_t)(colon - s);
    if (hlen == 0 || hlen >= sizeof host)
        return azc_err_set(e, AZC_EINVAL, "\"%s\": the host must be a numeric IPv4 address", s);
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
        return azc_err_set(e, AZC_EINVAL, "\"%s\": the host must be a numeric IPv4 address", s);
    if (parse_uint(colon + 1, 65535, &port) != AZC_OK || port == 0)
        return azc_err_set(e, AZC_EINVAL, "\"%s\": the port must be a number from 1 to 65535", s);
    out->sin_port = htons((uint16_t)port);
    return AZC_OK;
}

int nm_delay_parse(const char *s, unsigned *out, azc_err *e)
{
    unsigned long v;

    if (parse_uint(s, NM_DELAY_MAX_MS, &v) != AZC_OK)
        return azc_err_set(e, AZC_EINVAL, "delay \"%s\": a whole number of milliseconds from 0 to %u",
                           s ? s : "", NM_DELAY_MAX_MS);
    *out = (unsigned)v;
    return AZC_OK;
}

static void usage(FILE *f)
{
    fputs(PROG ": a TCP proxy that puts WAN conditions (one-way delay, a cut link,\n"
          "a blackhole) between two local processes, switchable at run time.\n"
          "\n"
          "usage: " PROG " --listen HOST:PORT --target HOST:PORT [--delay-ms N]\n"
          "                         [--control HOST:PORT] [--log-level LEVEL] [--label TEXT]\n"
          "\n"
          "  --listen HOST:PORT   where clients connect (numeric IPv4)\n"
          "  --target HOST:PORT   where their connections are forwarded\n"
          "  --delay-ms N         one-way delay added to each direction (default 0)\n"
          "  --control HOST:PORT  control port, one command per line:\n"
          "                         pass [MS] | heal   forward (optionally set the delay)\n"
          "                         delay MS           set the delay, keep the mode\n"
          "                         cut                reset all connections, refuse new ones\n"
          "                         blackhole          accept and read, forward nothing\n"
          "                         status             print the state\n"
          "                       every command answers one JSON status line\n"
          "                       (or {\"error\": ...})\n"
          "  --log-level LEVEL    debug, info (default), warn or error\n"
          "  --label TEXT         a name for the log lines (tools/local-cluster passes one\n"
          "                       that names its run folder, to recognise its processes)\n"
          "  -h, --help           show this help and exit\n"
          "  -V, --version        show the version and exit\n"
          "\n"
          "Signals: SIGTERM/SIGINT stop the proxy; SIGUSR1 cuts, SIGUSR2 heals.\n",
          f);
}

static int bad(FILE *err, const char *msg)
{
    fprintf(err, PROG ": %s\n", msg);
    fprintf(err, "try: " PROG " --help\n");
    return AZC_EINVAL;
}

int nm_opts_parse(int argc, char *const *argv, nm_opts *o, FILE *out, FILE *err)
{
    int have_listen = 0, have_target = 0, have_delay = 0;
    azc_err e;
    int i;

    memset(o, 0, sizeof *o);
    o->log_level = "info";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int rc;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(out);
            return NM_EXIT;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            fprintf(out, "%s %s\n", PROG, AUTHZ_VERSION);
            return NM_EXIT;
        }
        if (strcmp(a, "--listen") != 0 && strcmp(a, "--target") != 0 &&
            strcmp(a, "--control") != 0 && strcmp(a, "--delay-ms") != 0 &&
            strcmp(a, "--log-level") != 0 && strcmp(a, "--label") != 0) {
            azc_err_set(&e, AZC_EINVAL, "unknown argument \"%s\"", a);
            return bad(err, e.msg);
        }
        if (i + 1 >= argc || argv[i + 1][0] == '\0') {
            azc_err_set(&e, AZC_EINVAL, "%s needs a value", a);
            return bad(err, e.msg);
        }
        v = argv[++i];
        if (strcmp(a, "--listen") == 0) {
            rc = nm_addr_parse(v, &o->listen, &e);
            have_listen++;
        } else if (strcmp(a, "--target") == 0) {
            rc = nm_addr_parse(v, &o->target, &e);
            have_target++;
        } else if (strcmp(a, "--control") == 0) {
            rc = nm_addr_parse(v, &o->control, &e);
            o->has_control++;
        } else if (strcmp(a, "--delay-ms") == 0) {
            rc = nm_delay_parse(v, &o->delay_ms, &e);
            have_delay++;
        } else if (strcmp(a, "--label") == 0) {
            rc = AZC_OK;
            if (o->label != NULL)
                rc = azc_err_set(&e, AZC_EINVAL, "given twice");
            o->label = v;
        } else {
            rc = AZC_OK;
            if (strcmp(v, "debug") != 0 && strcmp(v, "info") != 0 && strcmp(v, "warn") != 0 &&
                strcmp(v, "error") != 0)
                rc = azc_err_set(&e, AZC_EINVAL, "--log-level \"%s\": debug, info, warn or error", v);
            o->log_level = v;
        }
        if (rc != AZC_OK) {
            char msg[AZC_ERRMSG_MAX + 32];

            snprintf(msg, sizeof msg, "%s: %s", a, e.msg);
            return bad(err, msg);
        }
        if (have_listen > 1 || have_target > 1 || o->has_control > 1 || have_delay > 1) {
            azc_err_set(&e, AZC_EINVAL, "%s given twice", a);
            return bad(err, e.msg);
        }
    }
    if (!have_listen || !have_target)
        return bad(err, "--listen and --target are required");
    if (memcmp(&o->listen, &o->target, sizeof o->listen) == 0)
        return bad(err, "--listen and --target are the same address: the proxy would loop");
    if (o->has_control && memcmp(&o->listen, &o->control, sizeof o->listen) == 0)
        return bad(err, "--listen and --control are the same address");
    return NM_RUN;
}

int nm_ctl_parse(const char *line, nm_ctl *out, azc_err *e)
{
    char buf[64], *words[3];
    size_t n = 0, len;
    char *p, *save = NULL;

    if (line == NULL)
        return azc_err_set(e, AZC_EINVAL, "empty command");
    len = strlen(line);
    if (len >= sizeof buf)
        return azc_err_set(e, AZC_EINVAL, "command too long");
    memcpy(buf, line, len + 1);
    for (p = strtok_r(buf, " \t\r\n", &save); p != NULL; p = strtok_r(NULL, " \t\r\n", &save)) {
        if (n == 3)
            return azc_err_set(e, AZC_EINVAL, "too many words");
        words[n++] = p;
    }
    if (n == 0)
        return azc_err_set(e, AZC_EINVAL, "empty command");
    memset(out, 0, sizeof *out);
    if (strcmp(words[0], "pass") == 0 || strcmp(words[0], "heal") == 0) {
        out->cmd = NM_CTL_PASS;
        if (n == 2) {
            if (nm_delay_parse(words[1], &out->delay_ms, e) != AZC_OK)
                return AZC_EINVAL;
            out->has_delay = 1;
        }
        if (n > 2)
            return azc_err_set(e, AZC_EINVAL, "usage: pass [MS]");
        return AZC_OK;
    }
    if (strcmp(words[0], "delay") == 0) {
        if (n != 2)
            return azc_err_set(e, AZC_EINVAL, "usage: delay MS");
        if (nm_delay_parse(words[1], &out->delay_ms, e) != AZC_OK)
            return AZC_EINVAL;
        out->cmd = NM_CTL_DELAY;
        out->has_delay = 1;
        return AZC_OK;
    }
    if (n != 1)
        return azc_err_set(e, AZC_EINVAL, "\"%s\" takes no argument", words[0]);
    if (strcmp(words[0], "cut") == 0)
        out->cmd = NM_CTL_CUT;
    else if (strcmp(words[0], "blackhole") == 0)
        out->cmd = NM_CTL_BLACKHOLE;
    else if (strcmp(words[0], "status") == 0)
        out->cmd = NM_CTL_STATUS;
    else
        return azc_err_set(e, AZC_EINVAL,
                           "unknown command \"%s\" (pass [MS], heal, delay MS, cut, blackhole, status)",
                           words[0]);
    return AZC_OK;
}

const char *nm_mode_name(nm_mode m)
{
    switch (m) {
    case NM_MODE_PASS: return "pass";
    case NM_MODE_CUT: return "cut";
    case NM_MODE_BLACKHOLE: return "blackhole";
    }
    return "unknown";
}

char *nm_status_line(const nm_stats *s)
{
    json_t *o;
    char *text, *line;
    size_t len;

    o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
                  "mode", nm_mode_name(s->mode),
                  "delay_ms", (json_int_t)s->delay_ms,
                  "connections", (json_int_t)s->connections,
                  "accepted", (json_int_t)s->accepted,
                  "refused", (json_int_t)s->refused,
                  "bytes_up", (json_int_t)s->bytes_up,
                  "bytes_down", (json_int_t)s->bytes_down);
    if (o == NULL)
        return NULL;
    text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (text == NULL)
        return NULL;
    len = strlen(text);
    line = malloc(len + 2);
    if (line != NULL) {
        memcpy(line, text, len);
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    free(text);
    return line;
}

/* ---- delay queue -------------------------------------------------------- */

void nm_dq_init(nm_dq *q)
{
    memset(q, 0, sizeof *q);
}

void nm_dq_clear(nm_dq *q)
{
    nm_chunk *c = q->head, *next;

    for (; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    q->head = q->tail = NULL;
    q->bytes = 0;
}

int nm_dq_push(nm_dq *q, uint64_t now_us, uint64_t delay_us, const void *data, size_t len)
{
    nm_chunk *c;
    uint64_t due = now_us + delay_us;

    if (len == 0)
        return AZC_OK;
    c = malloc(sizeof *c + len);
    if (c == NULL)
        return AZC_ENOMEM;
    /* A delay lowered at run time must not let new bytes overtake old
     * ones: TCP would deliver them in order too. */
    if (q->head != NULL && due < q->last_due_us)
        due = q->last_due_us;
    c->next = NULL;
    c->due_us = due;
    c->len = len;
    memcpy(c->data, data, len);
    if (q->tail != NULL)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->bytes += len;
    q->last_due_us = due;
    return AZC_OK;
}

int nm_dq_next_due(const nm_dq *q, uint64_t *due_us)
{
    if (q->head == NULL)
        return AZC_ENOTFOUND;
    *due_us = q->head->due_us;
    return AZC_OK;
}

int nm_dq_release(nm_dq *q, uint64_t now_us, nm_sink sink, void *arg, size_t *released)
{
    size_t total = 0;
    int rc = AZC_OK;

    while (q->head != NULL && q->head->due_us <= now_us) {
        nm_chunk *c = q->head;

        rc = sink(arg, c->data, c->len);
        if (rc != AZC_OK)
            break;
        total += c->len;
        q->bytes -= c->len;
        q->head = c->next;
        if (q->head == NULL)
            q->tail = NULL;
        free(c);
    }
    if (released != NULL)
        *released = total;
    return rc;
}
