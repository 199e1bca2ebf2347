-- Origin epochs (docs/events.md, "Epochs and resync"): a resync starts a
-- new epoch whose first events carry the origin's whole authorization
-- state; every event carries the epoch it was written in.
--
-- epoch_start_seq is the first seq of the current epoch: the relay's tail
-- check accepts a topic that ends in an older epoch only below it.
ALTER TABLE identity.outbox_state
    ADD COLUMN epoch bigint NOT NULL DEFAULT 1 CHECK (epoch >= 1),
    ADD COLUMN epoch_start_seq bigint NOT NULL DEFAULT 1 CHECK (epoch_start_seq >= 1);

-- A row of an older epoch that was not published when a resync committed
-- is superseded: its effect is in the resync's state events, and the relay
-- never publishes it.
ALTER TABLE identity.outbox
    ADD COLUMN superseded boolean NOT NULL DEFAULT false;

DROP INDEX identity.outbox_unpublished;
CREATE INDEX outbox_unpublished ON identity.outbox (seq)
    WHERE published_at IS NULL AND NOT superseded;
