"""The training rows ``fit`` prepared, and every pass over rows in batches."""

from .._progress import tracked


def batches(model, X, y, size, desc, verbose):
    """Yield ``(start, X_batch, y_batch)`` of prepared rows, on the model's device."""
    starts = range(0, len(X), size)
    for start in tracked(starts, len(starts), desc, verbose):
        X_b, y_b = model.prepare(X[start : start + size], y[start : start + size])
        yield start, X_b, y_b


class TrainingData:
    """The training rows, the objective's per-row weights and passes over them.

    Parameters
    ----------
    model : FunctionalModel
        Prepares batches (device, dtype).
    X, y : tensors
        The training rows as ``fit`` prepared them.
    weights : tensor of shape (n,) or None
        The objective's weights ``w_j`` (``None``: all ones), on the device.
    batch_size, verbose : the estimator's parameters.
    """

    def __init__(self, model, X, y, weights, batch_size, verbose):
        self.model = model
        self.X, self.y, self.weights = X, y, weights
        self.batch_size, self.verbose = batch_size, verbose

    def __len__(self):
        return len(self.X)

    def passes(self, desc, rows=None, batch_size=None):
        """Yield ``(start, X_b, y_b, w_b)`` over the rows at ``rows``.

        ``rows``: a slice or a tensor of positions (default: all); ``start``
        counts within them. ``w_b`` is ``None`` for an unweighted objective.
        """
        rows = slice(None) if rows is None else rows
        for start, X_b, y_b in batches(
            self.model,
            self.X[rows],
            self.y[rows],
            batch_size or self.batch_size,
            desc,
            self.verbose,
        ):
            yield start, X_b, y_b, self.weights_at(rows, start, len(X_b))

    def batches_of(self, X, y, desc):
        """Yield ``(start, X_b, y_b)`` of other prepared rows (queries), batched
        as the training rows are."""
        return batches(self.model, X, y, self.batch_size, desc, self.verbose)

    def weights_at(self, rows, start, size):
        """Weights (size,) of the rows ``rows[start:start+size]``, or ``None``."""
        if self.weights is None:
            return None
        return self.weights[rows][start : start + size]
