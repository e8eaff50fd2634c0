"""The projections of the users' scenarios: trip search, shop, alerts, audit log, sales."""
