-- When each organization was last served a job: claims go to the
-- organization served longest ago, so tenants take turns.
CREATE TABLE job_org_turns (
    org_id         TEXT PRIMARY KEY NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    last_claim_ms  BIGINT NOT NULL
);
-- An organization's running jobs, counted against its cap at every claim.
CREATE INDEX jobs_org_state ON jobs (org_id, state);
