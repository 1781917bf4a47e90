PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
ALTER TABLE organizations DROP COLUMN operators_may_destroy;
ALTER TABLE api_keys DROP COLUMN role;
CREATE TABLE users_old (
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
INSERT INTO users_old (id, org_id, email, display_name, role, password_hash, disabled, created_ms, updated_ms)
    SELECT id, org_id, email, display_name,
           CASE role WHEN 'admin' THEN 'admin' ELSE 'member' END,
           password_hash, disabled, created_ms, updated_ms
    FROM users;
DROP TABLE users;
ALTER TABLE users_old RENAME TO users;
CREATE INDEX users_email ON users (email);
COMMIT;
PRAGMA foreign_keys = ON;
