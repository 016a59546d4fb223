"""Small built-in data sets with known label noise.

Everything here is generated from data shipped with scikit-learn: nothing is
downloaded.
"""

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.utils import check_random_state


def flip_labels(y, frac=0.1, random_state=None, kind="uniform"):
    """Replace the labels of a random fraction of rows by a different class.

    Parameters
    ----------
    y : array-like or Series of shape (n_samples,)
        Class labels (any hashable values, at least two classes).
    frac : float, default=0.1
        Fraction of rows to flip, in ``[0, 1]``.
    random_state : int, RandomState instance or None, default=None
        Seed of the choice of rows and of their new labels.
    kind : {"uniform", "class-conditional"}, default="uniform"
        ``"uniform"``: the flipped rows are drawn uniformly and each gets a
        label drawn uniformly from the other classes. ``"class-conditional"``:
        every class has its own flip rate (drawn between 0.5 and 1.5 times
        ``frac``, then rescaled so that ``frac`` of all rows flip) and all its
        flipped rows get the same other class (a random cycle through the
        classes), the systematic confusion of an annotator who mixes up two
        classes.

    Returns
    -------
    y_noisy : ndarray or Series of shape (n_samples,)
        Same type as ``y`` (a Series keeps its index and name).
    is_flipped : ndarray or Series of bool of shape (n_samples,)
        True where the label was changed; a Series with ``y``'s index when
        ``y`` is a Series.

    Examples
    --------
    >>> from dataval.datasets import flip_labels
    >>> y_noisy, is_flipped = flip_labels([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], frac=0.2,
    ...                                   random_state=0)
    >>> int(is_flipped.sum())
    2
    """
    if not 0 <= frac <= 1:
        raise ValueError(f"frac must be in [0, 1], got {frac!r}.")
    if kind not in ("uniform", "class-conditional"):
        raise ValueError(
            f"kind must be 'uniform' or 'class-conditional', got {kind!r}."
        )
    rng = check_random_state(random_state)
    labels = np.asarray(y)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("flip_labels needs at least two classes in y.")
    n_flip = int(round(frac * len(labels)))
    noisy = labels.copy()
    if kind == "uniform":
        rows = rng.choice(len(labels), size=n_flip, replace=False)
        for row in rows:
            others = classes[classes != labels[row]]
            noisy[row] = others[rng.randint(len(others))]
    else:
        rows = _class_conditional_rows(labels, classes, n_flip, rng)
        cycle = rng.permutation(len(classes))
        # class cycle[k] becomes cycle[k + 1]: never itself
        target = dict(zip(classes[cycle], classes[np.roll(cycle, -1)]))
        noisy[rows] = [target[label] for label in labels[rows]]
    is_flipped = np.zeros(len(labels), dtype=bool)
    is_flipped[rows] = True
    if isinstance(y, pd.Series):
        noisy = pd.Series(noisy, index=y.index, name=y.name)
        is_flipped = pd.Series(is_flipped, index=y.index, name="is_flipped")
    return noisy, is_flipped


def _class_conditional_rows(labels, classes, n_flip, rng):
    """``n_flip`` row positions, each class flipped at its own rate."""
    counts = np.array([np.sum(labels == c) for c in classes])
    weights = counts * rng.uniform(0.5, 1.5, len(classes))
    # per-class numbers summing to n_flip, none above the class size
    per_class = np.minimum(np.floor(n_flip * weights / weights.sum()), counts)
    while per_class.sum() < n_flip:
        room = np.flatnonzero(per_class < counts)
        per_class[room[np.argmax((weights / counts)[room])]] += 1
        weights = weights * (per_class < counts)
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), int(k), replace=False)
            for c, k in zip(classes, per_class)
        ]
    ).astype(np.int64)


def load_mislabeled_digits(noise=0.1, random_state=0, as_frame=False, scale=True):
    """The 8x8 digits of scikit-learn with a known fraction of flipped labels.

    Parameters
    ----------
    noise : float, default=0.1
        Fraction of labels replaced by another digit.
    random_state : int, RandomState instance or None, default=0
        Seed of the flips.
    as_frame : bool, default=False
        Return a DataFrame (columns ``pixel_0_0`` ...) and Series.
    scale : bool, default=True
        Divide pixel intensities (0..16) by 16.

    Returns
    -------
    X : ndarray of shape (1797, 64) or DataFrame
    y_noisy : ndarray of shape (1797,) or Series
        Labels after flipping.
    is_flipped : ndarray of bool of shape (1797,)
        True for the rows whose label is wrong.

    Examples
    --------
    >>> from dataval.datasets import load_mislabeled_digits
    >>> X, y, is_flipped = load_mislabeled_digits(noise=0.1, random_state=0)
    >>> X.shape, round(float(is_flipped.mean()), 2)
    ((1797, 64), 0.1)
    """
    digits = load_digits(as_frame=as_frame)
    X, y = digits.data, digits.target
    if scale:
        X = X / 16.0
    y_noisy, is_flipped = flip_labels(y, frac=noise, random_state=random_state)
    return X, y_noisy, is_flipped
