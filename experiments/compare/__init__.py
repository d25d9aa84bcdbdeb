"""The meta-init comparison (``perfusion compare``): :mod:`experiments.compare.run` runs it."""
