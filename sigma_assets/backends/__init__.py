"""Concrete `Backend` implementations (see `sigma_assets.generation`)."""
