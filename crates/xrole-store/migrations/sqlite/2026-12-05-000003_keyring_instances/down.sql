DROP TABLE keyring_instances;
