/*
 * The stream applier (applier.h): one job slot, a mutex and two
 * condition variables; the caller hands a job over and sleeps until the
 * thread reports it done. Two context switches a line (a line carries up
 * to `limit` rows), against a malloc arena of the index's own.
 */
#include "gateway-filter/applier.h"

#include <pthread.h>
#include <stdlib.h>

struct af_applier {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t job_ready, job_done;
    int has_job, done, stop;
    /* The job in hand. */
    af_index *ix;
    const json_t *answer;
    azc_err *e;
    int rc;
};

static void *applier_main(void *arg)
{
    af_applier *a = arg;

    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->has_job && !a->stop)
            pthread_cond_wait(&a->job_ready, &a->mu);
        if (a->stop)
            break;
        pthread_mutex_unlock(&a->mu);
        /* The caller waits, holding nothing that we touch but the job. */
        a->rc = af_index_apply(a->ix, a->answer, a->e);
        pthread_mutex_lock(&a->mu);
        a->has_job = 0;
        a->done = 1;
        pthread_cond_signal(&a->job_done);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

af_applier *af_applier_new(void)
{
    af_applier *a = calloc(1, sizeof *a);
    int inited = 0;

    if (a == NULL)
        return NULL;
    /* Unwound in one place, in reverse: inited counts what stands. */
    if (pthread_mutex_init(&a->mu, NULL) != 0)
        goto fail;
    inited++;
    if (pthread_cond_init(&a->job_ready, NULL) != 0)
        goto fail;
    inited++;
    if (pthread_cond_init(&a->job_done, NULL) != 0)
        goto fail;
    inited++;
    if (pthread_create(&a->thread, NULL, applier_main, a) != 0)
        goto fail;
    return a;
fail:
    if (inited > 2)
        pthread_cond_destroy(&a->job_done);
    if (inited > 1)
        pthread_cond_destroy(&a->job_ready);
    if (inited > 0)
        pthread_mutex_destroy(&a->mu);
    free(a);
    return NULL;
}

int af_applier_apply(af_applier *a, af_index *ix, const json_t *answer, azc_err *e)
{
    int rc;

    if (a == NULL)
        return af_index_apply(ix, answer, e);
    pthread_mutex_lock(&a->mu);
    a->ix = ix;
    a->answer = answer;
    a->e = e;
    a->done = 0;
    a->has_job = 1;
    pthread_cond_signal(&a->job_ready);
    while (!a->done)
        pthread_cond_wait(&a->job_done, &a->mu);
    rc = a->rc;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void af_applier_free(af_applier *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_signal(&a->job_ready);
    pthread_mutex_unlock(&a->mu);
    (void)pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->job_done);
    pthread_cond_destroy(&a->job_ready);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
