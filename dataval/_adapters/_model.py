"""The common form every accepted model is turned into."""

import numpy as np
import torch

from .._validation import check_feature_names, check_features, to_numpy, to_tensor


def layer_of(parameter_name):
    """Name of the module that owns a parameter: ``"0.weight"`` -> ``"0"``."""
    return parameter_name.rsplit(".", 1)[0] if "." in parameter_name else parameter_name


class AdaptedModel:
    """A fitted model seen as a torch module, a per-sample loss and an L2 term.

    The training objective it describes is
    ``R(theta) = mean_j loss(z_j; theta) + sum_k l2[k] / 2 * ||theta_k||^2``.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a batch of prepared inputs to outputs. Never modified.
    loss : callable
        ``loss(output, target)`` -> one value per row.
    l2 : dict of str to float, default=None
        Per-parameter coefficients of the L2 regularizer in the mean form above.
    classes : ndarray, default=None
        Labels encoded as ``0..K-1`` by their position (scikit-learn models).
    n_classes : int, default=None
        For integer targets read as class indices: targets must be below it.
    transform : fitted scikit-learn transformer, default=None
        Applied to X first (the leading steps of a Pipeline).
    n_features : int, default=None
        Expected number of columns after ``transform`` (scikit-learn models).
    binary_target : bool, default=False
        Encode labels as 0./1. floats for a single-logit sigmoid output.
    description : str
        What the model was, for messages.
    feature_names : ndarray of str, default=None
        Column names X must have (a scikit-learn model's ``feature_names_in_``
        or the DataFrame columns seen at ``fit``), in this order.
    feature_shape : tuple, default=None
        Shape of one row of X as the module takes it (torch models).
    target_shape : tuple, default=None
        Exact shape of one row of y (class indices for a cross-entropy).
    target_size : int, default=None
        Number of values in one row of y (targets of a squared error or a
        single-logit cross-entropy).
    class_weights : callable, default=None
        ``(prepared y, sample_weight or None) -> (n,)`` per-row weights that
        the model's own class weighting adds to the objective.
    at_minimum : bool, default=False
        Whether the module's parameters should minimize the objective (a
        converged scikit-learn fit): ``fit`` then measures its gradient.
    ignore_index : int, default=None
        A class index per-position targets may hold to leave a position out
        of the loss (``-100`` for sequences).
    """

    def __init__(
        self,
        module,
        loss,
        *,
        l2=None,
        classes=None,
        n_classes=None,
        transform=None,
        n_features=None,
        binary_target=False,
        description="",
        feature_names=None,
        feature_shape=None,
        target_shape=None,
        target_size=None,
        class_weights=None,
        at_minimum=False,
        ignore_index=None,
    ):
        self.module = module
        self.loss = loss
        self.l2 = dict(l2 or {})
        self.classes = classes
        self.n_classes = n_classes
        self.transform = transform
        self.n_features = n_features
        self.binary_target = binary_target
        self.description = description
        self.feature_names = feature_names
        self.feature_shape = feature_shape
        self.target_shape = target_shape
        self.target_size = target_size
        self.class_weights = class_weights
        self.at_minimum = at_minimum
        self.ignore_index = ignore_index

    def trainable_parameters(self):
        """``{name: tensor}`` of the parameters that require gradients."""
        return {
            name: p for name, p in self.module.named_parameters() if p.requires_grad
        }

    def fixed_tensors(self):
        """``{name: tensor}`` of buffers and frozen parameters."""
        fixed = dict(self.module.named_buffers())
        fixed.update(
            (name, p)
            for name, p in self.module.named_parameters()
            if not p.requires_grad
        )
        return fixed

    def prepare_X(self, X, name="X"):
        """X as the CPU tensor the module takes, checked first."""
        check_feature_names(X, self.feature_names, name)
        if self.transform is not None:
            X = self.transform.transform(X)
        X = check_features(X, name)
        if self.n_features is not None:
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2:
                raise ValueError(
                    f"{name} must be 2-D (rows x features) for the model "
                    f"({self.description}), got shape {X.shape}; a single feature "
                    f"is {name}.reshape(-1, 1)."
                )
            if X.shape[1] != self.n_features:
                shape = X.shape[1]
                raise ValueError(
                    f"{name} has {shape} features, but the model ({self.description}) "
                    f"was fitted with {self.n_features} features."
                )
        X = to_tensor(X)
        if self.feature_shape is not None and not self._fits_feature_shape(X):
            raise ValueError(
                f"{name} has rows of shape {tuple(X.shape[1:])}, but the model "
                f"({self.description}) was fitted on rows of shape "
                f"{self.feature_shape}; pass the same features as at fit."
            )
        return X

    def _fits_feature_shape(self, X):
        if X.is_floating_point():
            return tuple(X.shape[1:]) == self.feature_shape
        # integer rows (token indices) may differ in length, not in rank
        return X.ndim - 1 == len(self.feature_shape)

    def prepare_y(self, y, name="y"):
        """y as the CPU tensor the loss takes (labels encoded as indices)."""
        if self.classes is not None:
            labels = to_numpy(y)
            if labels.ndim != 1:
                raise ValueError(
                    f"{name} must be a 1-D array of class labels for a "
                    f"{self.description}, got shape {labels.shape}; pass "
                    f"{name}.ravel() if it holds one label per row."
                )
            codes = np.searchsorted(self.classes, labels)
            codes = np.clip(codes, 0, len(self.classes) - 1)
            unseen = labels != self.classes[codes]
            if np.any(unseen):
                raise ValueError(
                    f"{name} contains labels never seen in fit: "
                    f"{sorted(set(np.asarray(labels)[unseen].tolist()))[:10]}; "
                    f"the model knows {self.classes.tolist()}."
                )
            target = torch.from_numpy(codes.astype(np.int64))
            return target.double() if self.binary_target else target
        target = to_tensor(y)
        self._check_target_shape(target, name)
        if self.n_classes is not None:
            if target.is_floating_point() and torch.any(target != target.round()):
                raise ValueError(
                    f"{name} must hold integer class indices for a classification "
                    "loss, got non-integer floats."
                )
            target = target.long()
            bad = (target < 0) | (target >= self.n_classes)
            if self.ignore_index is not None:
                bad &= target != self.ignore_index
            if bool(bad.any()):
                raise ValueError(
                    f"{name} contains labels never seen in fit: "
                    f"{sorted(set(target[bad].tolist()))[:10]}; the model has "
                    f"{self.n_classes} outputs, so labels must be in "
                    f"0..{self.n_classes - 1}{self._ignored()}."
                )
        return target

    def _ignored(self):
        if self.ignore_index is None:
            return ""
        return f" (or {self.ignore_index} for a position left out of the loss)"

    def _check_target_shape(self, target, name):
        row = tuple(target.shape[1:])
        if self.target_shape is not None and row != self.target_shape:
            raise ValueError(
                f"{name} has rows of shape {row}, but the {self.description}'s "
                f"outputs need class indices of shape {self.target_shape} per row "
                f"(one label per row: a 1-D {name}); pass {name}.ravel() if it "
                "holds one label per row."
            )
        size = int(np.prod(row))
        if self.target_size is not None and size != self.target_size:
            raise ValueError(
                f"{name} has {size} value(s) per row, but the {self.description} "
                f"outputs {self.target_size} per row, so loss='auto' cannot compare "
                f"them; pass targets of shape (n, {self.target_size}), class labels "
                "as integers (y.long()) for a classifier, or a loss callable that "
                "maps the outputs to one loss per row."
            )

    def __repr__(self):
        return f"AdaptedModel({self.description})"
