"""Finding and removing mislabeled rows (public as :mod:`dataval.filters`)."""
