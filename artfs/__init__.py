"""artfs: versioned ML artifacts (datasets, models) as ordinary directories."""

__version__ = "0.1.0"
