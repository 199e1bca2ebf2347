-- Tombstone collection (docs/authz.md, "Tombstone collection"): worker 0
-- of authz-server looks for tombstones of each origin up to the HLC every
-- region has applied, every feed.prune_interval_ms. Tombstones are few
-- next to live rows, so partial indexes keep that a short index range
-- scan instead of a scan of every row on the worker's loop.
CREATE INDEX users_tombstones ON authz.users (origin, hlc) WHERE deleted;
CREATE INDEX memberships_tombstones ON authz.memberships (origin, hlc) WHERE deleted;
CREATE INDEX policies_tombstones ON authz.policies (origin, hlc) WHERE deleted;
