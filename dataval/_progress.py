"""Progress bars: one per phase of an estimator's work, not one per loop.

A public method opens a *phase* (``fit``: "curvature"; the scoring methods:
"scoring") with a ``with`` block, which adds no stack frame, so warnings keep
pointing at the user's call. Every batch loop or iteration run inside it
advances that one bar, drawn at the first loop (a phase with no loop draws
nothing), whose total grows as the loops announce their lengths and whose
postfix names the loop running. The bar
belongs to the thread that opened the phase: loops of parallel workers on
other threads advance none. A loop outside any phase, on the main thread,
gets a bar of its own.
"""

import threading
from contextlib import contextmanager

from tqdm.auto import tqdm

_local = threading.local()


@contextmanager
def phase(desc, verbose):
    """One bar for the tracked loops inside; nested phases join the outer one."""
    if not verbose or getattr(_local, "desc", None) is not None:
        yield
        return
    _local.desc, _local.bar = desc, None
    try:
        yield
    finally:
        if _local.bar is not None:
            _local.bar.close()
        _local.desc, _local.bar = None, None


def tracked(iterable, n, desc, verbose):
    """Iterate over ``iterable`` (``n`` items), advancing the active phase's bar."""
    if getattr(_local, "desc", None) is None:
        if verbose and threading.current_thread() is threading.main_thread():
            with phase(desc, verbose):
                yield from tracked(iterable, n, desc, verbose)
        else:
            yield from iterable
        return
    if _local.bar is None:
        _local.bar = tqdm(total=n, desc=_local.desc, unit="step")
    else:
        _local.bar.total += n
    # the loop running now ("train", "Lanczos", "conjugate gradient", ...)
    _local.bar.set_postfix_str(desc)
    for item in iterable:
        yield item
        if _local.bar is not None:
            _local.bar.update()
