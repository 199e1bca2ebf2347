-- Replication between regions (DESIGN section 5, docs/replication.md).
--
-- The replicator of this region follows the change feed of every peer and
-- writes the rows of other origins into the same tables the consumer
-- writes its own origin's rows into (users, memberships, policies), with
-- the same last-writer-wins rule on (hlc, origin), so the local feed
-- triggers carry them on to this region's gateway filters.

-- Where this region is in each peer's change feed: written in the
-- transaction that applies the rows before it, so a crash neither loses
-- nor repeats a batch. resynced_at: when the last resynchronisation from
-- the peer's snapshot completed (NULL: never; following from cursor 0).
CREATE TABLE authz.replication_cursors (
    peer        text PRIMARY KEY,
    cursor      bigint NOT NULL,
    resynced_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The watermarks each peer reported with its last complete answer
-- (more: false): what that region had applied and known of each origin.
-- Together with this region's own authz.watermarks they tell when every
-- region has applied a tombstone, so it may be collected.
CREATE TABLE authz.peer_watermarks (
    peer        text NOT NULL,
    origin      text NOT NULL,
    applied_hlc bigint NOT NULL,
    known_hlc   bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (peer, origin)
);

-- Rows from a peer's feed or snapshot that could not be applied: the raw
-- JSON of the row and why. The other rows of the batch are applied.
CREATE TABLE authz.replication_dead_letters (
    id          bigserial PRIMARY KEY,
    peer        text NOT NULL,
    feed_seq    bigint,                 -- the peer's feed seq; NULL from a snapshot
    raw         text NOT NULL,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Which peer last raised an origin's watermarks (NULL: this region's own
-- consumer, or never raised by replication).
ALTER TABLE authz.watermarks ADD COLUMN source text;
