/*
 * The consumer's status for readers; see status.h.
 */
#include "authz/status.h"

#include <inttypes.h>
#include <pthread.h>
#include <time.h>

#include "common/text.h"

int64_t az_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void az_status_get(az_shared *sh, az_consumer_status *out)
{
    pthread_mutex_lock(&sh->status_lock);
    *out = sh->status;
    pthread_mutex_unlock(&sh->status_lock);
}

void az_consumer_status_get(az_shared *sh, az_consumer_status *out)
{
    int64_t now = az_mono_ms(), stall = sh->set.stall_ms;

    az_status_get(sh, out);
    out->stall_reason[0] = '\0';
    out->last_message_age_ms = out->last_message_ms > 0 ? now - out->last_message_ms : -1;
    if (out->state == AZ_CONSUMER_RUNNING) {
        if (out->rollback_since_ms > 0 && now - out->rollback_since_ms > stall) {
            out->state = AZ_CONSUMER_STALLED;
            azc_text_fmt(out->stall_reason, sizeof out->stall_reason,
                     "batches keep rolling back (for %" PRId64 " ms): %s",
                     now - out->rollback_since_ms, out->rollback_error);
        } else if (out->last_message_age_ms > stall) {
            out->state = AZ_CONSUMER_STALLED;
            azc_text_fmt(out->stall_reason, sizeof out->stall_reason,
                     "no message from kafka for %" PRId64 " ms%s%s", out->last_message_age_ms,
                     out->kafka_error[0] != '\0' ? "; last kafka error: " : "", out->kafka_error);
        }
    }
    if (azc_metric_set(sh->m_stalled, NULL, out->state == AZ_CONSUMER_STALLED ? 1 : 0) != AZC_OK)
        azc_logf(sh->log, AZC_LOG_WARN, "cannot set authz_consumer_stalled");
}