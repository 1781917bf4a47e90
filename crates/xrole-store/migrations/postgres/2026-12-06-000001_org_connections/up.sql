-- Organization connections: one StackSet deploys the role into every account
-- of an AWS Organization; each account's stack reports with the connection's
-- callback secret and gets its own link (connection_id set), verified on its
-- own with the connection's External ID.
CREATE TABLE aws_org_connections (
    id                      TEXT PRIMARY KEY NOT NULL,
    org_id                  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                    TEXT NOT NULL,
    access_level            TEXT NOT NULL CHECK (access_level IN ('read_only', 'provisioning')),
    region                  TEXT NOT NULL,
    management_account_id   TEXT,
    external_id_sealed      BYTEA NOT NULL,
    external_id_index       BYTEA NOT NULL UNIQUE,
    callback_secret_sealed  BYTEA NOT NULL,
    created_ms              BIGINT NOT NULL,
    updated_ms              BIGINT NOT NULL,
    UNIQUE (org_id, id)
);
CREATE INDEX aws_org_connections_org ON aws_org_connections (org_id, created_ms);

ALTER TABLE aws_account_links ADD COLUMN connection_id TEXT REFERENCES aws_org_connections (id);
-- One link per account of a connection, however many callbacks race.
CREATE UNIQUE INDEX aws_account_links_connection_account
    ON aws_account_links (connection_id, aws_account_id) WHERE connection_id IS NOT NULL;
