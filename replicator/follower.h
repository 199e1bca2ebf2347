/*
 * A follower: this region's replication from one peer, on an event loop
 * and a PostgreSQL connection of its own, so a slow or hanging peer, or
 * a slow apply, never holds up another peer.
 */
#ifndef RP_FOLLOWER_H
#define RP_FOLLOWER_H

#include "common/err.h"
#include "replicator/rp.h"

struct event_base;

typedef struct rp_follower rp_follower;

/*
 * New follower of peer `name` at base URL `url` ("http://host:port", an
 * optional path prefix), publishing into sh->peers[index] (sh borrowed,
 * must outlive it). AZC_EINVAL for a URL it cannot use. Its first step is
 * armed; it runs once the runner runs its loop (rp_follower_base).
 */
rp_follower *rp_follower_new(rp_shared *sh, size_t index, const char *name, const char *url,
                             azc_err *e);
/* AZC_EINVAL naming peers.<name> when `url` is not one a follower can
 * use (for the configuration check). */
int rp_follower_url_check(const char *name, const char *url, azc_err *e) AZC_WARN_UNUSED;

/* The follower's event loop, owned by it. */
struct event_base *rp_follower_base(rp_follower *f);
/* After its loop has stopped. NULL is a no-op. */
void rp_follower_free(rp_follower *f);

#endif
