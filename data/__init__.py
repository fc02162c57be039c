"""Datasets, transforms, samplers and loaders; the bundled digits demo."""
