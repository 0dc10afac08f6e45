"""netc and the other tools: a network with its weights out as ONNX, and ONNX graphs or Caffe
definitions in as lecture-notation specs with a netc checkpoint.

    netc.export_onnx("runs/digits/best.npz", "digits.onnx")     # a checkpoint, a Model or a spec
    imported = netc.import_model("model.onnx")                  # or "deploy.prototxt"
    imported.text, imported.arrays                              # the .net spec, its weights
"""
from __future__ import annotations

import os

import numpy as np

from netc.dsl.errors import NetcError


def export_onnx(source, path: str, spec=None, raw: bool = False, seed: int = 0) -> str:
    """Write `source` as an ONNX model at `path` and return the path.

    source: a checkpoint's path or a `netc.Model` (its weights, and the input normalization it
    was trained with, `Model.normalization`, which becomes the graph's first nodes unless `raw`),
    or a spec (a Net, a path or the text: freshly initialized weights from `seed`, no
    normalization). `spec`: the spec a checkpoint must match (by default the one it carries)."""
    from netc.compiler.interop import onnx_export
    model = _weights(source, spec, seed)
    arrays = {k: np.asarray(model.device.to_host(v)) for k, v in model.state().items()}
    mean, std = model.normalization or (None, None)
    net = model.net
    # the weights of a checkpoint or spec go once they are in the proto, before the file is
    # serialized (another copy): VGG-11's `netc export` peaked at 2.29 GB of RSS, now 1.77
    del model
    proto = onnx_export.build(net, arrays, mean, std, raw)
    del arrays
    return onnx_export.save(proto, path)


def _weights(source, spec, seed):
    """The Model of export_onnx's source."""
    from netc.compiler import Net
    from netc.runtime import Model
    if isinstance(source, Model):
        return source
    if isinstance(source, str) and source.endswith(".npz"):
        return Model.load(source, spec=spec)
    if isinstance(source, (Net, str)):
        return Model(source, seed=seed)
    raise NetcError(f"export_onnx takes a checkpoint's path, a netc.Model or a spec; received "
                    f"{type(source).__name__}")


class Imported:
    """An imported network: `text` (the .net spec), `arrays` (its parameters and buffers by the
    spec's names, none when the source had no weights; the input normalization under NORM_KEYS
    where it had one), `network` (the intermediate form), `net` (the spec compiled)."""

    def __init__(self, network, text: str, arrays: dict, net=None):
        self.network, self.text, self.arrays, self.net = network, text, arrays, net

    @property
    def has_weights(self) -> bool:
        """Whether the source gave parameters (a normalization alone is not weights)."""
        return any(not k.startswith("__") for k in self.arrays)

    def save_spec(self, path: str) -> str:
        from netc.runtime.runs import writing
        with writing(path):
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.text)
        return path

    def save_weights(self, path: str) -> str:
        """The weights as a netc checkpoint (with the spec, its hash and the normalization the
        source applied, if any), loadable by netc.Model.load, netc eval and netc predict."""
        from netc.compiler import compile as compile_spec
        from netc.runtime import checks
        from netc.runtime.model import NORM_KEYS, check_state, state_shapes, write_checkpoint
        if not self.has_weights:
            raise NetcError("the imported network has no weights to save",
                            "give the weights too (for Caffe: --caffemodel M.caffemodel)")
        # written as Model.with_state(...).save(path) writes them (float32, in the model's
        # order), without the model's copy of every array (VGG-11: 0.8 s and 530 MB)
        net = self.net or compile_spec(self.text)
        shapes = state_shapes(net)
        arrays = {k: v for k, v in self.arrays.items() if not k.startswith("__")}
        check_state(shapes, arrays, source="the imported model")
        norm = None
        if NORM_KEYS[0] in self.arrays:
            norm = checks.normalization(self.arrays[NORM_KEYS[0]],
                                        self.arrays.get(NORM_KEYS[1], 1.0), net.input_shape,
                                        "the model")
        state = {k: np.ascontiguousarray(arrays[k], np.float32) for k in shapes}
        return write_checkpoint(path, net, state, "float32", norm)


def import_model(path, caffemodel: str | None = None) -> Imported:
    """An ONNX file (.onnx) or a Caffe definition (.prototxt, with its .caffemodel's weights if
    given) as a netc spec in lecture notation and its weights. `path` may also be an ONNX model
    in memory: its serialized bytes (what torch.onnx.export wrote into a BytesIO) or an
    onnx.ModelProto, which is only read."""
    from netc.compiler.interop import write
    in_memory = not isinstance(path, (str, os.PathLike))  # (onnx_import checks what it is)
    if not in_memory:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise NetcError(f"no such file: {path}")
    if in_memory or path.endswith(".onnx"):
        if caffemodel:
            raise NetcError("--caffemodel goes with a Caffe .prototxt, not an ONNX "
                            + ("model" if in_memory else "file"))
        from netc.compiler.interop import onnx_import
        network = onnx_import.read(path)
    elif path.endswith(".prototxt"):
        from netc.compiler.interop import caffe
        network = caffe.read(path, caffemodel)
    else:
        raise NetcError(f"cannot tell what {path} is from its name",
                        "netc imports ONNX files (.onnx) and Caffe definitions (.prototxt)")
    written = write.write(network)
    return Imported(network, written.text, written.arrays, written.net)
