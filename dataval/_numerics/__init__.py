"""Numerics that several estimators share, each in its own module.

- :mod:`.spectral`: solves in an eigenbasis and positive-definiteness checks.
- :mod:`.operator`: curvature-matrix products over the training data.
- :mod:`.checkpoints`: model states other than the fitted one (a training
  trajectory, an ensemble, segment ends).
- :mod:`.seeding`: seeds and generators drawn from ``random_state``.
- :mod:`.damping`: the one ``damping="auto"`` rule.
"""
