"""MLflow tracking: the store, the durable ledger of writes, its bucket mirror, the Tune callback
that records trials, and the final model."""
