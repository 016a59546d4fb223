"""The dense curvature: ExactInfluence, the reference estimator."""
