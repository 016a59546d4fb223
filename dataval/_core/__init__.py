"""The core every influence estimator shares.

- :mod:`.data`: the prepared training rows and the passes over them.
- :mod:`.parts`: the two parts an estimator names — a *featurizer* (what a
  row becomes) and a *curvature* (how ``(H + damping I)^{-1}`` is applied).
- :mod:`.stream`: the streaming core that pairs preconditioned query blocks
  with training blocks for ``score``, ``top_k``, ``value``,
  ``self_influence`` and candidate scoring, and applies the ``1/n`` of the
  influence equation in one place.
"""
