/*
 * Hybrid logical clock; see hlc.h for the contract.
 *
 * With both fields packed into one integer, "same millisecond, counter + 1"
 * and "counter full, next millisecond" are the same operation: last + 1.
 * So now() is max(wall << 16, last + 1).
 */
#include "common/hlc.h"

#include <stdlib.h>
#include <time.h>

struct azc_hlc {
    azc_hlc_t last;
    azc_wall_clock_fn wall;
    void *wall_arg;
    uint64_t max_drift_ms;
};

uint64_t azc_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t real_wall(void *arg)
{
    (void)arg;
    return azc_wall_ms();
}

azc_hlc *azc_hlc_new(azc_wall_clock_fn wall, void *arg, uint64_t max_drift_ms)
{
    azc_hlc *h = calloc(1, sizeof *h);

    if (h == NULL)
        return NULL;
    h->wall = wall != NULL ? wall : real_wall;
    h->wall_arg = arg;
    h->max_drift_ms = max_drift_ms;
    return h;
}

void azc_hlc_free(azc_hlc *h)
{
    free(h);
}

void azc_hlc_restore(azc_hlc *h, azc_hlc_t floor)
{
    if (floor > h->last)
        h->last = floor;
}

static azc_hlc_t wall_hlc(azc_hlc *h)
{
    uint64_t ms = h->wall(h->wall_arg);

    if (ms > AZC_HLC_MAX_MS)
        ms = AZC_HLC_MAX_MS;
    return AZC_HLC_MAKE(ms, 0);
}

azc_hlc_t azc_hlc_now(azc_hlc *h)
{
    azc_hlc_t w = wall_hlc(h);

    h->last = w > h->last ? w : h->last + 1;
    return h->last;
}

int azc_hlc_update(azc_hlc *h, azc_hlc_t remote, azc_hlc_t *out, azc_err *e)
{
    azc_hlc_t w = wall_hlc(h);
    azc_hlc_t base;

    if (AZC_HLC_MS(remote) > AZC_HLC_MS(w) + h->max_drift_ms)
        return azc_err_set(e, AZC_EINVAL,
                           "received hlc is %llu ms ahead of the local clock (limit %llu ms)",
                           (unsigned long long)(AZC_HLC_MS(remote) - AZC_HLC_MS(w)),
                           (unsigned long long)h->max_drift_ms);
    base = remote > h->last ? remote : h->last;
    h->last = w > base ? w : base + 1;
    *out = h->last;
    return AZC_OK;
}

azc_hlc_t azc_hlc_last(const azc_hlc *h)
{
    return h->last;
}
