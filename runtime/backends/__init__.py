"""Backends: where a network runs. One folder per backend (cpu/ now), each holding one
implementation per layer family, registered per (kind, backend) in registry.py; context.py is
what the autodiff walk hands an implementation; elementwise.py is the per-element math every
backend's kernels share; cache.py keeps Numba's cache per module and version of its source
(imported first, so that it applies to every kernel)."""
from . import cache  # noqa: F401 - configures Numba's cache before any kernel is defined
