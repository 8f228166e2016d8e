"""What compression costs, from predictions: per-class tests, PIEs, subgroups, robustness, statistics."""
