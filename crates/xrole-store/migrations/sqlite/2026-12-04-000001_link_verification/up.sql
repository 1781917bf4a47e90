-- Every change to what a verification tests (the role, the External ID, the
-- stack's report) bumps `generation`; a verification result applies only to
-- the generation it tested.
ALTER TABLE aws_account_links ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
-- Whether the last verification could read the role's trust policy and audit
-- it (`audited`) or only probed STS (`not_readable`).
ALTER TABLE aws_account_links ADD COLUMN trust_policy_audit TEXT;
-- A link's queued jobs of one kind (one pending verification per link).
CREATE INDEX jobs_link ON jobs (link_id, kind, state);
