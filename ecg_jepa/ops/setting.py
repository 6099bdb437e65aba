"""Which backend each op runs: a runtime setting of this process, never a property of a model or checkpoint.

An op call resolves its backend when it runs (under ``torch.compile``, when it is traced), taking the first
that is set of: the call's own ``backend=`` (a module's, e.g. ``CroPAAttention(dim, heads, backend=...)``),
the innermost :func:`use_backend`, the last :func:`set_backend`, the environment variable of the op
(:data:`ENV`) and ``"auto"``. The setting is process-wide: every thread sees it. Under ``torch.compile`` a
change made with :func:`use_backend` / :func:`set_backend` recompiles the graph (it is guarded); a change of
the environment variable after the first compiled call is not seen.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

ENV: dict[str, str] = {"attention": "ECG_JEPA_ATTN_BACKEND", "embed": "ECG_JEPA_EMBED_BACKEND"}
"""The environment variable that names each op's backend when the program sets none."""

_SET: dict[str, str | None] = dict.fromkeys(ENV)


def current_backend(op: str, backend: str | None = None) -> str:
    """The backend name ``op`` ("attention" or "embed") runs with now: ``backend`` if given, else the
    setting (see the module's docstring). ``"auto"`` means the dispatcher picks."""
    return backend or _SET[op] or os.environ.get(ENV[op]) or "auto"


def set_backend(attention: str | None = None, embed: str | None = None) -> dict[str, str | None]:
    """Set the backend of CroPA attention and/or of the patch embedding for this process (None: leave that
    op's setting as it is); returns the settings before the call. Names are checked when an op runs."""
    before = dict(_SET)
    for op, name in (("attention", attention), ("embed", embed)):
        if name is not None:
            _SET[op] = name
    return before


@contextmanager
def use_backend(attention: str | None = None, embed: str | None = None) -> Iterator[None]:
    """``with use_backend(attention="triton"):`` the ops inside run those backends (None: unchanged); the
    settings before are restored on exit."""
    before = set_backend(attention, embed)
    try:
        yield
    finally:
        _SET.update(before)
