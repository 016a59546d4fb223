"""Given labels and model predictions of prepared rows, decoded for display."""

import numpy as np
import pandas as pd
import torch


def labels_and_predictions(model, X, y, batch_size):
    """``(labels, predictions)`` (n,) of prepared rows ``(X, y)``.

    ``model`` is a FunctionalModel. Class labels of scikit-learn models are
    decoded to their original values; other classifiers give class indices
    (the argmax, or ``output > 0`` for a single logit); regressors their
    output (rows of several outputs are returned as tuples).
    """
    adapted = model.adapted
    outputs = torch.cat(
        [
            model.outputs(model.prepare(X[start : start + batch_size])).cpu()
            for start in range(0, len(X), batch_size)
        ]
    ).reshape(len(X), -1)  # (n, outputs)
    targets = y.cpu()
    is_classifier = adapted.classes is not None or not targets.is_floating_point()
    if adapted.binary_target:
        targets = targets.long()
    if not is_classifier:
        return _values(targets.reshape(len(X), -1)), _values(outputs)
    if outputs.shape[1] == 1:
        predicted = (outputs[:, 0] > 0).long()
    else:
        predicted = outputs.argmax(1)
    labels, predicted = targets.reshape(-1).numpy(), predicted.numpy()
    if adapted.classes is not None:
        return adapted.classes[labels], adapted.classes[predicted]
    return labels, predicted


def _values(matrix):
    """(n, outputs) tensor -> (n,) numbers, or tuples for several outputs."""
    values = matrix.double().numpy()
    if values.shape[1] == 1:
        return values[:, 0]
    return np.array([tuple(row) for row in values.tolist()] + [()], dtype=object)[:-1]


def add_labels(estimator, top, X_test, y_test, test_rows, train_rows):
    """``top`` with the given label and prediction of its test and training rows.

    ``test_rows`` and ``train_rows`` (len(top),) are positions in the
    prepared test data and the training data.
    """
    batch = estimator.batch_size
    test_label, test_predicted = labels_and_predictions(
        estimator.model_, X_test, y_test, batch
    )
    used = np.unique(train_rows)
    train_label, train_predicted = labels_and_predictions(
        estimator.model_,
        estimator._X_train[torch.as_tensor(used)],
        estimator._y_train[torch.as_tensor(used)],
        batch,
    )
    at = np.searchsorted(used, train_rows)
    columns = {
        "test_label": test_label[test_rows],
        "test_predicted": test_predicted[test_rows],
        "train_label": train_label[at],
        "train_predicted": train_predicted[at],
    }
    return top.assign(**{name: pd.array(values) for name, values in columns.items()})
