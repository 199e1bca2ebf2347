/* Shared fixture of the HTTP helper's socket tests; see http_test_util.h. */
#include "http_test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void response_clear(struct response *resp)
{
    free(resp->body);
    json_decref(resp->json);
    memset(resp, 0, sizeof *resp);
}

/* ---- event loop driving ----------------------------------------------- */

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Runs the loop until *flag is non-zero or the deadline passes; returns
 * *flag. */
int run_until(struct event_base *base, const int *flag, double secs)
{
    struct timeval tv = { (time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6) };
    int expired = 0;
    struct event *t = evtimer_new(base, on_deadline, &expired);

    assert_non_null(t);
    assert_int_equal(evtimer_add(t, &tv), 0);
    while (!*flag && !expired)
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    event_free(t);
    return *flag;
}

static void on_counter_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

void run_until_count(struct event_base *base, const int *counter, int want)
{
    struct timeval tv = { (time_t)DEADLINE_SECS, 0 };
    int expired = 0;
    struct event *t = evtimer_new(base, on_counter_deadline, &expired);

    assert_non_null(t);
    assert_int_equal(evtimer_add(t, &tv), 0);
    while (*counter < want && !expired)
        assert_true(event_base_loop(base, EVLOOP_ONCE) >= 0);
    event_free(t);
    assert_true(*counter >= want);
}

struct fixture *fixture_new(const azc_http_route *routes, size_t n, const azc_http_options *opts)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    azc_http_options o = { 0 };
    azc_err e;

    assert_non_null(fx);
    fx->base = event_base_new();
    assert_non_null(fx->base);
    fx->logf = open_memstream(&fx->logbuf, &fx->loglen);
    assert_non_null(fx->logf);
    fx->log = azc_log_new("test", AZC_LOG_DEBUG, fx->logf);
    fx->m = azc_metrics_new();
    assert_non_null(fx->log);
    assert_non_null(fx->m);
    if (opts != NULL) {
        o = *opts;
    } else {
        o.max_body_bytes = 4096;
        o.max_header_bytes = 8192;
        o.timeout_secs = 5;
    }
    o.service = "test";
    fx->h = azc_http_new(fx->base, &o, fx->log, fx->m, &e);
    assert_non_null(fx->h);
    assert_int_equal(azc_http_add_routes(fx->h, routes, n, fx), AZC_OK);
    assert_int_equal(azc_http_bound_port(fx->h), -1);
    assert_int_equal(azc_http_bind(fx->h, "127.0.0.1", 0, &e), AZC_OK);
    fx->port = azc_http_bound_port(fx->h);
    assert_true(fx->port > 0);
    return fx;
}

void fixture_free(struct fixture *fx)
{
    azc_http_free(fx->h);
    if (fx->timer != NULL)
        event_free(fx->timer);
    azc_metrics_free(fx->m);
    azc_log_free(fx->log);
    fclose(fx->logf);
    free(fx->logbuf);
    event_base_free(fx->base);
    free(fx);
}

/* The access log so far, NUL-terminated (borrowed). */
const char *log_text(struct fixture *fx)
{
    fflush(fx->logf);
    return fx->logbuf != NULL ? fx->logbuf : "";
}

/* ---- evhttp client ---------------------------------------------------- */

static void copy_header(struct evkeyvalq *hs, const char *name, char *out, size_t len)
{
    const char *v = evhttp_find_header(hs, name);

    snprintf(out, len, "%s", v != NULL ? v : "");
}

static void on_response(struct evhttp_request *req, void *arg)
{
    struct response *resp = arg;
    struct evkeyvalq *hs;
    struct evbuffer *in;

    resp->done = 1;
    if (req == NULL)
        return;
    resp->status = evhttp_request_get_response_code(req);
    hs = evhttp_request_get_input_headers(req);
    copy_header(hs, "Content-Type", resp->content_type, sizeof resp->content_type);
    copy_header(hs, "X-Request-Id", resp->request_id, sizeof resp->request_id);
    copy_header(hs, "Allow", resp->allow, sizeof resp->allow);
    copy_header(hs, "Content-Length", resp->content_length, sizeof resp->content_length);
    in = evhttp_request_get_input_buffer(req);
    resp->body_len = evbuffer_get_length(in);
    resp->body = malloc(resp->body_len + 1);
    assert_non_null(resp->body);
    assert_int_equal(evbuffer_remove(in, resp->body, resp->body_len), (int)resp->body_len);
    resp->body[resp->body_len] = '\0';
    resp->json = json_loads(resp->body, JSON_DECODE_ANY, NULL);
}

/* One request on a fresh connection; returns when the response is in. */
void request_full(struct fixture *fx, enum evhttp_cmd_type method, const char *uri,
                         const char *content_type, const char *body, size_t body_len,
                         const char *request_id, struct response *resp)
{
    struct evhttp_connection *conn;
    struct evhttp_request *req;
    struct evkeyvalq *hs;

    memset(resp, 0, sizeof *resp);
    conn = evhttp_connection_base_new(fx->base, NULL, "127.0.0.1", (unsigned short)fx->port);
    assert_non_null(conn);
    req = evhttp_request_new(on_response, resp);
    assert_non_null(req);
    hs = evhttp_request_get_output_headers(req);
    assert_int_equal(evhttp_add_header(hs, "Host", "localhost"), 0);
    if (content_type != NULL)
        assert_int_equal(evhttp_add_header(hs, "Content-Type", content_type), 0);
    if (request_id != NULL)
        assert_int_equal(evhttp_add_header(hs, "X-Request-Id", request_id), 0);
    if (body != NULL)
        assert_int_equal(evbuffer_add(evhttp_request_get_output_buffer(req), body, body_len), 0);
    assert_int_equal(evhttp_make_request(conn, req, method, uri), 0);
    assert_true(run_until(fx->base, &resp->done, DEADLINE_SECS));
    evhttp_connection_free(conn);
}

void request(struct fixture *fx, enum evhttp_cmd_type method, const char *uri,
                    const char *content_type, const char *body, struct response *resp)
{
    request_full(fx, method, uri, content_type, body, body != NULL ? strlen(body) : 0, NULL,
                 resp);
}

void assert_error(const struct response *resp, int status, const char *code)
{
    json_t *err;

    assert_int_equal(resp->status, status);
    assert_string_equal(resp->content_type, "application/json");
    assert_non_null(resp->json);
    err = json_object_get(resp->json, "error");
    assert_true(json_is_object(err));
    assert_int_equal(json_object_size(err), 2);
    assert_string_equal(json_string_value(json_object_get(err, "code")), code);
    assert_true(json_is_string(json_object_get(err, "message")));
}

const char *jstr(const struct response *resp, const char *key)
{
    return json_string_value(json_object_get(resp->json, key));
}

/* ---- raw socket client ------------------------------------------------ */

int raw_connect(struct fixture *fx)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)fx->port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Loopback connects complete from the listen backlog, before the
     * server has run. */
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

void raw_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

struct raw_reader {
    struct evbuffer *in;
    int done;
};

static void on_raw_readable(evutil_socket_t fd, short what, void *arg)
{
    struct raw_reader *rr = arg;
    int n;
    (void)what;

    n = evbuffer_read(rr->in, fd, 4096);
    if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
        rr->done = 1;
}

/* Reads until the peer closes (requests are sent with Connection: close);
 * returns the whole response as a string (caller frees). */
char *raw_read_all(struct fixture *fx, int fd)
{
    return raw_read_all_within(fx, fd, DEADLINE_SECS);
}

char *raw_read_all_within(struct fixture *fx, int fd, double secs)
{
    struct raw_reader rr = { evbuffer_new(), 0 };
    struct event *ev;
    size_t n;
    char *s;

    assert_non_null(rr.in);
    assert_int_equal(evutil_make_socket_nonblocking(fd), 0);
    ev = event_new(fx->base, fd, EV_READ | EV_PERSIST, on_raw_readable, &rr);
    assert_non_null(ev);
    assert_int_equal(event_add(ev, NULL), 0);
    assert_true(run_until(fx->base, &rr.done, secs));
    event_free(ev);
    n = evbuffer_get_length(rr.in);
    s = malloc(n + 1);
    assert_non_null(s);
    assert_int_equal(evbuffer_remove(rr.in, s, n), (int)n);
    s[n] = '\0';
    evbuffer_free(rr.in);
    return s;
}

/* Sends `req` on a new connection and returns the raw response. */
char *raw_exchange(struct fixture *fx, const char *req, size_t len)
{
    int fd = raw_connect(fx);
    char *resp;

    raw_send(fd, req, len);
    resp = raw_read_all(fx, fd);
    close(fd);
    return resp;
}
