/*
 * Unit tests: common/pg_link.c never blocks its loop while it connects.
 *
 * No PostgreSQL needed: a listening socket that is never accepted from
 * plays a server that takes the connection and never answers (a hung or
 * blackholed database), and a closed port one that refuses it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/pg_link.h"

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A listening socket nobody accepts from; *port gets its port. */
static int blackhole(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Connections that reached the socket so far (each is one attempt). */
static int drain_accepts(int fd)
{
    int n = 0, c;

    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    while ((c = accept(fd, NULL, NULL)) >= 0) {
        close(c);
        n++;
    }
    return n;
}

static void url_for(int port, char *buf, size_t len)
{
    snprintf(buf, len, "postgresql://nobody@127.0.0.1:%d/none?sslmode=disable", port);
}

/* Measures the longest gap between 10 ms ticks: a loop that blocks shows. */
typedef struct ticker {
    struct event *ev;
    long long last, worst;
    int ticks;
} ticker;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    ticker *t = arg;
    long long now = mono_ms();

    (void)fd;
    (void)what;
    if (t->last != 0 && now - t->last > t->worst)
        t->worst = now - t->last;
    t->last = now;
    t->ticks++;
}

static void run_for(struct event_base *base, int ms, ticker *t)
{
    struct timeval tick = { 0, 10000 }, stop = { ms / 1000, (ms % 1000) * 1000 };

    t->ev = event_new(base, -1, EV_PERSIST, on_tick, t);
    assert_non_null(t->ev);
    assert_int_equal(event_add(t->ev, &tick), 0);
    assert_int_equal(event_base_loopexit(base, &stop), 0);
    assert_int_equal(event_base_dispatch(base), 0);
    event_free(t->ev);
}

typedef struct seen {
    int calls, last_up;
    long long at;
} seen;

static void on_state(azc_pg_link *l, int up, void *arg)
{
    seen *s = arg;

    (void)l;
    s->calls++;
    s->last_up = up;
    s->at = mono_ms();
}

/* A server that accepts and never answers: the link returns at once, is
 * down meanwhile, gives up each attempt at its deadline and tries again,
 * and the loop never stalls. */
static void test_blackhole_never_blocks_and_retries(void **state)
{
    struct event_base *base = event_base_new();
    azc_log *lg = azc_log_new("test", AZC_LOG_ERROR, stderr);
    azc_pg_link_options o;
    azc_pg_link *l;
    ticker t;
    char url[128];
    long long t0;
    int port, fd = blackhole(&port);
    azc_err e;
    (void)state;

    url_for(port, url, sizeof url);
    memset(&o, 0, sizeof o);
    memset(&t, 0, sizeof t);
    o.connect_timeout_ms = 200;
    t0 = mono_ms();
    l = azc_pg_link_new(base, url, &o, lg, &e);
    assert_non_null(l);
    assert_true(mono_ms() - t0 < 50);
    assert_null(azc_pg_link_conn(l));
    assert_false(azc_pg_link_up(l));
    run_for(base, 1200, &t);
    assert_null(azc_pg_link_conn(l));
    assert_false(azc_pg_link_up(l));
    azc_pg_link_lost(l);                     /* down already: nothing to do */
    assert_true(t.ticks > 60);
    assert_true(t.worst < 100);
    /* 200 ms per attempt plus at most 50-400 ms of backoff: 2 to 6. */
    assert_in_range(drain_accepts(fd), 2, 8);
    azc_pg_link_free(l);                     /* mid-attempt: no leak, no callback */
    azc_pg_link_free(NULL);
    close(fd);
    azc_log_free(lg);
    event_base_free(base);
}

/* A `once` link reports a failed attempt through its callback, from the
 * loop (never from inside _new), after the attempt's deadline. */
static void test_once_reports_failure_after_deadline(void **state)
{
    struct event_base *base = event_base_new();
    azc_log *lg = azc_log_new("test", AZC_LOG_ERROR, stderr);
    azc_pg_link_options o;
    azc_pg_link *l;
    ticker t;
    seen s;
    char url[128];
    long long t0;
    int port, fd = blackhole(&port);
    azc_err e;
    (void)state;

    url_for(port, url, sizeof url);
    memset(&o, 0, sizeof o);
    memset(&t, 0, sizeof t);
    memset(&s, 0, sizeof s);
    o.connect_timeout_ms = 300;
    o.once = 1;
    o.on_state = on_state;
    o.arg = &s;
    t0 = mono_ms();
    l = azc_pg_link_new(base, url, &o, lg, &e);
    assert_non_null(l);
    assert_int_equal(s.calls, 0);
    run_for(base, 800, &t);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.last_up, 0);
    assert_in_range(s.at - t0, 250, 700);
    assert_true(t.worst < 100);
    assert_int_equal(drain_accepts(fd), 1);  /* once: no second attempt */
    assert_null(azc_pg_link_conn(l));
    azc_pg_link_free(l);
    close(fd);
    azc_log_free(lg);
    event_base_free(base);
}

/* A refused connection fails fast. */
static void test_refused_fails_fast(void **state)
{
    struct event_base *base = event_base_new();
    azc_log *lg = azc_log_new("test", AZC_LOG_ERROR, stderr);
    azc_pg_link_options o;
    azc_pg_link *l;
    ticker t;
    seen s;
    char url[128];
    long long t0;
    int port, fd = blackhole(&port);
    azc_err e;
    (void)state;

    close(fd);                               /* nothing listens there now */
    url_for(port, url, sizeof url);
    memset(&o, 0, sizeof o);
    memset(&t, 0, sizeof t);
    memset(&s, 0, sizeof s);
    o.once = 1;
    o.on_state = on_state;
    o.arg = &s;
    t0 = mono_ms();
    l = azc_pg_link_new(base, url, &o, lg, &e);
    assert_non_null(l);
    run_for(base, 300, &t);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.last_up, 0);
    assert_true(s.at - t0 < 200);
    azc_pg_link_free(l);
    azc_log_free(lg);
    event_base_free(base);
}

static void test_bad_arguments(void **state)
{
    struct event_base *base = event_base_new();
    azc_err e;
    (void)state;

    assert_null(azc_pg_link_new(base, "", NULL, NULL, &e));
    assert_int_equal(e.code, AZC_EINVAL);
    assert_null(azc_pg_link_new(base, NULL, NULL, NULL, &e));
    assert_null(azc_pg_link_conn(NULL));
    assert_false(azc_pg_link_up(NULL));
    azc_pg_link_lost(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blackhole_never_blocks_and_retries),
        cmocka_unit_test(test_once_reports_failure_after_deadline),
        cmocka_unit_test(test_refused_fails_fast),
        cmocka_unit_test(test_bad_arguments),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
