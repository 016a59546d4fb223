"""Influence on text: score only the training texts a query is likely to depend on.

On a large corpus, scoring every training row against every query costs a
gradient per training row per query chunk. A cheap lexical filter first keeps,
for each query, the ``k`` training texts most similar to it by TF-IDF cosine
similarity (:func:`tfidf_candidates`); :func:`score_candidates` then computes
the influence of those pairs only.
"""

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.utils.validation import check_is_fitted

from ._finite import check_finite


def tfidf_candidates(train_texts, query_texts, k=100, *, batch_size=1024, **params):
    """The ``k`` training texts most TF-IDF-similar to each query.

    A :class:`~sklearn.feature_extraction.text.TfidfVectorizer` is fitted on
    the training texts; queries are compared with them by cosine similarity,
    ``batch_size`` queries at a time, so memory stays at
    ``batch_size x n_train`` similarities.

    Parameters
    ----------
    train_texts : iterable of str
        The training texts, in the order of the rows given to ``fit``.
    query_texts : iterable of str
        The query (test) texts.
    k : int, default=100
        Candidates per query (at most the number of training texts).
    batch_size : int, default=1024
        Queries compared at once.
    **params
        Passed to ``TfidfVectorizer`` (e.g. ``ngram_range``, ``stop_words``).

    Returns
    -------
    candidates : ndarray of shape (n_query, k), int64
        Positions (0-based row numbers) of training texts, most similar first.

    See Also
    --------
    score_candidates : The influence of the candidate pairs.

    Examples
    --------
    >>> from dataval.text import tfidf_candidates
    >>> train = ["the cat sat", "dogs bark loudly", "a cat and a dog"]
    >>> tfidf_candidates(train, ["my cat"], k=2)
    array([[0, 2]])
    """
    for value, name in ((k, "k"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    vectorizer = TfidfVectorizer(**params)
    train = vectorizer.fit_transform(train_texts)  # (n_train, vocabulary), sparse
    queries = list(query_texts)
    k = min(int(k), train.shape[0])
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), batch_size):
        chunk = vectorizer.transform(queries[start : start + batch_size])
        similarity = cosine_similarity(chunk, train)  # (chunk, n_train)
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, top, 1), 1, kind="stable")
        out[start : start + len(top)] = np.take_along_axis(top, order, 1)
    return out


def score_candidates(estimator, X_test, y_test, candidates):
    """Influence of the candidate training rows of each test row, and only them.

    Computes the gradients of the union of a test chunk's candidates, never
    those of the other training rows, so the cost grows with the number of
    candidates, not with the training set.

    Parameters
    ----------
    estimator : fitted influence estimator
        Any dataval estimator after ``fit``.
    X_test : array-like, DataFrame or tensor of shape (n_test, ...)
    y_test : array-like, Series or tensor of shape (n_test, ...)
    candidates : array of shape (n_test, k) or list of n_test sequences of int
        Positions (0-based row numbers in the training data given to
        ``fit``) to score for each test row, e.g. from
        :func:`tfidf_candidates`. Rows may have different lengths.

    Returns
    -------
    scores : DataFrame
        Long format as :meth:`~dataval.ExactInfluence.top_k`: columns
        ``test``, ``rank``, ``train`` (the training index labels) and
        ``influence``, one row per candidate pair, most helpful first within
        each test row (sort by ``influence`` for the most harmful). The
        influences are those :meth:`~dataval.ExactInfluence.score` gives for
        the same pairs.

    Examples
    --------
    >>> from sklearn.feature_extraction.text import CountVectorizer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from dataval import ExactInfluence
    >>> from dataval.text import score_candidates, tfidf_candidates
    >>> texts = ["good fun film", "great fun", "dull film", "boring and dull"] * 5
    >>> labels = [1, 1, 0, 0] * 5
    >>> clf = make_pipeline(CountVectorizer(), LogisticRegression()).fit(texts, labels)
    >>> inf = ExactInfluence().fit(clf, texts, labels)
    >>> queries, query_labels = ["fun film", "dull"], [1, 0]
    >>> candidates = tfidf_candidates(texts, queries, k=3)
    >>> score_candidates(inf, queries, query_labels, candidates).shape
    (6, 4)
    """
    check_is_fitted(estimator)
    X_t, y_t, index = estimator._prepare_test(X_test, y_test)
    rows = _check_candidates(candidates, len(X_t), estimator.n_train_)
    frames = []
    step = estimator.batch_size
    for s0 in range(0, len(X_t), step):
        chunk = rows[s0 : s0 + step]
        union = np.unique(np.concatenate([np.zeros(0, np.int64), *chunk]))
        scores = estimator._candidate_scores(
            X_t[s0 : s0 + step], y_t[s0 : s0 + step], union
        )
        check_finite(estimator, scores, "score_candidates", (X_t, y_t, index))
        for i, positions in enumerate(chunk):
            values = scores[i, np.searchsorted(union, positions)]
            order = np.argsort(-values, kind="stable")
            frames.append(
                pd.DataFrame(
                    {
                        "test": index[s0 + i],
                        "rank": np.arange(1, len(order) + 1),
                        "train": estimator.train_index_.to_numpy()[positions[order]],
                        "influence": values[order],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _check_candidates(candidates, n_test, n_train):
    """``candidates`` as a list of n_test int64 arrays of valid positions."""
    if len(candidates) != n_test:
        raise ValueError(
            f"candidates has {len(candidates)} rows but X_test has {n_test}; give "
            "one sequence of training positions per test row (e.g. from "
            "tfidf_candidates)."
        )
    rows = []
    for i, row in enumerate(candidates):
        row = np.asarray(row)
        if row.ndim != 1 or (row.size and row.dtype.kind not in "iu"):
            raise ValueError(
                f"candidates[{i}] must be a 1-D sequence of integer positions, got "
                f"an array of shape {row.shape} and dtype {row.dtype}."
            )
        row = row.astype(np.int64)
        bad = row[(row < 0) | (row >= n_train)]
        if bad.size:
            raise ValueError(
                f"candidates[{i}] holds position {int(bad[0])}, outside 0..{n_train - 1}. "
                "Candidates are 0-based row numbers of the training data given to "
                "fit, not index labels."
            )
        rows.append(row)
    return rows
