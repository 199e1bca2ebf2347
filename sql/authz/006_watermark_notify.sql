-- Watermark notifications that carry the watermark, so that a feed worker
-- can answer its followers without reading the store.
--
-- Heartbeats raise an origin's watermarks five times a second. Until now
-- the writers (the consumer, the replicator) sent an empty
-- 'authz_watermarks' notification and every feed worker with followers
-- that want watermarks ran its feed query to learn the new values. Here
-- each raised row announces itself at COMMIT (a deferred trigger, so after
-- every row change of its transaction has taken its seq), with
--
--   {"seq": S, "origin": O, "applied": A, "known": K}
--
-- S being the feed's last_seq as this transaction sees it at COMMIT. Seqs
-- are taken under the feed's advisory lock held until COMMIT, so every
-- change up to S has committed by the time the notification is delivered,
-- and A and K hold once a follower has every change up to S: a worker
-- whose last read reached S may pass A and K on from memory; otherwise it
-- reads. Notifications without a payload (older writers, manual ones)
-- still mean "read the watermarks".
CREATE FUNCTION authz.watermark_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('authz_watermarks', json_build_object(
        'seq', (SELECT last_seq FROM authz.feed_state),
        'origin', NEW.origin,
        'applied', NEW.applied_hlc,
        'known', NEW.known_hlc)::text);
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER watermark_notify
    AFTER INSERT OR UPDATE ON authz.watermarks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION authz.watermark_notify();
