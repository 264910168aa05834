"""Concrete `Backend` implementations (see `sigma_assets.llm.generation`)."""
