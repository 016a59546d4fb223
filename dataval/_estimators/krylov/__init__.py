"""Estimators that only multiply by the curvature: CG, LiSSA, Arnoldi."""
