"""Jobs: the state machine service, claiming with leases, workers and executors."""
