/*
 * `authzctl status`: every region's authz-server status (consumer,
 * watermarks, lag, staleness and silence per origin; authz/api.c) and its
 * replicator's peers (replicator/status.c), as three tables or one JSON
 * document. A region that does not answer is shown as unreachable and
 * makes the exit status 1; the others are still shown.
 */
#include <string.h>

#include "tools/authzctl/ctl.h"
#include "tools/authzctl/table.h"

#define N(a) (sizeof a / sizeof a[0])

static const char *const ORIGIN_HDR[] = { "REGION", "ORIGIN", "APPLIED_SEQ", "APPLIED", "KNOWN",
                                          "LAG_MS", "STALENESS_MS", "SILENCE_MS", "SOURCE" };
static const char *const REGION_HDR[] = { "REGION", "CONSUMER", "OFFSET", "DEAD_LETTERS",
                                          "ERROR" };
static const char *const PEER_HDR[] = { "REGION", "PEER", "STATE", "MODE", "CURSOR", "LAST_OK_S",
                                        "ERROR" };

static int status_tables(const char *region, const json_t *az, const json_t *rp,
                         ctl_table *regions, ctl_table *origins, ctl_table *peers)
{
    const json_t *cons = json_object_get(az, "consumer"), *o, *p;
    const char *name;
    char b[8][128];
    int bad = 0;

    if (az != NULL) {
        const char *cells[5] = { region, ctl_cell(json_object_get(cons, "state"), b[0], 128),
                                 ctl_cell(json_object_get(cons, "next_offset"), b[1], 128),
                                 ctl_cell(json_object_get(az, "dead_letters"), b[2], 128),
                                 ctl_cell(json_object_get(cons, "error"), b[3], 128) };

        bad |= ctl_table_add(regions, cells);
        json_object_foreach((json_t *)json_object_get(az, "origins"), name, o) {
            uint64_t applied = (uint64_t)json_integer_value(json_object_get(o, "applied_hlc"));
            uint64_t known = (uint64_t)json_integer_value(json_object_get(o, "known_hlc"));
            const char *row[9] = { region, name,
                                   ctl_cell(json_object_get(o, "applied_seq"), b[0], 128),
                                   ctl_hlc_time(applied, b[1], 128), ctl_hlc_time(known, b[2], 128),
                                   ctl_cell(json_object_get(o, "lag_ms"), b[3], 128),
                                   ctl_cell(json_object_get(o, "staleness_ms"), b[4], 128),
                                   ctl_cell(json_object_get(o, "silence_ms"), b[5], 128),
                                   ctl_cell(json_object_get(o, "source"), b[6], 128) };

            if (json_is_true(json_object_get(o, "silent"))) {
                snprintf(b[7], 128, "%s (silent)", row[7]);
                row[7] = b[7];
            }
            bad |= ctl_table_add(origins, row);
        }
    }
    json_object_foreach((json_t *)json_object_get(rp, "peers"), name, p) {
        const json_t *age = json_object_get(p, "last_success_age_seconds");
        const char *row[7] = { region, name, ctl_cell(json_object_get(p, "state"), b[0], 128),
                               ctl_cell(json_object_get(p, "mode"), b[1], 128),
                               ctl_cell(json_object_get(p, "cursor"), b[2], 128), "-",
                               ctl_cell(json_object_get(p, "last_error"), b[3], 128) };

        if (json_is_number(age)) {
            snprintf(b[4], 128, "%.1f", json_number_value(age));
            row[5] = b[4];
        }
        if (row[6][0] == '\0')
            row[6] = "-";
        bad |= ctl_table_add(peers, row);
    }
    return bad ? -1 : 0;
}

static int cmd_status(ctl *c)
{
    ctl_table *regions = ctl_table_new(REGION_HDR, N(REGION_HDR));
    ctl_table *origins = ctl_table_new(ORIGIN_HDR, N(ORIGIN_HDR));
    ctl_table *peers = ctl_table_new(PEER_HDR, N(PEER_HDR));
    json_t *all = json_object();
    int rc = CTL_OK;
    size_t i;

    if (regions == NULL || origins == NULL || peers == NULL || all == NULL) {
        rc = ctl_fail(c, CTL_FAIL, "out of memory");
        goto out;
    }
    if (c->nregions == 0) {
        rc = ctl_fail(c, CTL_USAGE, "no regions: pass --regions us,eu,... (or set AUTHZ_REGIONS, "
                                    "as tools/local-cluster env does)");
        goto out;
    }
    for (i = 0; i < c->nregions; i++) {
        const char *r = c->regions[i];
        ctl_target az_t, rp_t;
        json_t *az = NULL, *rp = NULL;
        char name[96];
        int r1, have_rp;

        if ((r1 = ctl_target_get(c, "AUTHZ", "authz-server", NULL, r, &az_t)) != CTL_OK) {
            rc = r1;
            continue;
        }
        if (ctl_call(c, &az_t, "GET", "/v1/status", NULL, NULL, 0, &az, NULL) != CTL_OK) {
            const char *cells[5] = { r, "unreachable", "-", "-", az_t.base };

            rc = CTL_FAIL;
            if (ctl_table_add(regions, cells) != 0)
                rc = ctl_fail(c, CTL_FAIL, "out of memory");
        }
        /* The replicator is optional: a region without one has no peers. */
        have_rp = ctl_env_url_name("REPLICATOR", r, name, sizeof name) == 0 &&
                  ctl_env_get(&c->env, name) != NULL;
        if (have_rp && ctl_target_get(c, "REPLICATOR", "replicator", NULL, r, &rp_t) == CTL_OK &&
            ctl_call(c, &rp_t, "GET", "/v1/status", NULL, NULL, 0, &rp, NULL) != CTL_OK)
            rc = CTL_FAIL;
        if (status_tables(r, az, rp, regions, origins, peers) != 0)
            rc = ctl_fail(c, CTL_FAIL, "out of memory");
        if (json_object_set_new(all, r, json_pack("{s:O?, s:O?}", "authz", az, "replicator",
                                                  rp)) != 0)
            rc = ctl_fail(c, CTL_FAIL, "out of memory");
        json_decref(az);
        json_decref(rp);
    }
    if (c->json) {
        json_t *o = json_pack("{s:O}", "regions", all);

        ctl_print_json(c, o);
        json_decref(o);
    } else {
        ctl_table_print(regions, c->out);
        fputc('\n', c->out);
        ctl_table_print(origins, c->out);
        if (ctl_table_rows(peers) > 0) {
            fputc('\n', c->out);
            ctl_table_print(peers, c->out);
        }
    }
out:
    json_decref(all);
    ctl_table_free(regions);
    ctl_table_free(origins);
    ctl_table_free(peers);
    return rc;
}

const ctl_command ctl_status_command = {
    "status", "[--regions R,...]",
      "every region's consumer, watermarks, lag and staleness per origin, and replication peers",
      NULL, 0, 0, 0, cmd_status, NULL
};
