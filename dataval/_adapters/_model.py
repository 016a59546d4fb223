"""The common form every accepted model is turned into."""

import numpy as np
import torch

from .._validation import to_numpy, to_tensor


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

    def prepare_X(self, X):
        """X as the CPU tensor the module takes."""
        if self.transform is not None:
            X = self.transform.transform(X)
        if self.n_features is not None:
            X = np.asarray(to_numpy(X), dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != self.n_features:
                shape = X.shape[1] if X.ndim == 2 else X.shape
                raise ValueError(
                    f"X has {shape} features, but the model ({self.description}) "
                    f"was fitted with {self.n_features} features."
                )
        return to_tensor(X)

    def prepare_y(self, y):
        """y as the CPU tensor the loss takes (labels encoded as indices)."""
        if self.classes is not None:
            labels = to_numpy(y)
            codes = np.searchsorted(self.classes, labels)
            codes = np.clip(codes, 0, len(self.classes) - 1)
            unseen = labels != self.classes[codes]
            if np.any(unseen):
                raise ValueError(
                    f"y contains labels never seen in fit: "
                    f"{sorted(set(np.asarray(labels)[unseen].tolist()))[:10]}; "
                    f"the model knows {self.classes.tolist()}."
                )
            target = torch.from_numpy(codes.astype(np.int64))
            return target.double() if self.binary_target else target
        target = to_tensor(y)
        if self.n_classes is not None:
            if target.is_floating_point() and torch.any(target != target.round()):
                raise ValueError(
                    "y must hold integer class indices for a classification loss, "
                    "got non-integer floats."
                )
            target = target.long()
            bad = (target < 0) | (target >= self.n_classes)
            if bool(bad.any()):
                raise ValueError(
                    f"y contains labels never seen in fit: "
                    f"{sorted(set(target[bad].tolist()))[:10]}; the model has "
                    f"{self.n_classes} outputs, so labels must be in "
                    f"0..{self.n_classes - 1}."
                )
        return target

    def __repr__(self):
        return f"AdaptedModel({self.description})"
