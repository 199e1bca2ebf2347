-- Divergence detection and resynchronisation (docs/authz.md, "Epochs and
-- resync").
--
-- The consumer remembers the id of every event it applied, so an event at
-- an already applied seq is recognised as a harmless resend (same id) or
-- as a divergence (another id: the origin's history is not the one applied
-- here). An origin repairs a divergence, or bootstraps a new region, by
-- starting a new epoch whose first events are its whole state; the
-- consumer stages them and replaces the origin's rows at the closing
-- marker, in one transaction.

-- The origin's epoch the watermarks (and applied_seq) belong to.
ALTER TABLE authz.watermarks ADD COLUMN epoch bigint NOT NULL DEFAULT 1;

-- Ids of the applied events of the current epoch, by seq. Pruned in
-- bounded steps to the newest consumer.applied_ids_retain per origin.
CREATE TABLE authz.applied_events (
    origin   text NOT NULL,
    seq      bigint NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (origin, seq)
);

-- The events of a resync in progress (resync.begin first), committed with
-- the consumer position so a crash in the middle resumes where it was.
-- raw holds the envelope as read; it is applied at resync.end.
CREATE TABLE authz.resync_staging (
    origin   text NOT NULL,
    seq      bigint NOT NULL,
    epoch    bigint NOT NULL,
    hlc      bigint NOT NULL,
    event_id uuid NOT NULL,
    type     text NOT NULL,
    raw      bytea NOT NULL,
    PRIMARY KEY (origin, seq)
);
