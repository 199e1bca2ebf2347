/*
 * What the gateway filter's in-process benchmarks share (authz-bench-index:
 * tools/bench/filter-index.c, its --full mode in filter-full.c): the data
 * set of 100,000 users, 10,000 teams and 1,000,000 assignments, its
 * snapshot, the queries, and the timing helpers (filter-data.c).
 */
#ifndef AUTHZ_BENCH_FILTER_H
#define AUTHZ_BENCH_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define NUSERS 100000
#define NTEAMS 10000
#define TEAM_ASG 38     /* 380,000 team assignments */
#define NQ 1000000
#define BATCH 8


typedef struct a_row {
    char perm[24];
    char res[24];
} a_row;

typedef struct data {
    int nteams_of[NUSERS];
    int teams_of[NUSERS][4];
    int ndirect[NUSERS];
    a_row *direct[NUSERS];
    a_row team_asg[NTEAMS][TEAM_ASG];
    size_t nasg;
} data;

typedef struct query {
    char sub[16], act[32], res[32];
} query;

/* xorshift64, one sequence for the whole run (the data set and queries
 * are the same from run to run) */
uint64_t rng(void);
double now_s(void);
int cmp_d(const void *a, const void *b);

/* Owned by the caller (free()); NULL when out of memory. */
data *make_data(void);
/* A new reference: the snapshot of d as authz-server's JSON. */
json_t *make_snapshot(const data *d);
json_t *asg_json(const char *id, const char *ptype, const char *pid, const a_row *a);
/* NQ queries, half for something the user holds; owned by the caller. */
query *make_queries(const data *d, int zipf);

/* --full / --serve (filter-full.c): 0 on success. */
int full_bench(json_t *snap, const query *qs, const char *label, int serve);

#endif
