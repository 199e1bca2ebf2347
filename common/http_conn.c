/*
 * One record per accepted connection: the connection cap, the total
 * deadline for receiving a request, and the one close hook of the
 * connection, which deferred and streamed requests listen to.
 *
 * libevent 2.1 has no accept hook that names the connection
 * (evhttp_set_newreqcb and evhttp_set_max_connections came in 2.2). What
 * it has is the bufferevent callback, called on accept just before evhttp
 * wraps the new bufferevent in its connection and sets that connection as
 * the bufferevent's callback argument. So the record is made in the
 * bufferevent callback and attached one loop turn later, from an event
 * activated there, when the connection exists and before any byte has
 * been read (reads need the next poll). The record holds a reference on
 * the bufferevent until then: should evhttp free the connection in
 * between (out of memory), the bufferevent's callbacks are cleared and the
 * record goes without touching anything freed.
 *
 * Slow clients: evhttp_set_timeout restarts on every byte, so a client
 * sending one byte every few seconds keeps its connection for ever. The
 * deadline timer starts at the accept, or at the first byte of a later
 * request on a kept-alive connection (an input-buffer callback sees it),
 * stops when the dispatcher has the whole request, and closes the
 * connection when it fires. An idle kept-alive connection is left to the
 * idle timeout.
 *
 * Beyond max_connections a new connection gets a fixed 503 JSON answer,
 * written straight to its socket without reading the request, and is
 * closed: a client learns why, and a flood costs one small write each. A
 * client whose request has already arrived may see a reset instead (the
 * kernel resets a socket closed with unread data), which is as clean a
 * refusal for it.
 */
#include "common/http_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

enum conn_state {
    CONN_RECEIVING,     /* a request is coming in: the deadline runs */
    CONN_BUSY,          /* the dispatcher has the request */
    CONN_IDLE           /* kept alive between requests */
};

struct azc__http_conn {
    azc_http *h;
    struct bufferevent *bev;
    struct evhttp_connection *evcon;    /* NULL until attached */
    evutil_socket_t fd;
    struct event *attach_ev;
    struct event *deadline_ev;
    struct evbuffer_cb_entry *input_cb;
    enum conn_state state;
    int refuse;                 /* over the cap when accepted */
    int closing;                /* the connection is being freed */
    void (*watch_cb)(azc_http_req *r);
    azc_http_req *watch_req;
    azc__http_conn *prev;
    azc__http_conn *next;
};

static const char REFUSED[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 78\r\n"
    "Connection: close\r\n"
    "Retry-After: 1\r\n"
    "\r\n"
    "{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections; retry later\"}}";

static void conn_destroy(azc__http_conn *c)
{
    azc_http *h = c->h;

    if (c->attach_ev != NULL)
        event_free(c->attach_ev);
    if (c->deadline_ev != NULL)
        event_free(c->deadline_ev);
    if (c->evcon == NULL)
        bufferevent_decref(c->bev);     /* the reference taken on accept */
    if (c->fd >= 0 && (size_t)c->fd < h->nby_fd && h->by_fd[c->fd] == c)
        h->by_fd[c->fd] = NULL;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nconns--;
    free(c);
}

static void deadline_arm(azc__http_conn *c)
{
    struct timeval tv = { c->h->request_timeout, 0 };

    c->state = CONN_RECEIVING;
    if (evtimer_add(c->deadline_ev, &tv) != 0)
        azc_logf(c->h->log, AZC_LOG_WARN, "cannot arm the request deadline of a connection");
}

/* evhttp is freeing the connection: the last word on it. */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    azc__http_conn *c = arg;
    void (*cb)(azc_http_req *) = c->watch_cb;
    azc_http_req *r = c->watch_req;

    (void)evcon;
    c->closing = 1;
    c->watch_cb = NULL;
    c->watch_req = NULL;
    if (c->input_cb != NULL)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    if (cb != NULL)
        cb(r);
    conn_destroy(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    azc__http_conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state != CONN_RECEIVING)
        return;
    azc_logf(c->h->log, AZC_LOG_INFO,
             "request not received within %d s: connection closed", c->h->request_timeout);
    evhttp_connection_free(c->evcon);   /* on_conn_close frees c */
}

/* Bytes came in: on an idle connection they start the next request. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    azc__http_conn *c = arg;

    (void)buf;
    if (info->n_added > 0 && c->state == CONN_IDLE && !c->closing)
        deadline_arm(c);
}

static int index_fd(azc_http *h, azc__http_conn *c)
{
    if ((size_t)c->fd >= h->nby_fd) {
        size_t n = h->nby_fd == 0 ? 64 : h->nby_fd;
        azc__http_conn **grown;

        while (n <= (size_t)c->fd)
            n *= 2;
        grown = realloc(h->by_fd, n * sizeof *grown);
        if (grown == NULL)
            return -1;
        memset(grown + h->nby_fd, 0, (n - h->nby_fd) * sizeof *grown);
        h->by_fd = grown;
        h->nby_fd = n;
    }
    h->by_fd[c->fd] = c;
    return 0;
}

static void on_attach(evutil_socket_t fd, short what, void *arg)
{
    azc__http_conn *c = arg;
    azc_http *h = c->h;
    bufferevent_data_cb readcb = NULL;
    void *cbarg = NULL;

    (void)fd;
    (void)what;
    event_free(c->attach_ev);
    c->attach_ev = NULL;
    bufferevent_getcb(c->bev, &readcb, NULL, NULL, &cbarg);
    if (readcb == NULL || cbarg == NULL) {
        conn_destroy(c);        /* evhttp has freed the connection already */
        return;
    }
    c->evcon = cbarg;
    bufferevent_decref(c->bev); /* evhttp's own reference keeps it now */
    c->fd = bufferevent_getfd(c->bev);
    evhttp_connection_set_closecb(c->evcon, on_conn_close, c);
    if (c->refuse) {
        if (c->fd >= 0 && send(c->fd, REFUSED, sizeof REFUSED - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            azc_logf(h->log, AZC_LOG_DEBUG, "cannot send the 503 of a refused connection: %s",
                     strerror(errno));
        azc_logf(h->log, AZC_LOG_WARN, "connection refused: %zu open (max_connections)",
                 h->max_connections);
        evhttp_connection_free(c->evcon);
        return;
    }
    c->deadline_ev = evtimer_new(h->base, on_deadline, c);
    c->input_cb = evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c);
    if (c->fd < 0 || c->deadline_ev == NULL || c->input_cb == NULL || index_fd(h, c) != 0) {
        azc_logf(h->log, AZC_LOG_ERROR, "out of memory for a connection: closed");
        evhttp_connection_free(c->evcon);
        return;
    }
    deadline_arm(c);
}

/* evhttp's bufferevent callback: a connection has just been accepted. */
static struct bufferevent *on_accept(struct event_base *base, void *arg)
{
    azc_http *h = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    azc__http_conn *c;

    if (bev == NULL)
        return NULL;            /* evhttp makes its own, or fails the accept */
    c = calloc(1, sizeof *c);
    if (c == NULL || (c->attach_ev = event_new(base, -1, 0, on_attach, c)) == NULL) {
        free(c);
        azc_logf(h->log, AZC_LOG_WARN, "out of memory: connection not tracked");
        return bev;
    }
    c->h = h;
    c->bev = bev;
    c->fd = -1;
    c->state = CONN_RECEIVING;
    bufferevent_incref(bev);
    c->next = h->conns;
    if (c->next != NULL)
        c->next->prev = c;
    h->conns = c;
    h->nconns++;
    c->refuse = h->nconns > h->max_connections;
    event_active(c->attach_ev, EV_TIMEOUT, 0);
    return bev;
}

int azc__http_conns_init(azc_http *h, azc_err *e)
{
    (void)e;
    /* TLS goes here too: a bufferevent_openssl_socket_new instead of the
     * socket one (never NULL: evhttp would then serve plaintext). */
    evhttp_set_bevcb(h->http, on_accept, h);
    return AZC_OK;
}

void azc__http_conns_free(azc_http *h)
{
    /* evhttp_free has closed every attached connection (on_conn_close);
     * left are the ones accepted but not attached yet. */
    while (h->conns != NULL)
        conn_destroy(h->conns);
    free(h->by_fd);
    h->by_fd = NULL;
    h->nby_fd = 0;
}

azc__http_conn *azc__http_conn_request_begin(azc_http *h, struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    azc__http_conn *c;

    if (fd < 0 || (size_t)fd >= h->nby_fd)
        return NULL;
    c = h->by_fd[fd];
    if (c == NULL || c->evcon != evcon)
        return NULL;
    c->state = CONN_BUSY;
    evtimer_del(c->deadline_ev);
    return c;
}

void azc__http_conn_request_end(azc__http_conn *c)
{
    if (c == NULL || c->closing)
        return;
    c->state = CONN_IDLE;
    /* Bytes of the next request may be in already: they raise no callback. */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        deadline_arm(c);
}

void azc__http_conn_watch(azc__http_conn *c, void (*cb)(azc_http_req *r), azc_http_req *r)
{
    if (c == NULL)
        return;
    c->watch_cb = cb;
    c->watch_req = cb != NULL ? r : NULL;
}

/* evhttp keeps a CONNECT connection open whatever its headers say: close
 * it once the answer is out, and drop whatever the client sent behind it
 * so that it is never read as a request. */
static void on_close_complete(struct evhttp_request *ev, void *arg)
{
    azc__http_conn *c = arg;

    (void)ev;
    if (evbuffer_drain(bufferevent_get_input(c->bev),
                       evbuffer_get_length(bufferevent_get_input(c->bev))) != 0)
        azc_logf(c->h->log, AZC_LOG_WARN, "cannot drop the input of a closing connection");
    /* evhttp sees the end on its next read and frees the connection. */
    if (shutdown(c->fd, SHUT_RDWR) != 0)
        azc_logf(c->h->log, AZC_LOG_WARN, "cannot shut a connection down: %s", strerror(errno));
}

void azc__http_conn_close_after_reply(azc__http_conn *c, struct evhttp_request *ev)
{
    if (c != NULL)
        evhttp_request_set_on_complete_cb(ev, on_close_complete, c);
}

size_t azc_http_connection_count(const azc_http *h)
{
    return h != NULL ? h->nconns : 0;
}
