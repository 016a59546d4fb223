"""Global configuration, in the style of :func:`sklearn.set_config`."""

from contextlib import contextmanager

_CONFIG = {"max_score_memory": 2048, "working_memory": 512}


def get_config():
    """Return a copy of the current dataval configuration.

    Returns
    -------
    config : dict
        ``max_score_memory`` (int, MiB): the largest dense frame that
        :meth:`score` builds before it asks for ``top_k`` instead.
        ``working_memory`` (int, MiB): what one streaming step holds at once:
        a chunk of preconditioned test gradients with its score blocks.

    Examples
    --------
    >>> import dataval
    >>> dataval.get_config()["max_score_memory"]
    2048
    """
    return dict(_CONFIG)


def set_config(max_score_memory=None, working_memory=None):
    """Set global dataval configuration.

    Parameters
    ----------
    max_score_memory : int, default=None
        Budget in MiB for the dense frame returned by ``score``. Larger
        requests raise an error that points to ``top_k`` and ``value``,
        which stream. ``None`` leaves the current value.
    working_memory : int, default=None
        Budget in MiB of one streaming step of ``score``, ``top_k``,
        ``value`` and ``self_influence`` (per parallel worker). Smaller
        budgets mean more, smaller chunks: same results, lower peak memory.
        ``None`` leaves the current value.

    Examples
    --------
    >>> import dataval
    >>> dataval.set_config(max_score_memory=512)
    >>> dataval.get_config()["max_score_memory"]
    512
    >>> dataval.set_config(max_score_memory=2048)
    """
    for name, value in [
        ("max_score_memory", max_score_memory),
        ("working_memory", working_memory),
    ]:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number of MiB, got {value!r}.")
        _CONFIG[name] = value


@contextmanager
def config_context(**new_config):
    """Temporarily change the configuration inside a ``with`` block.

    Examples
    --------
    >>> import dataval
    >>> with dataval.config_context(max_score_memory=1):
    ...     dataval.get_config()["max_score_memory"]
    1
    """
    old = get_config()
    set_config(**new_config)
    try:
        yield
    finally:
        _CONFIG.update(old)
