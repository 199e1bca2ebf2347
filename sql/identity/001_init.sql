-- Identity schema: the admin-managed data of the orgs homed in this region,
-- and the transactional outbox that carries every change to Kafka.
--
-- Only authorization data (ids, subjects, memberships, role permissions,
-- assignments) goes into events; names, e-mails and descriptions stay here.
CREATE SCHEMA identity;

CREATE TABLE identity.users (
    id          uuid PRIMARY KEY,
    subject     text NOT NULL UNIQUE,       -- the JWT `sub` of this user
    email       text NOT NULL,
    name        text NOT NULL,
    version     bigint NOT NULL DEFAULT 1,  -- ETag; +1 on every change
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.teams (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity.team_members (
    team_id     uuid NOT NULL REFERENCES identity.teams (id),
    user_id     uuid NOT NULL REFERENCES identity.users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON identity.team_members (user_id);

CREATE TABLE identity.roles (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    permissions text[] NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Deleting a role that is still assigned is refused (no cascade here).
CREATE TABLE identity.role_assignments (
    id             uuid PRIMARY KEY,
    principal_type text NOT NULL CHECK (principal_type IN ('user', 'team')),
    principal_id   uuid NOT NULL,
    role_id        uuid NOT NULL REFERENCES identity.roles (id),
    region         text NOT NULL,
    resource       text NOT NULL,
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (principal_type, principal_id, role_id, region, resource)
);
CREATE INDEX role_assignments_principal ON identity.role_assignments (principal_type, principal_id);
CREATE INDEX role_assignments_role ON identity.role_assignments (role_id);

-- Idempotency-Key replay store: the first response to (key, caller) is kept
-- for 24 hours; the same key with another request body is refused.
CREATE TABLE identity.idempotency_keys (
    key            text NOT NULL,
    caller         text NOT NULL,             -- admin subject that sent it
    method         text NOT NULL,
    path           text NOT NULL,
    request_sha256 text NOT NULL,
    status         integer NOT NULL,
    response       text NOT NULL,
    revision       text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, caller)
);
CREATE INDEX idempotency_keys_created ON identity.idempotency_keys (created_at);

-- Outbox: one row per event, seq and hlc assigned under the outbox lock in
-- the committing transaction, so commit order = seq order = hlc order.
CREATE TABLE identity.outbox (
    seq          bigint PRIMARY KEY,
    hlc          bigint NOT NULL UNIQUE,
    event_id     uuid NOT NULL UNIQUE,
    type         text NOT NULL,
    payload      text NOT NULL,               -- the encoded event envelope
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON identity.outbox (seq) WHERE published_at IS NULL;

-- The origin's counters: last assigned seq and hlc. One row.
CREATE TABLE identity.outbox_state (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_seq  bigint NOT NULL DEFAULT 0,
    last_hlc  bigint NOT NULL DEFAULT 0
);
INSERT INTO identity.outbox_state DEFAULT VALUES;
