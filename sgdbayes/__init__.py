"""sgd-bayes application layer: config, estimators, pipeline, fan-out, sweeps, reports, command line."""
