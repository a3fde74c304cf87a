"""What the hall server needs of its broker: accounts, ACL, configuration, PKI, uplink."""
