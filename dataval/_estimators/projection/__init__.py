"""Influence in a randomly projected gradient space: TRAK."""
