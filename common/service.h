/*
 * Process wiring every service binary shares: the signal set that only
 * the main thread's sigwait sees, the open-file limit, and event loops run
 * on threads of their own (one per HTTP worker).
 */
#ifndef AZC_SERVICE_H
#define AZC_SERVICE_H

#include <pthread.h>
#include <signal.h>

#include "common/err.h"
#include "common/log.h"

struct event_base;

/*
 * Call first in main, before any thread starts. Fills *set with SIGTERM
 * and SIGINT (and SIGHUP when `hup`) and blocks them, so every thread
 * inherits the mask and only sigwait(set) sees them; ignores SIGPIPE (a
 * write to a departed client must not kill the process); turns on
 * libevent's locking for threads. AZC_ERROR when libevent has no thread
 * support.
 */
int azc_service_signals(sigset_t *set, int hup, azc_err *e) AZC_WARN_UNUSED;

/*
 * Raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit,
 * as nginx's worker_rlimit_nofile does: every waiting long poll and every
 * client connection holds a descriptor, and the usual soft limit (1024)
 * would refuse connections long before memory or CPU run out. Logs the
 * limit in force (info), or why it could not be raised (warning: the
 * service goes on with the old one). Call once in main, before threads.
 */
void azc_service_raise_nofile(azc_log *lg);

/* Runs base's loop on a new thread (*thread). */
int azc_loop_start(struct event_base *base, pthread_t *thread, azc_err *e) AZC_WARN_UNUSED;

/* Asks the loop to exit once its running callback returns (so a request
 * in progress finishes whole), and joins its thread; logs a loop that
 * failed. */
void azc_loop_stop(struct event_base *base, pthread_t thread, azc_log *lg);

#endif
