/*
 * authz-netem-proxy: a TCP proxy that puts WAN conditions between two local
 * processes, so the replication tests and the demo can cut, stall or slow
 * the link between two regions on one machine (tools/local-cluster starts
 * one per ordered pair of regions).
 *
 *   authz-netem-proxy --listen 127.0.0.1:P --target 127.0.0.1:Q
 *                     [--delay-ms N] [--control 127.0.0.1:C]
 *
 * Modes, switched at run time by the control port (see --help) or signals:
 * - pass: bytes are forwarded; with a delay, each chunk read from one side
 *   is held until N ms after it was read, in order (tools/netem.h's delay
 *   queue), so each direction gets the same one-way delay and a round trip
 *   costs 2N.
 * - cut: every connection is reset, and new ones are accepted and reset at
 *   once, so a client fails fast as when a peer's host is unreachable and
 *   the kernel says so.
 * - blackhole: connections are accepted and read but nothing is forwarded,
 *   as a link that silently drops packets: only a client's own timeout
 *   ends the wait. Bytes read meanwhile stay queued and flow on heal, the
 *   way TCP would retransmit them.
 * Each direction buffers at most NM_PENDING_MAX bytes (queued plus not yet
 * written); beyond that the proxy stops reading that side, so a slow or
 * stalled receiver throttles the sender as TCP's window would.
 *
 * One thread, one event loop: the proxy carries test traffic, not load.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>

#include "common/log.h"
#include "tools/netem.h"

#define NM_PENDING_MAX (4u * 1024 * 1024)
#define NM_CHUNK_MAX (64u * 1024)
#define NM_CTL_LINE_MAX 256

typedef struct nm_proxy nm_proxy;
typedef struct nm_conn nm_conn;

/* One direction of one connection: bytes read from src wait in q, then go
 * to dst's output buffer. */
typedef struct nm_dir {
    nm_conn *conn;
    struct bufferevent *src;
    struct bufferevent *dst;
    nm_dq q;
    struct event *timer;
    uint64_t *counter;      /* the proxy's bytes_up or bytes_down */
    int paused;             /* reading src stopped for back-pressure */
    int eof;                /* src sent FIN */
    int shut;               /* FIN passed on to dst */
} nm_dir;

struct nm_conn {
    nm_proxy *px;
    nm_conn *prev, *next;
    struct bufferevent *client;
    struct bufferevent *server;
    nm_dir up;              /* client -> target */
    nm_dir down;            /* target -> client */
};

/* A control-port client. */
typedef struct nm_ctl_client {
    nm_proxy *px;
    struct nm_ctl_client *prev, *next;
    struct bufferevent *bev;
} nm_ctl_client;

struct nm_proxy {
    struct event_base *base;
    struct evconnlistener *listener;
    struct evconnlistener *control;
    struct sockaddr_in target;
    nm_conn *conns;
    nm_ctl_client *ctl_clients;
    nm_stats st;
    azc_log *log;
    const char *label;      /* "" when not given */
};

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- connections ---------------------------------------------------------- */

/* SO_LINGER 0: close() sends a reset, so the peer's next read or write
 * fails at once instead of seeing an orderly end of stream. */
static void set_reset_on_close(evutil_socket_t fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

static void set_nodelay(evutil_socket_t fd)
{
    int one = 1;

    /* Without it Nagle holds small writes back for the peer's delayed ACK,
     * which would add tens of ms on top of the configured delay. */
    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void conn_free(nm_conn *c, int reset)
{
    nm_proxy *px = c->px;

    if (reset) {
        set_reset_on_close(bufferevent_getfd(c->client));
        set_reset_on_close(bufferevent_getfd(c->server));
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        px->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    bufferevent_free(c->client);
    bufferevent_free(c->server);
    event_free(c->up.timer);
    event_free(c->down.timer);
    nm_dq_clear(&c->up.q);
    nm_dq_clear(&c->down.q);
    free(c);
    px->st.connections--;
}

static size_t dir_pending(const nm_dir *d)
{
    return d->q.bytes + evbuffer_get_length(bufferevent_get_output(d->dst));
}

static int sink_evbuffer(void *arg, const void *data, size_t len)
{
    return evbuffer_add(arg, data, len) == 0 ? AZC_OK : AZC_ENOMEM;
}

/*
 * Moves every due chunk of d to its destination, re-arms the timer for the
 * next one, passes a FIN on once everything before it has been written, and
 * resumes reading when the backlog has drained. Returns 1 when the
 * connection was freed (the caller must not touch it again).
 */
static int dir_pump(nm_dir *d)
{
    nm_conn *c = d->conn;
    nm_proxy *px = c->px;
    uint64_t now, due;
    size_t moved = 0;

    if (px->st.mode != NM_MODE_PASS)
        return 0;
    now = now_us();
    if (nm_dq_release(&d->q, now, sink_evbuffer, bufferevent_get_output(d->dst), &moved) != AZC_OK) {
        azc_logf(px->log, AZC_LOG_ERROR, "out of memory forwarding; resetting the connection");
        conn_free(c, 1);
        return 1;
    }
    *d->counter += moved;
    if (nm_dq_next_due(&d->q, &due) == AZC_OK) {
        struct timeval tv;
        uint64_t wait = due > now ? due - now : 0;

        tv.tv_sec = (time_t)(wait / 1000000u);
        tv.tv_usec = (suseconds_t)(wait % 1000000u);
        if (evtimer_add(d->timer, &tv) != 0) {
            azc_logf(px->log, AZC_LOG_ERROR, "cannot arm a delay timer; resetting the connection");
            conn_free(c, 1);
            return 1;
        }
    }
    if (d->paused && dir_pending(d) < NM_PENDING_MAX / 2) {
        d->paused = 0;
        if (!d->eof)
            (void)bufferevent_enable(d->src, EV_READ);
    }
    if (d->eof && !d->shut && d->q.bytes == 0 &&
        evbuffer_get_length(bufferevent_get_output(d->dst)) == 0) {
        /* Half close: the other direction may still have bytes to carry
         * (a client that sends its request and shuts down its side). */
        (void)shutdown(bufferevent_getfd(d->dst), SHUT_WR);
        d->shut = 1;
        if (c->up.shut && c->down.shut) {
            conn_free(c, 0);
            return 1;
        }
    }
    return 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)dir_pump(arg);
}

static nm_dir *dir_from_src(nm_conn *c, struct bufferevent *bev)
{
    return bev == c->client ? &c->up : &c->down;
}

static nm_dir *dir_from_dst(nm_conn *c, struct bufferevent *bev)
{
    return bev == c->client ? &c->down : &c->up;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    nm_conn *c = arg;
    nm_dir *d = dir_from_src(c, bev);
    struct evbuffer *in = bufferevent_get_input(bev);
    uint64_t now = now_us(), delay = (uint64_t)c->px->st.delay_ms * 1000u;
    size_t len;

    while ((len = evbuffer_get_length(in)) > 0) {
        unsigned char *p;

        if (len > NM_CHUNK_MAX)
            len = NM_CHUNK_MAX;
        p = evbuffer_pullup(in, (ev_ssize_t)len);
        if (p == NULL || nm_dq_push(&d->q, now, delay, p, len) != AZC_OK) {
            azc_logf(c->px->log, AZC_LOG_ERROR, "out of memory queueing; resetting the connection");
            conn_free(c, 1);
            return;
        }
        (void)evbuffer_drain(in, len);
    }
    if (dir_pending(d) >= NM_PENDING_MAX) {
        d->paused = 1;
        (void)bufferevent_disable(bev, EV_READ);
    }
    (void)dir_pump(d);
}

/* The destination's output drained: resume its source, maybe pass a FIN. */
static void on_write(struct bufferevent *bev, void *arg)
{
    nm_conn *c = arg;

    (void)dir_pump(dir_from_dst(c, bev));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    nm_conn *c = arg;
    nm_dir *d;

    if (what & BEV_EVENT_CONNECTED) {
        set_nodelay(bufferevent_getfd(bev));
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        /* A refused or reset upstream resets the client too, so it learns
         * at once, as it would without the proxy. */
        azc_logf(c->px->log, AZC_LOG_DEBUG, "%s side failed: %s; resetting the connection",
                 bev == c->client ? "client" : "target",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        conn_free(c, 1);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        d = dir_from_src(c, bev);
        d->eof = 1;
        (void)bufferevent_disable(bev, EV_READ);
        (void)dir_pump(d);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    nm_proxy *px = arg;
    nm_conn *c;

    (void)l;
    (void)sa;
    (void)salen;
    if (px->st.mode == NM_MODE_CUT) {
        px->st.refused++;
        set_reset_on_close(fd);
        evutil_closesocket(fd);
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        goto fail;
    c->px = px;
    c->client = bufferevent_socket_new(px->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->client == NULL)
        goto fail;
    fd = -1; /* owned by c->client now */
    c->server = bufferevent_socket_new(px->base, -1, BEV_OPT_CLOSE_ON_FREE);
    c->up.timer = evtimer_new(px->base, on_timer, &c->up);
    c->down.timer = evtimer_new(px->base, on_timer, &c->down);
    if (c->server == NULL || c->up.timer == NULL || c->down.timer == NULL)
        goto fail;
    c->up = (nm_dir){.conn = c, .src = c->client, .dst = c->server, .timer = c->up.timer,
                     .counter = &px->st.bytes_up};
    c->down = (nm_dir){.conn = c, .src = c->server, .dst = c->client, .timer = c->down.timer,
                       .counter = &px->st.bytes_down};
    nm_dq_init(&c->up.q);
    nm_dq_init(&c->down.q);
    bufferevent_setcb(c->client, on_read, on_write, on_event, c);
    bufferevent_setcb(c->server, on_read, on_write, on_event, c);
    if (bufferevent_socket_connect(c->server, (struct sockaddr *)&px->target,
                                   (int)sizeof px->target) != 0)
        goto fail;
    set_nodelay(bufferevent_getfd(c->client));
    if (bufferevent_enable(c->client, EV_READ | EV_WRITE) != 0 ||
        bufferevent_enable(c->server, EV_READ | EV_WRITE) != 0)
        goto fail;
    c->next = px->conns;
    if (px->conns != NULL)
        px->conns->prev = c;
    px->conns = c;
    px->st.accepted++;
    px->st.connections++;
    return;

fail:
    azc_logf(px->log, AZC_LOG_WARN, "cannot set up a connection to the target: %s",
             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    if (c != NULL) {
        if (c->client != NULL) {
            set_reset_on_close(bufferevent_getfd(c->client));
            bufferevent_free(c->client);
        }
        if (c->server != NULL)
            bufferevent_free(c->server);
        if (c->up.timer != NULL)
            event_free(c->up.timer);
        if (c->down.timer != NULL)
            event_free(c->down.timer);
        free(c);
    }
    if (fd >= 0) {
        set_reset_on_close(fd);
        evutil_closesocket(fd);
    }
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    nm_proxy *px = arg;

    (void)l;
    azc_logf(px->log, AZC_LOG_WARN, "accept failed: %s",
             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/* ---- modes ----------------------------------------------------------------- */

static void set_mode(nm_proxy *px, nm_mode mode, const char *by)
{
    nm_conn *c, *next;
    json_t *f;

    if (mode != px->st.mode) {
        f = json_pack("{s:s, s:s, s:s, s:I, s:I}", "label", px->label, "mode", nm_mode_name(mode),
                      "by", by, "delay_ms", (json_int_t)px->st.delay_ms, "connections",
                      (json_int_t)px->st.connections);
        azc_log_write(px->log, AZC_LOG_INFO, NULL, f, "mode changed");
        json_decref(f);
    }
    px->st.mode = mode;
    if (mode == NM_MODE_CUT) {
        for (c = px->conns; c != NULL; c = next) {
            next = c->next;
            conn_free(c, 1);
        }
    } else if (mode == NM_MODE_PASS) {
        /* Release what a blackhole held; dir_pump may free c. */
        for (c = px->conns; c != NULL; c = next) {
            next = c->next;
            if (dir_pump(&c->up) == 0)
                (void)dir_pump(&c->down);
        }
    }
}

/* ---- control port ---------------------------------------------------------- */

static void ctl_client_free(nm_ctl_client *cc)
{
    nm_proxy *px = cc->px;

    if (cc->prev != NULL)
        cc->prev->next = cc->next;
    else
        px->ctl_clients = cc->next;
    if (cc->next != NULL)
        cc->next->prev = cc->prev;
    bufferevent_free(cc->bev);
    free(cc);
}

static void ctl_reply_error(struct evbuffer *out, const char *msg)
{
    json_t *o = json_pack("{s:s}", "error", msg);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

    (void)evbuffer_add_printf(out, "%s\n", text != NULL ? text : "{\"error\":\"out of memory\"}");
    free(text);
    json_decref(o);
}

static void ctl_handle(nm_proxy *px, const char *line, struct evbuffer *out)
{
    nm_ctl cmd;
    azc_err e;
    char *status;

    if (nm_ctl_parse(line, &cmd, &e) != AZC_OK) {
        ctl_reply_error(out, e.msg);
        return;
    }
    if (cmd.has_delay && cmd.delay_ms != px->st.delay_ms) {
        azc_logf(px->log, AZC_LOG_INFO, "%s%sdelay changed from %u to %u ms", px->label,
                 px->label[0] != '\0' ? ": " : "", px->st.delay_ms, cmd.delay_ms);
        px->st.delay_ms = cmd.delay_ms;
    }
    switch (cmd.cmd) {
    case NM_CTL_PASS: set_mode(px, NM_MODE_PASS, "control"); break;
    case NM_CTL_CUT: set_mode(px, NM_MODE_CUT, "control"); break;
    case NM_CTL_BLACKHOLE: set_mode(px, NM_MODE_BLACKHOLE, "control"); break;
    case NM_CTL_DELAY:
    case NM_CTL_STATUS: break;
    }
    status = nm_status_line(&px->st);
    if (status == NULL) {
        ctl_reply_error(out, "out of memory");
        return;
    }
    (void)evbuffer_add(out, status, strlen(status));
    free(status);
}

static void ctl_on_read(struct bufferevent *bev, void *arg)
{
    nm_ctl_client *cc = arg;
    struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
    char *line;
    size_t n;

    while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
        if (n >= NM_CTL_LINE_MAX)
            ctl_reply_error(out, "command too long");
        else
            ctl_handle(cc->px, line, out);
        free(line);
    }
    if (evbuffer_get_length(in) >= NM_CTL_LINE_MAX) {
        /* A line that never ends is not a command: say so and hang up
         * once the answer is out. */
        ctl_reply_error(out, "command too long");
        (void)evbuffer_drain(in, evbuffer_get_length(in));
        (void)bufferevent_disable(bev, EV_READ);
    }
}

static void ctl_on_write(struct bufferevent *bev, void *arg)
{
    /* Reading was stopped after a bad line: close once the reply left. */
    if (!(bufferevent_get_enabled(bev) & EV_READ))
        ctl_client_free(arg);
}

static void ctl_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        ctl_client_free(arg);
}

static void ctl_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    nm_proxy *px = arg;
    nm_ctl_client *cc;

    (void)l;
    (void)sa;
    (void)salen;
    cc = calloc(1, sizeof *cc);
    if (cc == NULL || (cc->bev = bufferevent_socket_new(px->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        azc_logf(px->log, AZC_LOG_WARN, "out of memory accepting a control connection");
        free(cc);
        evutil_closesocket(fd);
        return;
    }
    cc->px = px;
    bufferevent_setcb(cc->bev, ctl_on_read, ctl_on_write, ctl_on_event, cc);
    if (bufferevent_enable(cc->bev, EV_READ | EV_WRITE) != 0) {
        bufferevent_free(cc->bev);
        free(cc);
        return;
    }
    cc->next = px->ctl_clients;
    if (px->ctl_clients != NULL)
        px->ctl_clients->prev = cc;
    px->ctl_clients = cc;
}

/* ---- main ------------------------------------------------------------------ */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    nm_proxy *px = arg;

    (void)what;
    if (sig == SIGUSR1)
        set_mode(px, NM_MODE_CUT, "signal");
    else if (sig == SIGUSR2)
        set_mode(px, NM_MODE_PASS, "signal");
    else
        (void)event_base_loopbreak(px->base);
}

static struct evconnlistener *listen_on(nm_proxy *px, const struct sockaddr_in *sa,
                                        evconnlistener_cb cb, const char *what)
{
    struct evconnlistener *l;
    char addr[64];

    l = evconnlistener_new_bind(px->base, cb, px, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 128,
                                (const struct sockaddr *)sa, (int)sizeof *sa);
    if (l == NULL) {
        evutil_inet_ntop(AF_INET, &sa->sin_addr, addr, sizeof addr);
        azc_logf(px->log, AZC_LOG_ERROR, "cannot listen for %s on %s:%u: %s", what, addr,
                 ntohs(sa->sin_port), strerror(errno));
    }
    return l;
}

int main(int argc, char **argv)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
    struct event *sev[sizeof sigs / sizeof sigs[0]] = {0};
    struct event_config *ecfg = NULL;
    nm_proxy px;
    nm_opts o;
    azc_log_level lvl;
    azc_err e;
    json_t *f;
    size_t i;
    int rc, exit_code = 1;

    rc = nm_opts_parse(argc, argv, &o, stdout, stderr);
    if (rc == NM_EXIT)
        return 0;
    if (rc != NM_RUN)
        return 2;
    memset(&px, 0, sizeof px);
    px.target = o.target;
    px.st.mode = NM_MODE_PASS;
    px.st.delay_ms = o.delay_ms;
    px.label = o.label != NULL ? o.label : "";
    if (azc_log_level_parse(o.log_level, &lvl, &e) != AZC_OK)
        lvl = AZC_LOG_INFO;
    px.log = azc_log_new("netem-proxy", lvl, stderr);
    if (px.log == NULL) {
        fprintf(stderr, "authz-netem-proxy: out of memory\n");
        return 1;
    }
    /* A write to a client that reset must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    /* Precise timers (timerfd): epoll's millisecond timeouts would add up
     * to a millisecond per chunk on top of the configured delay. */
    ecfg = event_config_new();
    if (ecfg == NULL || event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER) != 0) {
        azc_logf(px.log, AZC_LOG_ERROR, "cannot configure the event loop");
        goto out;
    }
    px.base = event_base_new_with_config(ecfg);
    if (px.base == NULL) {
        azc_logf(px.log, AZC_LOG_ERROR, "cannot create the event loop");
        goto out;
    }
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sev[i] = evsignal_new(px.base, sigs[i], on_signal, &px);
        if (sev[i] == NULL || event_add(sev[i], NULL) != 0) {
            azc_logf(px.log, AZC_LOG_ERROR, "cannot install a signal handler");
            goto out;
        }
    }
    px.listener = listen_on(&px, &o.listen, on_accept, "clients");
    if (px.listener == NULL)
        goto out;
    evconnlistener_set_error_cb(px.listener, on_accept_error);
    if (o.has_control) {
        px.control = listen_on(&px, &o.control, ctl_on_accept, "control");
        if (px.control == NULL)
            goto out;
    }
    f = json_pack("{s:s, s:i, s:i, s:i, s:I}", "label", px.label, "port", ntohs(o.listen.sin_port), "target_port",
                  ntohs(o.target.sin_port), "control_port",
                  o.has_control ? ntohs(o.control.sin_port) : 0, "delay_ms", (json_int_t)o.delay_ms);
    azc_log_write(px.log, AZC_LOG_INFO, NULL, f, "listening");
    json_decref(f);
    if (event_base_dispatch(px.base) < 0) {
        azc_logf(px.log, AZC_LOG_ERROR, "the event loop failed");
        goto out;
    }
    azc_logf(px.log, AZC_LOG_INFO, "stopping");
    exit_code = 0;

out:
    while (px.conns != NULL)
        conn_free(px.conns, 0);
    while (px.ctl_clients != NULL)
        ctl_client_free(px.ctl_clients);
    if (px.listener != NULL)
        evconnlistener_free(px.listener);
    if (px.control != NULL)
        evconnlistener_free(px.control);
    for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sev[i] != NULL)
            event_free(sev[i]);
    if (px.base != NULL)
        event_base_free(px.base);
    if (ecfg != NULL)
        event_config_free(ecfg);
    azc_log_free(px.log);
    return exit_code;
}
