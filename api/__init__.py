"""netc: a declarative neural-network compiler.

    net = netc.compile("specs/lenet5.net")      # the checked graph, with shapes and counts
    net = netc.compile("lenet5")                # a zoo spec by name (they ship with netc)
    print(netc.compiler.report.summary(net))     # the lecture's table
"""
from netc.compiler import Net, compile  # noqa: A004
from netc.dsl import DataError, NetcError, NumericsError, ShapeError, SpecError
from netc.interop import export_onnx, import_model

__version__ = "0.1.0"

__all__ = ["compile", "Model", "gradcheck", "Net", "NetcError", "SpecError", "ShapeError", "DataError",
           "NumericsError", "export_onnx", "import_model"]


def __getattr__(name):
    """The runtime (and numba) load only when asked for: summary/check/draw never need them."""
    if name in ("Model", "gradcheck", "optimizer", "train", "Schedule", "ensemble"):
        from netc import runtime
        return getattr(runtime, name)
    raise AttributeError(f"module 'netc' has no attribute {name!r}")
