"""EK-FAC: K-FAC's eigenbases with eigenvalues refitted to the data."""

import torch

from ..._core.stream import working_bytes
from ..._layers import flush_denormals
from .kfac import KFACInfluence

# share of the working memory for rotated per-sample gradients formed at once
# (layers with positions)
_CHUNK_SHARE = 1 / 8


class EKFACInfluence(KFACInfluence):
    """Influence through an eigenvalue-corrected Kronecker-factored curvature.

    Uses the eigenbases ``Q_A``, ``Q_S`` of :class:`KFACInfluence` but replaces
    the Kronecker eigenvalues ``eig(S) eig(A)^T`` by the curvature's exact
    diagonal in that basis, ``Lambda = E[(Q_S^T G_n Q_A)^2]`` over the
    per-sample gradients ``G_n`` (George et al., 2018; Grosse et al., 2023).
    It is the best diagonal approximation in the Kronecker eigenbasis, and
    never worse than K-FAC there. With one position per row (an MLP)
    ``Q_S^T G_n Q_A`` is the outer product ``(Q_S^T g_n)(Q_A^T a_n)^T``, so
    ``Lambda`` is a single matrix product over the rows; with sequence or
    spatial positions the rotated per-sample gradients are formed in chunks.
    When the layer signals of the first pass fit in working memory they are
    reused, so the fit costs one pass over the data.

    Parameters and attributes are those of :class:`KFACInfluence`;
    ``eigenvalues_`` holds the corrected eigenvalues.

    Parameters
    ----------
    damping : "auto" or float, default="auto"
        ``lambda`` added to every layer's eigenvalues; ``"auto"`` is 0.1 times
        the mean corrected eigenvalue over all selected parameters. The
        model's L2 term is added on top (see ``damping_``).
    measurement, loss, batch_size, device, dtype, random_state, verbose, n_jobs, fisher, layers, query_rank
        As in :class:`KFACInfluence`.

    Attributes
    ----------
    layers_ : list of str
        The layers the influence is computed over.
    eigenvalues_ : dict of str to torch.Tensor of shape (d_out, d_in)
        Corrected eigenvalues of each layer's curvature, undamped.
    damping_ : float
        The ``lambda`` added to every layer's eigenvalues, as in
        :class:`KFACInfluence`.
    n_train_ : int
        Number of training rows.
    n_params_ : int
        Number of parameters in the selected layers.
    train_index_ : pandas.Index
        Index of the training rows (named ``train``).

    See Also
    --------
    KFACInfluence : Kronecker eigenvalues, no correction pass.

    Examples
    --------
    >>> import torch
    >>> from dataval import EKFACInfluence
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ... )
    >>> X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    >>> inf = EKFACInfluence(random_state=0).fit(net, X, y)
    >>> inf.eigenvalues_["0"].shape
    torch.Size([8, 5])
    >>> inf.self_influence().shape
    (40,)
    """

    _corrects_eigenvalues = True

    def _fit_eigenvalues(self, signals):
        if not self._corrects_eigenvalues:
            return super()._fit_eigenvalues(signals)
        totals = {
            name: torch.zeros_like(torch.outer(eig_S, eig_A))
            for name, (eig_S, eig_A) in self._factor_eigenvalues.items()
        }
        for batch in signals:
            # flushed where read: squares, or the per-sample products
            for name, (a, g) in self._rotate(batch, flush=False).items():
                totals[name] += _squared_rotated_gradients(a, g)
        return {name: total / self.n_train_ for name, total in totals.items()}


def _squared_rotated_gradients(a, g):
    """``sum_{k,b} (sum_l g_kbl a_bl^T)^2`` (d_out, d_in), elementwise square.

    ``a`` (B, L, d_in) and ``g`` (K, B, L, d_out) are rotated layer signals.
    """
    if a.shape[1] == 1:
        # (g a^T)^2 = g^2 (a^2)^T: one matrix product over the rows; squares
        # of tiny gradients are subnormal, which slows the product
        return flush_denormals((g[:, :, 0] ** 2).sum(0)).T @ a[:, 0] ** 2
    K, B, L, d_out = g.shape
    flush_denormals(g)  # read by the per-sample products below
    total = a.new_zeros(d_out, a.shape[2])
    chunk = max(
        1, working_bytes(_CHUNK_SHARE) // (K * d_out * a.shape[2] * a.element_size())
    )
    for start in range(0, B, chunk):
        rows = slice(start, start + chunk)
        # (K, b, d_out, d_in) per-sample gradients in the eigenbasis
        rotated = g[:, rows].transpose(2, 3) @ a[rows]
        total += (rotated**2).sum((0, 1))
    return total
