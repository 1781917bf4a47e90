DROP INDEX jobs_org_state;
DROP TABLE job_org_turns;
