"""The influence estimators, by family.

- :mod:`.dense`: the dense curvature (``ExactInfluence``), the reference.
- :mod:`.krylov`: curvature-vector products only (CG, LiSSA, Arnoldi).
- :mod:`.kronecker`: Kronecker-factored curvature per layer (K-FAC, EK-FAC,
  LoGra) and the per-layer signals they score with.
- :mod:`.projection`: randomly projected gradients (TRAK).
- :mod:`.trajectory`: checkpoints of training (TracIn, Source).

Each estimator names its featurizer and curvature (:mod:`dataval._core.parts`);
the streaming core and the shared numerics live outside this package.
"""
