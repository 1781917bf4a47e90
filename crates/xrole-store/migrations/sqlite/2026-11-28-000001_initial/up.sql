-- xrole schema, SQLite flavour. Keep in step with ../../postgres/<same name>/up.sql:
-- ids are TEXT UUIDs, times are BIGINT unix milliseconds, sealed values are BLOB.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    org_id         TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    password_hash  TEXT,
    disabled       BOOLEAN NOT NULL DEFAULT 0,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    UNIQUE (org_id, email),
    UNIQUE (org_id, id)
);
CREATE INDEX users_email ON users (email);

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY NOT NULL,
    org_id         TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key_id         TEXT NOT NULL UNIQUE,
    key_hash       BLOB NOT NULL,
    name           TEXT NOT NULL,
    owner_user_id  TEXT,
    created_ms     BIGINT NOT NULL,
    last_used_ms   BIGINT,
    expires_ms     BIGINT,
    revoked_ms     BIGINT,
    FOREIGN KEY (org_id, owner_user_id) REFERENCES users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_ms);

CREATE TABLE aws_account_links (
    id                          TEXT PRIMARY KEY NOT NULL,
    org_id                      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                        TEXT NOT NULL,
    state                       TEXT NOT NULL CHECK (state IN ('pending', 'verifying', 'active', 'insecure', 'failed', 'disconnected')),
    aws_account_id              TEXT NOT NULL,
    role_arn                    TEXT,
    access_level                TEXT NOT NULL CHECK (access_level IN ('read_only', 'provisioning')),
    external_id_sealed          BLOB NOT NULL,
    external_id_index           BLOB NOT NULL UNIQUE,
    callback_secret_sealed      BLOB NOT NULL,
    callback_secret_expires_ms  BIGINT NOT NULL,
    stack_id                    TEXT,
    region                      TEXT,
    last_callback_ms            BIGINT,
    last_verified_ms            BIGINT,
    last_verification_result    TEXT,
    last_error                  TEXT,
    created_ms                  BIGINT NOT NULL,
    updated_ms                  BIGINT NOT NULL,
    UNIQUE (org_id, id)
);
CREATE INDEX aws_account_links_org ON aws_account_links (org_id, created_ms);

CREATE TABLE seen_webhook_ids (
    webhook_id   TEXT PRIMARY KEY NOT NULL,
    received_ms  BIGINT NOT NULL
);
CREATE INDEX seen_webhook_ids_received ON seen_webhook_ids (received_ms);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    org_id            TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    link_id           TEXT,
    kind              TEXT NOT NULL,
    payload           TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    run_after_ms      BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_token       TEXT,
    lease_expires_ms  BIGINT,
    progress_done     BIGINT NOT NULL DEFAULT 0,
    progress_total    BIGINT NOT NULL DEFAULT 0,
    result            TEXT,
    error             TEXT,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL,
    started_ms        BIGINT,
    finished_ms       BIGINT,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, link_id) REFERENCES aws_account_links (org_id, id)
);
CREATE INDEX jobs_org ON jobs (org_id, created_ms);
CREATE INDEX jobs_runnable ON jobs (state, run_after_ms);

CREATE TABLE job_steps (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL,
    job_id        TEXT NOT NULL,
    step_key      TEXT NOT NULL,
    intent        TEXT NOT NULL,
    aws_id        TEXT,
    created_ms    BIGINT NOT NULL,
    completed_ms  BIGINT,
    UNIQUE (job_id, step_key),
    FOREIGN KEY (org_id, job_id) REFERENCES jobs (org_id, id) ON DELETE CASCADE
);

CREATE TABLE resources (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    link_id     TEXT NOT NULL,
    job_id      TEXT,
    kind        TEXT NOT NULL,
    aws_id      TEXT NOT NULL,
    region      TEXT NOT NULL,
    parent_id   TEXT,
    state       TEXT NOT NULL CHECK (state IN ('creating', 'available', 'deleting', 'deleted', 'failed')),
    tags        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    UNIQUE (org_id, id),
    UNIQUE (link_id, region, kind, aws_id),
    FOREIGN KEY (org_id, link_id) REFERENCES aws_account_links (org_id, id),
    FOREIGN KEY (org_id, job_id) REFERENCES jobs (org_id, id),
    FOREIGN KEY (org_id, parent_id) REFERENCES resources (org_id, id)
);
CREATE INDEX resources_org ON resources (org_id, created_ms);

CREATE TABLE idempotency_records (
    id                TEXT PRIMARY KEY NOT NULL,
    org_id            TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    principal         TEXT NOT NULL,
    method            TEXT NOT NULL,
    route             TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    fingerprint       BLOB NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    lock_token        TEXT,
    locked_until_ms   BIGINT NOT NULL,
    response_status   INTEGER,
    response_headers  TEXT,
    response_body     BLOB,
    created_ms        BIGINT NOT NULL,
    expires_ms        BIGINT NOT NULL,
    UNIQUE (org_id, principal, method, route, idempotency_key)
);
CREATE INDEX idempotency_records_expires ON idempotency_records (expires_ms);

CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES organizations (id),
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    request_id  TEXT,
    source_ip   TEXT,
    at_ms       BIGINT NOT NULL,
    details     TEXT NOT NULL
);
CREATE INDEX audit_events_org ON audit_events (org_id, at_ms);

-- Append-only, enforced by the database, not only by the absence of functions.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
