-- Roles: admin > operator > viewer (`member` becomes `operator`); an API key
-- may carry a role below its owner's; an organization may let operators
-- make destructive changes.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE users_new (
    id             TEXT PRIMARY KEY NOT NULL,
    org_id         TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash  TEXT,
    disabled       BOOLEAN NOT NULL DEFAULT 0,
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    UNIQUE (org_id, email),
    UNIQUE (org_id, id)
);
INSERT INTO users_new (id, org_id, email, display_name, role, password_hash, disabled, created_ms, updated_ms)
    SELECT id, org_id, email, display_name,
           CASE role WHEN 'member' THEN 'operator' ELSE role END,
           password_hash, disabled, created_ms, updated_ms
    FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
CREATE INDEX users_email ON users (email);
ALTER TABLE api_keys ADD COLUMN role TEXT CHECK (role IS NULL OR role IN ('admin', 'operator', 'viewer'));
ALTER TABLE organizations ADD COLUMN operators_may_destroy BOOLEAN NOT NULL DEFAULT 0;
COMMIT;
PRAGMA foreign_keys = ON;
