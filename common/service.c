/* Process wiring shared by the services; see service.h. */
#include "common/service.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>
#include <event2/thread.h>

static void *loop_main(void *arg)
{
    /* A non-NULL result tells azc_loop_stop that the loop failed. */
    return event_base_dispatch(arg) < 0 ? arg : NULL;
}

int azc_service_signals(sigset_t *set, int hup, azc_err *e)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    if (hup)
        sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (evthread_use_pthreads() != 0)
        return azc_err_set(e, AZC_ERROR, "libevent without thread support");
    return AZC_OK;
}

void azc_service_raise_nofile(azc_log *lg)
{
    struct rlimit rl;
    rlim_t before;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        azc_logf(lg, AZC_LOG_WARN, "open-file limit unknown: getrlimit: %s", strerror(errno));
        return;
    }
    before = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (before != rl.rlim_max && setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        azc_logf(lg, AZC_LOG_WARN, "open-file limit stays %llu: raising it to %llu failed: %s",
                 (unsigned long long)before, (unsigned long long)rl.rlim_max, strerror(errno));
        return;
    }
    azc_logf(lg, AZC_LOG_INFO, "open-file limit %llu (was %llu)", (unsigned long long)rl.rlim_cur,
             (unsigned long long)before);
}

int azc_loop_start(struct event_base *base, pthread_t *thread, azc_err *e)
{
    if (pthread_create(thread, NULL, loop_main, base) != 0)
        return azc_err_set(e, AZC_ERROR, "cannot start an event-loop thread");
    return AZC_OK;
}

void azc_loop_stop(struct event_base *base, pthread_t thread, azc_log *lg)
{
    void *failed = NULL;

    event_base_loopexit(base, NULL);
    pthread_join(thread, &failed);
    if (failed != NULL)
        azc_logf(lg, AZC_LOG_ERROR, "an event loop failed");
}
