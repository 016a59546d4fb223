"""Kronecker-factored curvature per layer: K-FAC, EK-FAC, LoGra."""
