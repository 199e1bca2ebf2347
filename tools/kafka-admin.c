/*
 * authz-kafka-admin: the two Kafka admin operations the scripts need
 * (tools/local-cluster, the integration tests), done through librdkafka so
 * that neither starts a JVM for them.
 *
 *   authz-kafka-admin wait --bootstrap HOST:PORT [--timeout-ms N]
 *   authz-kafka-admin create-topics --bootstrap HOST:PORT [--partitions N]
 *                     [--replication N] [--timeout-ms N] TOPIC...
 *
 * `wait` polls the cluster metadata until a broker answers. `create-topics`
 * first waits the same way, sends one CreateTopics request for every topic,
 * takes "already exists" as success (so scripts may run it again), and then
 * reads the metadata until every topic is there with the requested number
 * of partitions, each with a leader: only then can a producer use it.
 *
 * Exit status: 0 done, 1 failed (message on stderr), 2 bad usage.
 * Deliberately independent of libauthz-common: it links librdkafka only, so
 * the dev cluster can start even while the rest of the tree does not build.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define KA_PROG "authz-kafka-admin"

enum ka_status {
    KA_OK = 0,
    KA_FAIL = 1,
    KA_USAGE = 2,
};

/* What one topic looks like in the metadata, seen from create-topics. */
enum ka_topic_state {
    KA_TOPIC_READY,   /* requested partitions, each with a leader */
    KA_TOPIC_PENDING, /* not (fully) visible yet: ask again */
    KA_TOPIC_WRONG,   /* exists with another partition count: final */
};

struct ka_opts {
    const char *cmd;       /* "wait" or "create-topics" */
    const char *bootstrap; /* HOST:PORT[,HOST:PORT...] */
    int partitions;
    int replication;
    int timeout_ms;  /* for the whole command */
    const char **topics; /* points into argv; the array itself is owned */
    int ntopics;
};

/* The synopsis, and with `full` what each command does (--help). */
static void ka_usage(FILE *f, int full)
{
    fputs("usage: " KA_PROG " wait --bootstrap HOST:PORT [--timeout-ms N]\n"
          "       " KA_PROG " create-topics --bootstrap HOST:PORT [--partitions N]\n"
          "                         [--replication N] [--timeout-ms N] TOPIC...\n",
          f);
    if (!full)
        return;
    fputs("\n"
          "wait           exit 0 as soon as a broker answers a metadata request,\n"
          "               1 if none did within the timeout (default 30000 ms)\n"
          "create-topics  create the topics (default 1 partition, replication 1);\n"
          "               a topic that already exists with that partition count\n"
          "               is fine; exit 0 once every topic has a leader\n",
          f);
}

static long long ka_now_ms(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return (long long)time(NULL) * 1000; /* cannot happen on Linux */
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds to the deadline, at least 1 so that librdkafka never gets
 * 0 ("don't wait") or a negative value ("wait forever"), at most cap. */
static int ka_left_ms(long long deadline, int cap)
{
    long long left = deadline - ka_now_ms();

    if (left < 1)
        return 1;
    return left > cap ? cap : (int)left;
}

static int ka_parse_int(const char *s, int min, int max, int *out)
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

/*
 * Fills o from argv; o->topics is allocated here and freed by the caller.
 * Returns KA_OK, KA_USAGE after printing the reason, or KA_FAIL when out of
 * memory. "--help" anywhere is reported as o->cmd == "--help".
 */
static enum ka_status ka_parse(int argc, char **argv, struct ka_opts *o)
{
    int i;

    memset(o, 0, sizeof *o);
    o->partitions = 1;
    o->replication = 1;
    o->timeout_ms = 30000;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            o->cmd = "--help";
            return KA_OK;
        }
    }
    if (argc < 2) {
        fprintf(stderr, KA_PROG ": no command given\n");
        return KA_USAGE;
    }
    o->cmd = argv[1];
    if (strcmp(o->cmd, "wait") != 0 && strcmp(o->cmd, "create-topics") != 0) {
        fprintf(stderr, KA_PROG ": unknown command \"%s\"\n", o->cmd);
        return KA_USAGE;
    }
    o->topics = calloc((size_t)argc, sizeof *o->topics);
    if (o->topics == NULL) {
        fprintf(stderr, KA_PROG ": out of memory\n");
        return KA_FAIL;
    }
    for (i = 2; i < argc; i++) {
        const char *a = argv[i], *v, *eq;
        size_t name_len;

        if (strncmp(a, "--", 2) != 0) {
            if (a[0] == '\0') {
                fprintf(stderr, KA_PROG ": empty topic name\n");
                return KA_USAGE;
            }
            o->topics[o->ntopics++] = a;
            continue;
        }
        /* Both "--flag value" and "--flag=value". */
        eq = strchr(a, '=');
        name_len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, KA_PROG ": %s needs a value\n", a);
            return KA_USAGE;
        }
#define KA_IS(flag) (name_len == sizeof(flag) - 1 && strncmp(a, flag, name_len) == 0)
        if (KA_IS("--bootstrap")) {
            if (v[0] == '\0') {
                fprintf(stderr, KA_PROG ": --bootstrap needs HOST:PORT\n");
                return KA_USAGE;
            }
            o->bootstrap = v;
        } else if (KA_IS("--partitions")) {
            if (!ka_parse_int(v, 1, 100000, &o->partitions)) {
                fprintf(stderr, KA_PROG ": --partitions must be 1..100000, not \"%s\"\n", v);
                return KA_USAGE;
            }
        } else if (KA_IS("--replication")) {
            if (!ka_parse_int(v, 1, 1000, &o->replication)) {
                fprintf(stderr, KA_PROG ": --replication must be 1..1000, not \"%s\"\n", v);
                return KA_USAGE;
            }
        } else if (KA_IS("--timeout-ms")) {
            if (!ka_parse_int(v, 1, 3600000, &o->timeout_ms)) {
                fprintf(stderr, KA_PROG ": --timeout-ms must be 1..3600000, not \"%s\"\n", v);
                return KA_USAGE;
            }
        } else {
            fprintf(stderr, KA_PROG ": unknown option \"%.*s\"\n", (int)name_len, a);
            return KA_USAGE;
        }
#undef KA_IS
    }
    if (o->bootstrap == NULL) {
        fprintf(stderr, KA_PROG ": --bootstrap HOST:PORT is required\n");
        return KA_USAGE;
    }
    if (strcmp(o->cmd, "wait") == 0 && o->ntopics > 0) {
        fprintf(stderr, KA_PROG ": wait takes no topic\n");
        return KA_USAGE;
    }
    if (strcmp(o->cmd, "create-topics") == 0 && o->ntopics == 0) {
        fprintf(stderr, KA_PROG ": create-topics needs at least one topic\n");
        return KA_USAGE;
    }
    /* The broker would refuse the whole request for a duplicate. */
    for (i = 0; i < o->ntopics; i++) {
        int k;

        for (k = 0; k < i; k++) {
            if (strcmp(o->topics[i], o->topics[k]) == 0) {
                fprintf(stderr, KA_PROG ": topic %s given twice\n", o->topics[i]);
                return KA_USAGE;
            }
        }
    }
    return KA_OK;
}

static int ka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
    char err[512];

    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, KA_PROG ": cannot set %s=%s: %s\n", key, value, err);
        return 0;
    }
    return 1;
}

/* A client for admin requests and metadata; NULL after a message. */
static rd_kafka_t *ka_client_new(const struct ka_opts *o)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    char err[512];

    if (conf == NULL) {
        fprintf(stderr, KA_PROG ": out of memory\n");
        return NULL;
    }
    /* log_level 0: while the broker is still starting every refused
     * connection would be logged; the outcome is reported below instead.
     * Short reconnect backoffs: we are waiting for exactly that broker.
     * No auto-creation: a metadata request must never create a topic. */
    if (!ka_conf_set(conf, "bootstrap.servers", o->bootstrap) ||
        !ka_conf_set(conf, "log_level", "0") ||
        !ka_conf_set(conf, "reconnect.backoff.ms", "50") ||
        !ka_conf_set(conf, "reconnect.backoff.max.ms", "250") ||
        !ka_conf_set(conf, "allow.auto.create.topics", "false")) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) {
        /* rd_kafka_new frees conf only on success. */
        fprintf(stderr, KA_PROG ": cannot create a Kafka client: %s\n", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Polls the metadata until some broker answers or the deadline passes. */
static enum ka_status ka_wait(rd_kafka_t *rk, const struct ka_opts *o, long long deadline)
{
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR__TIMED_OUT;

    do {
        const struct rd_kafka_metadata *md = NULL;
        int brokers;

        /* Short requests: a request sent before the listener was up must
         * not eat the whole budget. */
        last = rd_kafka_metadata(rk, 0, NULL, &md, ka_left_ms(deadline, 1000));
        if (last == RD_KAFKA_RESP_ERR_NO_ERROR) {
            brokers = md->broker_cnt;
            rd_kafka_metadata_destroy(md);
            if (brokers > 0)
                return KA_OK;
        } else {
            /* Refused connections fail fast: don't spin on them. */
            rd_kafka_poll(rk, ka_left_ms(deadline, 50));
        }
    } while (ka_now_ms() < deadline);
    fprintf(stderr, KA_PROG ": no Kafka broker answered at %s within %d ms (last error: %s)\n",
            o->bootstrap, o->timeout_ms, rd_kafka_err2str(last));
    return KA_FAIL;
}

/* Sends one CreateTopics request for every topic and reports each result. */
static enum ka_status ka_create(rd_kafka_t *rk, const struct ka_opts *o, long long deadline)
{
    rd_kafka_NewTopic_t **nt = NULL;
    rd_kafka_AdminOptions_t *opt = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_CreateTopics_result_t *res;
    const rd_kafka_topic_result_t **tr;
    enum ka_status st = KA_FAIL;
    size_t n, j;
    char err[512];
    int i, made = 0;

    nt = calloc((size_t)o->ntopics, sizeof *nt);
    q = rd_kafka_queue_new(rk);
    opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    if (nt == NULL || q == NULL || opt == NULL) {
        fprintf(stderr, KA_PROG ": out of memory\n");
        goto done;
    }
    /* The operation timeout makes the controller answer only once the
     * topics are created, so the metadata check below rarely waits. */
    if (rd_kafka_AdminOptions_set_request_timeout(opt, ka_left_ms(deadline, INT_MAX), err,
                                                  sizeof err) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_AdminOptions_set_operation_timeout(opt, ka_left_ms(deadline, INT_MAX), err,
                                                    sizeof err) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, KA_PROG ": create-topics: %s\n", err);
        goto done;
    }
    for (i = 0; i < o->ntopics; i++, made++) {
        nt[i] = rd_kafka_NewTopic_new(o->topics[i], o->partitions, o->replication, err,
                                      sizeof err);
        if (nt[i] == NULL) {
            fprintf(stderr, KA_PROG ": topic %s: %s\n", o->topics[i], err);
            goto done;
        }
    }
    rd_kafka_CreateTopics(rk, nt, (size_t)o->ntopics, opt, q);
    ev = rd_kafka_queue_poll(q, ka_left_ms(deadline, INT_MAX));
    if (ev == NULL) {
        fprintf(stderr, KA_PROG ": create-topics: no answer within %d ms\n", o->timeout_ms);
        goto done;
    }
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, KA_PROG ": create-topics: %s\n", rd_kafka_event_error_string(ev));
        goto done;
    }
    res = rd_kafka_event_CreateTopics_result(ev);
    if (res == NULL) {
        fprintf(stderr, KA_PROG ": create-topics: unexpected %s event\n",
                rd_kafka_event_name(ev));
        goto done;
    }
    tr = rd_kafka_CreateTopics_result_topics(res, &n);
    st = KA_OK;
    for (j = 0; j < n; j++) {
        const char *name = rd_kafka_topic_result_name(tr[j]);
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[j]);

        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            printf("created %s\n", name);
        } else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            /* Its partition count is checked with the others below. */
            printf("exists %s\n", name);
        } else {
            const char *msg = rd_kafka_topic_result_error_string(tr[j]);

            fprintf(stderr, KA_PROG ": topic %s: %s\n", name,
                    msg != NULL && msg[0] != '\0' ? msg : rd_kafka_err2str(e));
            st = KA_FAIL;
        }
    }
    if (n != (size_t)o->ntopics) {
        fprintf(stderr, KA_PROG ": create-topics: %zu results for %d topics\n", n,
                o->ntopics);
        st = KA_FAIL;
    }

done:
    rd_kafka_event_destroy(ev); /* all of these accept NULL */
    if (nt != NULL)
        rd_kafka_NewTopic_destroy_array(nt, (size_t)made);
    free(nt);
    if (opt != NULL)
        rd_kafka_AdminOptions_destroy(opt);
    if (q != NULL)
        rd_kafka_queue_destroy(q);
    return st;
}

/* Where topic `name` stands in md; on KA_TOPIC_WRONG/PENDING, why in *why. */
static enum ka_topic_state ka_topic_state(const struct rd_kafka_metadata *md, const char *name,
                                          int partitions, char *why, size_t why_len)
{
    int t, p;

    for (t = 0; t < md->topic_cnt; t++) {
        const struct rd_kafka_metadata_topic *mt = &md->topics[t];

        if (strcmp(mt->topic, name) != 0)
            continue;
        if (mt->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(why, why_len, "%s", rd_kafka_err2str(mt->err));
            return KA_TOPIC_PENDING;
        }
        if (mt->partition_cnt != partitions) {
            snprintf(why, why_len, "exists with %d partitions, not %d", mt->partition_cnt,
                     partitions);
            return KA_TOPIC_WRONG;
        }
        for (p = 0; p < mt->partition_cnt; p++) {
            if (mt->partitions[p].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
                mt->partitions[p].leader < 0) {
                snprintf(why, why_len, "partition %d has no leader yet", mt->partitions[p].id);
                return KA_TOPIC_PENDING;
            }
        }
        return KA_TOPIC_READY;
    }
    snprintf(why, why_len, "not in the cluster metadata");
    return KA_TOPIC_PENDING;
}

/* Reads the metadata until every topic is ready, one is final-wrong, or
 * the deadline passes. */
static enum ka_status ka_verify(rd_kafka_t *rk, const struct ka_opts *o, long long deadline)
{
    char why[256] = "no metadata";
    const char *pending = o->topics[0];

    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e;
        int i, ready = 1;

        e = rd_kafka_metadata(rk, 1, NULL, &md, ka_left_ms(deadline, 2000));
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(why, sizeof why, "metadata request failed: %s", rd_kafka_err2str(e));
            ready = 0;
        } else {
            for (i = 0; i < o->ntopics && ready; i++) {
                switch (ka_topic_state(md, o->topics[i], o->partitions, why, sizeof why)) {
                case KA_TOPIC_READY:
                    break;
                case KA_TOPIC_WRONG:
                    fprintf(stderr, KA_PROG ": topic %s: %s\n", o->topics[i], why);
                    rd_kafka_metadata_destroy(md);
                    return KA_FAIL;
                case KA_TOPIC_PENDING:
                    pending = o->topics[i];
                    ready = 0;
                    break;
                }
            }
            rd_kafka_metadata_destroy(md);
        }
        if (ready)
            return KA_OK;
        if (ka_now_ms() >= deadline)
            break;
        rd_kafka_poll(rk, ka_left_ms(deadline, 100));
    }
    fprintf(stderr, KA_PROG ": topic %s not ready within %d ms: %s\n", pending, o->timeout_ms,
            why);
    return KA_FAIL;
}

int main(int argc, char **argv)
{
    struct ka_opts o;
    enum ka_status st;
    rd_kafka_t *rk;
    long long deadline;

    st = ka_parse(argc, argv, &o);
    if (st == KA_OK && strcmp(o.cmd, "--help") == 0) {
        ka_usage(stdout, 1);
        free(o.topics);
        return KA_OK;
    }
    if (st != KA_OK) {
        if (st == KA_USAGE)
            ka_usage(stderr, 0);
        free(o.topics);
        return st;
    }
    deadline = ka_now_ms() + o.timeout_ms;
    rk = ka_client_new(&o);
    if (rk == NULL) {
        free(o.topics);
        return KA_FAIL;
    }
    st = ka_wait(rk, &o, deadline);
    if (st == KA_OK && strcmp(o.cmd, "create-topics") == 0) {
        st = ka_create(rk, &o, deadline);
        if (st == KA_OK)
            st = ka_verify(rk, &o, deadline);
    }
    rd_kafka_destroy(rk);
    free(o.topics);
    return st;
}
