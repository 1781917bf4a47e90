DROP INDEX jobs_link;
ALTER TABLE aws_account_links DROP COLUMN trust_policy_audit;
ALTER TABLE aws_account_links DROP COLUMN generation;
