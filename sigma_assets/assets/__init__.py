"""The Dagster shell: assets that wire the plain modules to storage, partitions, resources and metadata."""

import warnings

import dagster as dg

# Backfill policies, pools and partitioned checks are marked beta or preview; the project relies on them.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
