"""The Dagster shell: assets that wire the plain modules to storage, partitions, resources and metadata."""
