"""top_k(include_labels=True): given labels and predictions of the rows shown."""

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from dataval import ExactInfluence
from dataval.datasets import load_mislabeled_digits


def test_top_k_adds_labels_and_predictions_of_sklearn_rows():
    X, y, _ = load_mislabeled_digits(noise=0.1, as_frame=True)
    X, y = X[:150], y[:150].map("digit {}".format)
    model = LogisticRegression(max_iter=500).fit(X, y)
    top = (
        ExactInfluence().fit(model, X, y).top_k(X[:4], y[:4], k=3, include_labels=True)
    )
    assert top.columns.tolist()[4:] == [
        "test_label",
        "test_predicted",
        "train_label",
        "train_predicted",
    ]
    predicted = pd.Series(model.predict(X), index=X.index)
    np.testing.assert_array_equal(top["train_label"], y[top["train"]])
    np.testing.assert_array_equal(top["train_predicted"], predicted[top["train"]])
    np.testing.assert_array_equal(top["test_label"], y[top["test"]])
    np.testing.assert_array_equal(top["test_predicted"], predicted[top["test"]])
    plain = ExactInfluence().fit(model, X, y).top_k(X[:4], y[:4], k=3)
    pd.testing.assert_frame_equal(top[plain.columns], plain)


def test_top_k_labels_of_a_torch_classifier_are_class_indices():
    torch.manual_seed(0)
    X = torch.randn(40, 3)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    module = torch.nn.Linear(3, 3)
    top = (
        ExactInfluence().fit(module, X, y).top_k(X[:2], y[:2], k=2, include_labels=True)
    )
    with torch.no_grad():
        predicted = module(X).argmax(1).numpy()
    np.testing.assert_array_equal(top["train_label"], y.numpy()[top["train"]])
    np.testing.assert_array_equal(top["train_predicted"], predicted[top["train"]])
