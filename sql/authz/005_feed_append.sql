-- The change-feed trigger in O(1) per row, however large the transaction.
--
-- authz.feed_append (001) takes the next seq with
-- "UPDATE authz.feed_state SET last_seq = last_seq + 1" for every changed
-- row. Within one transaction each of those updates leaves a row version
-- that cannot be pruned before the commit, and the next update finds the
-- live version by walking past all of them: a transaction that changes n
-- rows (a replicator batch, a snapshot resync, a resync's state) costs
-- O(n^2) (25,000 rows: 12 s). Here every update after the first of a
-- transaction goes straight to the version the previous one made, by its
-- tid, kept in a transaction-local setting, and only the first takes the
-- advisory lock and sends the notification (both last until COMMIT). The
-- ordering argument is unchanged: the lock is taken before the first seq
-- and held until COMMIT.
CREATE OR REPLACE FUNCTION authz.feed_append() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
    here tid;
    prev text := current_setting('authz.feed_state_tid', true);
BEGIN
    IF prev IS NOT NULL AND prev <> '' THEN
        -- Not the transaction's first row: it holds the lock (until COMMIT)
        -- and has sent its notification already.
        UPDATE authz.feed_state SET last_seq = last_seq + 1 WHERE ctid = prev::tid
            RETURNING last_seq, ctid INTO s, here;
    END IF;
    IF s IS NULL THEN
        -- The first row of the transaction (or the version moved: a plain
        -- update is always right, only slower).
        PERFORM pg_advisory_xact_lock(hashtext('authz.changes'));
        UPDATE authz.feed_state SET last_seq = last_seq + 1 RETURNING last_seq, ctid INTO s, here;
        PERFORM pg_notify('authz_changes', '');
    END IF;
    PERFORM set_config('authz.feed_state_tid', here::text, true);
    INSERT INTO authz.changes (seq, kind, row) VALUES (s, TG_ARGV[0], to_jsonb(NEW));
    RETURN NULL;
END;
$$;
