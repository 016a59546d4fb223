"""Data valuation by retraining, for any scikit-learn estimator."""
