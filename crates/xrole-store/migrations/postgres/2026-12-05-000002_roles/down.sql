ALTER TABLE organizations DROP COLUMN operators_may_destroy;
ALTER TABLE api_keys DROP COLUMN role;
ALTER TABLE users DROP CONSTRAINT users_role_check;
UPDATE users SET role = 'member' WHERE role <> 'admin';
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'member'));
