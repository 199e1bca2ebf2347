-- Authz schema: the regional policy store (DESIGN sections 3-5).
--
-- Three replicated tables hold the policy set at assignment grain: users
-- (subject -> user id), memberships and policies (an assignment with its
-- role's permissions expanded in). Every row carries (hlc, origin,
-- origin_seq, deleted): the authz server of a region writes the rows of its
-- own origin, the replicator writes the rows of the others, and a change
-- replaces a row only when its (hlc, origin) is newer. A delete is a
-- tombstone, never a row removal.
--
-- Every change to those three tables is appended to authz.changes, the
-- local change feed gateway filters follow by cursor, by deferred triggers
-- that run at COMMIT under a transaction-scoped advisory lock, whoever the
-- writer is: so feed order = commit order and a reader never skips a row.
CREATE SCHEMA authz;

CREATE TABLE authz.users (
    user_id     uuid PRIMARY KEY,
    subject     text NOT NULL,               -- the JWT `sub`
    hlc         bigint NOT NULL,
    origin      text NOT NULL,
    origin_seq  bigint NOT NULL,
    deleted     boolean NOT NULL DEFAULT false
);
CREATE INDEX users_subject ON authz.users (subject) WHERE NOT deleted;
CREATE INDEX users_origin ON authz.users (origin, origin_seq);

CREATE TABLE authz.memberships (
    team_id     uuid NOT NULL,
    user_id     uuid NOT NULL,
    hlc         bigint NOT NULL,
    origin      text NOT NULL,
    origin_seq  bigint NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX memberships_user ON authz.memberships (user_id) WHERE NOT deleted;
CREATE INDEX memberships_origin ON authz.memberships (origin, origin_seq);

CREATE TABLE authz.policies (
    assignment_id  uuid PRIMARY KEY,
    principal_type text NOT NULL CHECK (principal_type IN ('user', 'team')),
    principal_id   uuid NOT NULL,
    role_id        uuid NOT NULL,
    region         text NOT NULL,            -- a region name or '*'
    resource       text NOT NULL,            -- '<type>/<id>', '<type>/*' or '*'
    permissions    text[] NOT NULL,          -- the role's, at the time of hlc
    hlc            bigint NOT NULL,
    origin         text NOT NULL,
    origin_seq     bigint NOT NULL,
    deleted        boolean NOT NULL DEFAULT false
);
CREATE INDEX policies_principal ON authz.policies (principal_id) WHERE NOT deleted;
CREATE INDEX policies_role ON authz.policies (role_id) WHERE NOT deleted;
CREATE INDEX policies_origin ON authz.policies (origin, origin_seq);

-- Roles of this region's origin, so assignments can be expanded and a role
-- change can rewrite its assignments. Not replicated: the policies carry
-- the permissions.
CREATE TABLE authz.roles (
    role_id     uuid PRIMARY KEY,
    name        text NOT NULL,
    permissions text[] NOT NULL,
    hlc         bigint NOT NULL,
    origin      text NOT NULL,
    origin_seq  bigint NOT NULL,
    deleted     boolean NOT NULL DEFAULT false
);

-- Watermarks per origin (DESIGN section 4): every change of `origin` with
-- an HLC <= applied_hlc is applied here; known_hlc is the newest HLC the
-- origin has announced. applied_seq is the origin's last applied outbox
-- seq (the consumer's duplicate and gap check).
CREATE TABLE authz.watermarks (
    origin      text PRIMARY KEY,
    applied_hlc bigint NOT NULL DEFAULT 0,
    known_hlc   bigint NOT NULL DEFAULT 0,
    applied_seq bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Where the consumer resumes: written in the transaction that applies the
-- messages before it. Kafka's committed offsets are not used.
CREATE TABLE authz.consumer_position (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Messages the consumer could not use, with their bytes and the reason.
CREATE TABLE authz.dead_letters (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    kafka_offset bigint NOT NULL,
    raw          bytea NOT NULL,
    reason       text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- The local change feed. last_seq is the newest seq handed out; rows with
-- seq <= pruned_through have been removed, so a cursor below it is gone.
CREATE TABLE authz.feed_state (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_seq       bigint NOT NULL DEFAULT 0,
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO authz.feed_state DEFAULT VALUES;

CREATE TABLE authz.changes (
    seq          bigint PRIMARY KEY,
    kind         text NOT NULL,              -- 'user' | 'membership' | 'policy'
    row          jsonb NOT NULL,             -- the row after the change
    committed_at timestamptz NOT NULL DEFAULT now()
);

-- Runs at COMMIT (deferred) for each changed row. The advisory lock is
-- held until the commit completes, so a transaction that commits later
-- always gets higher seqs: followers reading "seq > cursor" never miss a
-- row that was still uncommitted when they read. The key is
-- hashtext('authz.changes').
CREATE FUNCTION authz.feed_append() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('authz.changes'));
    UPDATE authz.feed_state SET last_seq = last_seq + 1 RETURNING last_seq INTO s;
    INSERT INTO authz.changes (seq, kind, row) VALUES (s, TG_ARGV[0], to_jsonb(NEW));
    -- Identical notifications of one transaction are folded into one.
    PERFORM pg_notify('authz_changes', '');
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER users_feed AFTER INSERT OR UPDATE ON authz.users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION authz.feed_append('user');
CREATE CONSTRAINT TRIGGER memberships_feed AFTER INSERT OR UPDATE ON authz.memberships
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION authz.feed_append('membership');
CREATE CONSTRAINT TRIGGER policies_feed AFTER INSERT OR UPDATE ON authz.policies
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION authz.feed_append('policy');
