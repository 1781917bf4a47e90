-- Roles: admin > operator > viewer (`member` becomes `operator`); an API key
-- may carry a role below its owner's; an organization may let operators
-- make destructive changes.
ALTER TABLE users DROP CONSTRAINT users_role_check;
UPDATE users SET role = 'operator' WHERE role = 'member';
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'operator', 'viewer'));
ALTER TABLE api_keys ADD COLUMN role TEXT CHECK (role IS NULL OR role IN ('admin', 'operator', 'viewer'));
ALTER TABLE organizations ADD COLUMN operators_may_destroy BOOLEAN NOT NULL DEFAULT false;
