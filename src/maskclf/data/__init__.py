"""Data: the competition layout, the records table, splits, datasets and synthetic data."""
