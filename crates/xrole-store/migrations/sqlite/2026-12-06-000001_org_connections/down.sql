DROP INDEX aws_account_links_connection_account;
ALTER TABLE aws_account_links DROP COLUMN connection_id;
DROP TABLE aws_org_connections;
