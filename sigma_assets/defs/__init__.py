"""The Dagster shell, one folder per stage.

The stages use a few of Dagster's beta and preview APIs on purpose (multi-partition mappings, partitioned
asset checks, backfill policies); their warnings say nothing a user of this code location can act on.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
