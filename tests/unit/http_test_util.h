/*
 * Shared fixture of the HTTP helper's socket tests (test_http*.c): a
 * server on 127.0.0.1 port 0 on its own event_base, driven from the same
 * base with evhttp's client, or with raw sockets for requests evhttp's
 * client cannot send. Nothing sleeps: the loop runs until a condition
 * holds or a deadline passes, and a missed deadline fails the test.
 */
#ifndef AZC_TEST_HTTP_UTIL_H
#define AZC_TEST_HTTP_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/http.h"

#define DEADLINE_SECS 5.0

struct fixture {
    struct event_base *base;
    azc_http *h;
    azc_metrics *m;
    azc_log *log;
    FILE *logf;
    char *logbuf;
    size_t loglen;
    int port;
    struct event *timer;        /* answers fx->deferred */
    azc_http_req *deferred;
    int handler_calls;
    int closed;                 /* on_close calls */
    int add_header_rc[3];
    int ready_rc;
    int chunks;                 /* streams: lines to send */
    int sent;
    int drains;
    int ended;
    int auth_calls;
};

struct response {
    int done;
    int status;                 /* 0: no response */
    char *body;                 /* NUL-terminated copy */
    size_t body_len;
    char content_type[128];
    char request_id[128];
    char allow[128];
    char content_length[32];
    json_t *json;               /* body parsed, when it is JSON */
};

void response_clear(struct response *resp);
/* Runs the loop until *flag is non-zero or `secs` pass; returns *flag. */
int run_until(struct event_base *base, const int *flag, double secs);
/* Runs the loop until *counter >= want, failing the test after
 * DEADLINE_SECS. */
void run_until_count(struct event_base *base, const int *counter, int want);

/* A fixture serving routes (their arg is the fixture) with small limits:
 * bodies 4096, headers 8192, idle timeout 5 s; `opts` NULL for those. */
struct fixture *fixture_new(const azc_http_route *routes, size_t n, const azc_http_options *opts);
void fixture_free(struct fixture *fx);
/* The server log so far, NUL-terminated (borrowed). */
const char *log_text(struct fixture *fx);

/* One request on a fresh connection; returns when the response is in. */
void request_full(struct fixture *fx, enum evhttp_cmd_type method, const char *uri,
                  const char *content_type, const char *body, size_t body_len,
                  const char *request_id, struct response *resp);
void request(struct fixture *fx, enum evhttp_cmd_type method, const char *uri,
             const char *content_type, const char *body, struct response *resp);
void assert_error(const struct response *resp, int status, const char *code);
const char *jstr(const struct response *resp, const char *key);

int raw_connect(struct fixture *fx);
void raw_send(int fd, const char *data, size_t len);
/* Reads until the peer closes; the whole response as a string (caller
 * frees). Fails the test if the peer has not closed within `secs`. */
char *raw_read_all_within(struct fixture *fx, int fd, double secs);
char *raw_read_all(struct fixture *fx, int fd);
/* Sends `req` on a new connection and returns the raw response. */
char *raw_exchange(struct fixture *fx, const char *req, size_t len);

#endif
