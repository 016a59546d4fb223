"""Checkpoints of training: TracIn, Source."""
