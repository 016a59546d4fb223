"""Global configuration, in the style of :func:`sklearn.set_config`."""

from contextlib import contextmanager

_CONFIG = {"max_score_memory": 2048}


def get_config():
    """Return a copy of the current dataval configuration.

    Returns
    -------
    config : dict
        ``max_score_memory`` (int, MiB): the largest dense frame that
        :meth:`score` builds before it asks for ``top_k`` instead.

    Examples
    --------
    >>> import dataval
    >>> dataval.get_config()["max_score_memory"]
    2048
    """
    return dict(_CONFIG)


def set_config(max_score_memory=None):
    """Set global dataval configuration.

    Parameters
    ----------
    max_score_memory : int, default=None
        Budget in MiB for the dense frame returned by ``score``. Larger
        requests raise an error that points to ``top_k`` and ``value``,
        which stream. ``None`` leaves the current value.

    Examples
    --------
    >>> import dataval
    >>> dataval.set_config(max_score_memory=512)
    >>> dataval.get_config()["max_score_memory"]
    512
    >>> dataval.set_config(max_score_memory=2048)
    """
    if max_score_memory is not None:
        if not isinstance(max_score_memory, (int, float)) or max_score_memory <= 0:
            raise ValueError(
                "max_score_memory must be a positive number of MiB, got "
                f"{max_score_memory!r}."
            )
        _CONFIG["max_score_memory"] = max_score_memory


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
