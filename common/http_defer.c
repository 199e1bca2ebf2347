/*
 * Deferred requests (long polls) and the disconnect watch.
 *
 * Once evhttp has read a request it stops reading the socket, so it never
 * notices a client that leaves while the request waits (libevent issue
 * #666). We watch the fd with a separate event for EV_READ (plus
 * EV_CLOSED where the backend reports it), and on a wake-up peek at the
 * socket: EOF or an error means the client is gone. EV_READ is needed
 * because epoll reports a reset as EPOLLERR, which libevent turns into
 * EV_READ|EV_WRITE, never EV_CLOSED; an EV_CLOSED-only watch would miss it
 * and spin on the level-triggered error. The connection's close hook
 * (http_conn.c) is a safety net for any other path on which evhttp frees
 * the connection first.
 */
#include "common/http_internal.h"

#include <errno.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

void azc__http_unwatch(azc_http_req *r)
{
    if (r->peer_ev != NULL) {
        event_free(r->peer_ev);
        r->peer_ev = NULL;
    }
    if (!r->watched)
        return;
    azc__http_conn_watch(r->conn, NULL, NULL);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        r->h->pending = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->watched = 0;
}

void azc__http_abandon(azc_http_req *r)
{
    r->closing = 1;
    azc__http_unwatch(r);
    if (r->on_close != NULL)
        r->on_close(r, r->close_arg);
    azc__http_access_record(r, AZC__HTTP_STATUS_CLIENT_CLOSED);
    azc__http_req_free(r);
}

static void on_peer_event(evutil_socket_t fd, short what, void *arg)
{
    azc_http_req *r = arg;
    struct evhttp_connection *evcon = r->evcon;

    if (!(what & EV_CLOSED)) {
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

        if (n > 0) {
            /* A pipelined request: the client is alive, and watching
             * further would wake us for the same bytes again and again. */
            event_free(r->peer_ev);
            r->peer_ev = NULL;
            return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (event_add(r->peer_ev, NULL) != 0) {
                azc_log_reqf(r->h->log, AZC_LOG_WARN, r->id,
                             "cannot re-arm the disconnect watch of a deferred request");
                event_free(r->peer_ev);
                r->peer_ev = NULL;
            }
            return;
        }
    }
    azc__http_abandon(r);
    evhttp_connection_free(evcon);
}

/* evhttp is freeing the connection of a watched request by itself. */
static void on_conn_closed(azc_http_req *r)
{
    struct evhttp_request *ev = r->ev;
    /* Detached from its connection (a read or write error while the user
     * owned it), evhttp no longer frees the request: we must. */
    int detached = evhttp_request_get_connection(ev) == NULL;

    azc__http_abandon(r);
    if (detached)
        evhttp_request_free(ev);
}

int azc_http_req_defer(azc_http_req *r, azc_http_close_cb on_close, void *arg)
{
    struct bufferevent *bev;
    evutil_socket_t fd;

    if (r->replied || r->closing)
        return AZC_ECONFLICT;
    r->on_close = on_close;
    r->close_arg = arg;
    if (r->deferred)
        return AZC_OK;
    bev = evhttp_connection_get_bufferevent(r->evcon);
    fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    if (fd < 0 || r->conn == NULL)
        return AZC_ERROR;
    /* Not persistent: each wake-up decides whether to watch on. */
    r->peer_ev = event_new(r->h->base, fd, r->h->peer_events, on_peer_event, r);
    if (r->peer_ev == NULL)
        return AZC_ERROR;
    if (event_add(r->peer_ev, NULL) != 0) {
        event_free(r->peer_ev);
        r->peer_ev = NULL;
        return AZC_ERROR;
    }
    azc__http_conn_watch(r->conn, on_conn_closed, r);
    r->next = r->h->pending;
    if (r->next != NULL)
        r->next->prev = r;
    r->h->pending = r;
    r->watched = 1;
    r->deferred = 1;
    return AZC_OK;
}
