-- Each running server reports the keyring key it seals with, so that a key
-- is never retired while a live server still seals new values with it.
CREATE TABLE keyring_instances (
    instance        TEXT PRIMARY KEY NOT NULL,
    primary_key_id  BIGINT NOT NULL,
    seen_ms         BIGINT NOT NULL
);
