"""Interop with other tools: ONNX out (onnx_export), ONNX and Caffe in (onnx_import, caffe),
through one intermediate form (ir) that the spec writer (write) turns into lecture notation.

Nothing here imports numba; the `onnx` package (the `[onnx]` extra) is imported only by the
functions that read or write ONNX files."""
