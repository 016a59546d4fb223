"""Numerics shared by several estimators."""
