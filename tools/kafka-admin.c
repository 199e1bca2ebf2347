/*
 * authz-kafka-admin: the few Kafka admin operations the scripts need,
 * through librdkafka, so they start no JVM for them.
 *
 *   authz-kafka-admin wait --bootstrap HOST:PORT [--timeout-ms N]
 *   authz-kafka-admin create-topics --bootstrap HOST:PORT [--partitions 1]
 *                     [--replication 1] [--timeout-ms N] TOPIC...
 *
 * create-topics is idempotent ("already exists" is success as long as the
 * partition count matches) and checks the result through the metadata.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define MAX_TOPICS 64

typedef struct opts {
    const char *cmd;
    const char *bootstrap;
    int partitions;
    int replication;
    int timeout_ms;
    const char *topics[MAX_TOPICS];
    int ntopics;
} opts;

static void usage(FILE *f)
{
    fputs("usage: authz-kafka-admin wait --bootstrap HOST:PORT [--timeout-ms N]\n"
          "       authz-kafka-admin create-topics --bootstrap HOST:PORT [--partitions N]\n"
          "                         [--replication N] [--timeout-ms N] TOPIC...\n",
          f);
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return 0;
    *out = (int)v;
    return 1;
}

static int parse(int argc, char **argv, opts *o)
{
    int i;

    memset(o, 0, sizeof *o);
    o->partitions = 1;
    o->replication = 1;
    o->timeout_ms = 30000;
    if (argc < 2)
        return 0;
    o->cmd = argv[1];
    if (strcmp(o->cmd, "wait") != 0 && strcmp(o->cmd, "create-topics") != 0)
        return 0;
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strncmp(a, "--", 2) != 0) {
            if (o->ntopics == MAX_TOPICS || a[0] == '\0')
                return 0;
            o->topics[o->ntopics++] = a;
            continue;
        }
        if (v == NULL)
            return 0;
        i++;
        if (strcmp(a, "--bootstrap") == 0)
            o->bootstrap = v;
        else if (strcmp(a, "--partitions") == 0) {
            if (!parse_int(v, 1, 10000, &o->partitions))
                return 0;
        } else if (strcmp(a, "--replication") == 0) {
            if (!parse_int(v, 1, 100, &o->replication))
                return 0;
        } else if (strcmp(a, "--timeout-ms") == 0) {
            if (!parse_int(v, 1, 3600000, &o->timeout_ms))
                return 0;
        } else {
            return 0;
        }
    }
    if (o->bootstrap == NULL)
        return 0;
    if (strcmp(o->cmd, "wait") == 0)
        return o->ntopics == 0;
    return o->ntopics > 0;
}

static rd_kafka_t *client(const opts *o)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_t *rk;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->bootstrap, err, sizeof err) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "reconnect.backoff.ms", "50", err, sizeof err) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "200", err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
        fprintf(stderr, "authz-kafka-admin: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) {
        fprintf(stderr, "authz-kafka-admin: %s\n", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Polls the metadata until a broker answers or the deadline passes. */
static int wait_broker(rd_kafka_t *rk, long long deadline)
{
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;

    while (now_ms() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        long long left = deadline - now_ms();

        last = rd_kafka_metadata(rk, 0, NULL, &md, (int)(left < 1000 ? left : 1000));
        if (last == RD_KAFKA_RESP_ERR_NO_ERROR) {
            int brokers = md->broker_cnt;
            rd_kafka_metadata_destroy(md);
            if (brokers > 0)
                return 0;
        }
    }
    fprintf(stderr, "authz-kafka-admin: no broker answered at the deadline (%s)\n",
            rd_kafka_err2str(last));
    return 1;
}

/* 0 when every topic exists with o->partitions partitions. */
static int check_topics(rd_kafka_t *rk, const opts *o, int quiet, long long deadline)
{
    int i, bad = 0;

    for (i = 0; i < o->ntopics; i++) {
        rd_kafka_topic_t *t = rd_kafka_topic_new(rk, o->topics[i], NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err;
        long long left = deadline - now_ms();

        if (t == NULL)
            return 1;
        err = rd_kafka_metadata(rk, 0, t, &md, (int)(left > 100 ? left : 100));
        rd_kafka_topic_destroy(t);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err != 0 ||
            md->topics[0].partition_cnt != o->partitions) {
            if (!quiet)
                fprintf(stderr, "authz-kafka-admin: topic %s: %s\n", o->topics[i],
                        err != 0 ? rd_kafka_err2str(err)
                        : md->topic_cnt != 1 ? "missing"
                        : md->topics[0].err != 0 ? rd_kafka_err2str(md->topics[0].err)
                                                 : "wrong partition count");
            bad = 1;
        }
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
    }
    return bad;
}

static int create_topics(rd_kafka_t *rk, const opts *o, long long deadline)
{
    rd_kafka_NewTopic_t *nt[MAX_TOPICS];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_event_t *ev;
    const rd_kafka_CreateTopics_result_t *res;
    const rd_kafka_topic_result_t **tr;
    size_t n, j;
    char err[512];
    int i, bad = 0;

    for (i = 0; i < o->ntopics; i++) {
        nt[i] = rd_kafka_NewTopic_new(o->topics[i], o->partitions, o->replication, err, sizeof err);
        if (nt[i] == NULL) {
            fprintf(stderr, "authz-kafka-admin: topic %s: %s\n", o->topics[i], err);
            while (i-- > 0)
                rd_kafka_NewTopic_destroy(nt[i]);
            rd_kafka_queue_destroy(q);
            return 1;
        }
    }
    rd_kafka_CreateTopics(rk, nt, (size_t)o->ntopics, NULL, q);
    rd_kafka_NewTopic_destroy_array(nt, (size_t)o->ntopics);
    ev = rd_kafka_queue_poll(q, (int)(deadline - now_ms() > 0 ? deadline - now_ms() : 1));
    rd_kafka_queue_destroy(q);
    if (ev == NULL) {
        fprintf(stderr, "authz-kafka-admin: create-topics timed out\n");
        return 1;
    }
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "authz-kafka-admin: create-topics: %s\n", rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        return 1;
    }
    res = rd_kafka_event_CreateTopics_result(ev);
    tr = rd_kafka_CreateTopics_result_topics(res, &n);
    for (j = 0; j < n; j++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[j]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            printf("created %s\n", rd_kafka_topic_result_name(tr[j]));
        else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            printf("exists %s\n", rd_kafka_topic_result_name(tr[j]));
        else {
            fprintf(stderr, "authz-kafka-admin: topic %s: %s\n", rd_kafka_topic_result_name(tr[j]),
                    rd_kafka_topic_result_error_string(tr[j]));
            bad = 1;
        }
    }
    rd_kafka_event_destroy(ev);
    if (bad)
        return 1;
    /* The metadata may lag the controller by a moment: poll it. */
    while (check_topics(rk, o, 1, deadline) != 0) {
        if (now_ms() >= deadline)
            return check_topics(rk, o, 0, now_ms() + 1000);
        rd_kafka_poll(rk, 50);
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    rd_kafka_t *rk;
    long long deadline;
    int rc;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (!parse(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    deadline = now_ms() + o.timeout_ms;
    rk = client(&o);
    if (rk == NULL)
        return 1;
    rc = wait_broker(rk, deadline);
    if (rc == 0 && strcmp(o.cmd, "create-topics") == 0)
        rc = create_topics(rk, &o, deadline);
    rd_kafka_destroy(rk);
    return rc;
}
