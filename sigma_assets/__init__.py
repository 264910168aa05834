"""sigma: sibling-guided Monte Carlo augmentation (SIGMA) as a Dagster code location."""
