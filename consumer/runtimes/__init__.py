"""The ways to run the projections: the daemon, under the KCL MultiLangDaemon, in Lambda."""
