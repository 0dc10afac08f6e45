"""Caffe's message classes for the part of its schema netc reads, built without protoc.

The table below is the subset of Caffe's `caffe.proto` (BVLC master) that netc reads: the
network, its layers (V2 `layer`, and the V1 `layers` of old model files), their blobs, and the
parameters of the layer types netc imports, with Caffe's field numbers, types and defaults,
which are facts of its wire format. Every message is whole except the two layer messages,
which leave out the parameters of the layer types netc does not import. A
`FileDescriptorProto` is built from it in a private descriptor pool and protobuf makes the
classes; protobuf's own text and binary parsers then read .prototxt and .caffemodel files;
fields outside the table are skipped (caffe.py) or, in a binary file, kept as unknown."""
from __future__ import annotations

from functools import lru_cache

# field: (name, number, type, default); a type ending in "*" is repeated, in "*p" repeated and
# packed; a capitalised type is a message or enum of this file
_MESSAGES = {
    "BlobShape": [("dim", 1, "int64*p")],
    "BlobProto": [("shape", 7, "BlobShape"), ("data", 5, "float*p"), ("diff", 6, "float*p"),
                  ("double_data", 8, "double*p"), ("double_diff", 9, "double*p"),
                  ("num", 1, "int32"), ("channels", 2, "int32"), ("height", 3, "int32"),
                  ("width", 4, "int32")],
    "FillerParameter": [("type", 1, "string", "constant"), ("value", 2, "float"),
                        ("min", 3, "float"), ("max", 4, "float", "1"), ("mean", 5, "float"),
                        ("std", 6, "float", "1"), ("sparse", 7, "int32", "-1"),
                        ("variance_norm", 8, "FillerParameter.VarianceNorm", "FAN_IN")],
    "NetParameter": [("name", 1, "string"), ("input", 3, "string*"),
                     ("input_shape", 8, "BlobShape*"), ("input_dim", 4, "int32*"),
                     ("force_backward", 5, "bool"), ("state", 6, "NetState"),
                     ("debug_info", 7, "bool"), ("layer", 100, "LayerParameter*"),
                     ("layers", 2, "V1LayerParameter*")],
    "NetState": [("phase", 1, "Phase", "TEST"), ("level", 2, "int32"), ("stage", 3, "string*")],
    "NetStateRule": [("phase", 1, "Phase"), ("min_level", 2, "int32"),
                     ("max_level", 3, "int32"), ("stage", 4, "string*"),
                     ("not_stage", 5, "string*")],
    "ParamSpec": [("name", 1, "string"), ("share_mode", 2, "ParamSpec.DimCheckMode"),
                  ("lr_mult", 3, "float", "1"), ("decay_mult", 4, "float", "1")],
    "LayerParameter": [
        ("name", 1, "string"), ("type", 2, "string"), ("bottom", 3, "string*"),
        ("top", 4, "string*"), ("phase", 10, "Phase"), ("loss_weight", 5, "float*"),
        ("param", 6, "ParamSpec*"), ("blobs", 7, "BlobProto*"),
        ("propagate_down", 11, "bool*"), ("include", 8, "NetStateRule*"),
        ("exclude", 9, "NetStateRule*"), ("transform_param", 100, "TransformationParameter"),
        ("batch_norm_param", 139, "BatchNormParameter"), ("concat_param", 104, "ConcatParameter"),
        ("convolution_param", 106, "ConvolutionParameter"),
        ("dropout_param", 108, "DropoutParameter"), ("eltwise_param", 110, "EltwiseParameter"),
        ("elu_param", 140, "ELUParameter"), ("flatten_param", 135, "FlattenParameter"),
        ("inner_product_param", 117, "InnerProductParameter"),
        ("input_param", 143, "InputParameter"), ("lrn_param", 118, "LRNParameter"),
        ("pooling_param", 121, "PoolingParameter"), ("prelu_param", 131, "PReLUParameter"),
        ("relu_param", 123, "ReLUParameter"), ("scale_param", 142, "ScaleParameter"),
        ("softmax_param", 125, "SoftmaxParameter"), ("sigmoid_param", 124, "SigmoidParameter"),
        ("tanh_param", 127, "TanHParameter")],
    "V1LayerParameter": [
        ("bottom", 2, "string*"), ("top", 3, "string*"), ("name", 4, "string"),
        ("include", 32, "NetStateRule*"), ("exclude", 33, "NetStateRule*"),
        ("type", 5, "V1LayerParameter.LayerType"), ("blobs", 6, "BlobProto*"),
        ("param", 1001, "string*"), ("blobs_lr", 7, "float*"), ("weight_decay", 8, "float*"),
        ("loss_weight", 35, "float*"), ("concat_param", 9, "ConcatParameter"),
        ("convolution_param", 10, "ConvolutionParameter"),
        ("dropout_param", 12, "DropoutParameter"), ("eltwise_param", 24, "EltwiseParameter"),
        ("inner_product_param", 17, "InnerProductParameter"), ("lrn_param", 18, "LRNParameter"),
        ("pooling_param", 19, "PoolingParameter"), ("relu_param", 30, "ReLUParameter"),
        ("softmax_param", 39, "SoftmaxParameter"), ("sigmoid_param", 38, "SigmoidParameter"),
        ("tanh_param", 37, "TanHParameter"),
        ("transform_param", 36, "TransformationParameter")],
    "TransformationParameter": [("scale", 1, "float", "1"), ("mirror", 2, "bool"),
                                ("crop_size", 3, "uint32"), ("mean_file", 4, "string"),
                                ("mean_value", 5, "float*"), ("force_color", 6, "bool"),
                                ("force_gray", 7, "bool")],
    "BatchNormParameter": [("use_global_stats", 1, "bool"),
                           ("moving_average_fraction", 2, "float", "0.999"),
                           ("eps", 3, "float", "1e-05")],
    "ConcatParameter": [("axis", 2, "int32", "1"), ("concat_dim", 1, "uint32", "1")],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32"), ("bias_term", 2, "bool", "true"), ("pad", 3, "uint32*"),
        ("kernel_size", 4, "uint32*"), ("stride", 6, "uint32*"), ("dilation", 18, "uint32*"),
        ("pad_h", 9, "uint32"), ("pad_w", 10, "uint32"), ("kernel_h", 11, "uint32"),
        ("kernel_w", 12, "uint32"), ("stride_h", 13, "uint32"), ("stride_w", 14, "uint32"),
        ("group", 5, "uint32", "1"), ("weight_filler", 7, "FillerParameter"),
        ("bias_filler", 8, "FillerParameter"), ("axis", 16, "int32", "1"),
        ("force_nd_im2col", 17, "bool"),
        ("engine", 15, "ConvolutionParameter.Engine", "DEFAULT")],
    "DropoutParameter": [("dropout_ratio", 1, "float", "0.5")],
    "EltwiseParameter": [("operation", 1, "EltwiseParameter.EltwiseOp", "SUM"),
                         ("coeff", 2, "float*"), ("stable_prod_grad", 3, "bool", "true")],
    "ELUParameter": [("alpha", 1, "float", "1")],
    "FlattenParameter": [("axis", 1, "int32", "1"), ("end_axis", 2, "int32", "-1")],
    "InnerProductParameter": [
        ("num_output", 1, "uint32"), ("bias_term", 2, "bool", "true"),
        ("weight_filler", 3, "FillerParameter"), ("bias_filler", 4, "FillerParameter"),
        ("axis", 5, "int32", "1"), ("transpose", 6, "bool")],
    "InputParameter": [("shape", 1, "BlobShape*")],
    "LRNParameter": [("local_size", 1, "uint32", "5"), ("alpha", 2, "float", "1"),
                     ("beta", 3, "float", "0.75"),
                     ("norm_region", 4, "LRNParameter.NormRegion", "ACROSS_CHANNELS"),
                     ("k", 5, "float", "1"), ("engine", 6, "LRNParameter.Engine", "DEFAULT")],
    "PoolingParameter": [
        ("pool", 1, "PoolingParameter.PoolMethod", "MAX"), ("pad", 4, "uint32"),
        ("pad_h", 9, "uint32"), ("pad_w", 10, "uint32"), ("kernel_size", 2, "uint32"),
        ("kernel_h", 5, "uint32"), ("kernel_w", 6, "uint32"), ("stride", 3, "uint32", "1"),
        ("stride_h", 7, "uint32"), ("stride_w", 8, "uint32"), ("global_pooling", 12, "bool"),
        ("round_mode", 13, "PoolingParameter.RoundMode", "CEIL"),
        ("engine", 11, "PoolingParameter.Engine", "DEFAULT")],
    "PReLUParameter": [("filler", 1, "FillerParameter"), ("channel_shared", 2, "bool")],
    "ReLUParameter": [("negative_slope", 1, "float"),
                      ("engine", 2, "ReLUParameter.Engine", "DEFAULT")],
    "SigmoidParameter": [("engine", 1, "SigmoidParameter.Engine", "DEFAULT")],
    "TanHParameter": [("engine", 1, "TanHParameter.Engine", "DEFAULT")],
    "ScaleParameter": [("axis", 1, "int32", "1"), ("num_axes", 2, "int32", "1"),
                       ("filler", 3, "FillerParameter"), ("bias_term", 4, "bool"),
                       ("bias_filler", 5, "FillerParameter")],
    "SoftmaxParameter": [("axis", 2, "int32", "1"),
                         ("engine", 1, "SoftmaxParameter.Engine", "DEFAULT")],
}

# enums: top-level ones by name, nested ones as "Message.Enum" (their values are scoped there)
_ENUMS = {
    "Phase": ["TRAIN", "TEST"],
    "FillerParameter.VarianceNorm": ["FAN_IN", "FAN_OUT", "AVERAGE"],
    "ParamSpec.DimCheckMode": ["STRICT", "PERMISSIVE"],
    "EltwiseParameter.EltwiseOp": ["PROD", "SUM", "MAX"],
    "LRNParameter.NormRegion": ["ACROSS_CHANNELS", "WITHIN_CHANNEL"],
    "PoolingParameter.PoolMethod": ["MAX", "AVE", "STOCHASTIC"],
    "PoolingParameter.RoundMode": ["CEIL", "FLOOR"],
    **{f"{m}.Engine": ["DEFAULT", "CAFFE", "CUDNN"] for m in (
        "ConvolutionParameter", "LRNParameter", "PoolingParameter", "ReLUParameter",
        "SigmoidParameter", "SoftmaxParameter", "TanHParameter")},
    "V1LayerParameter.LayerType": {
        "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
        "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6,
        "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38, "FLATTEN": 8,
        "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11, "IMAGE_DATA": 12,
        "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
        "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18,
        "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20,
        "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24,
        "THRESHOLD": 31},
}

# V1's layer-type enum -> the V2 type string of the same layer
V1_TYPES = {
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "POOLING": "Pooling",
    "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU", "SIGMOID": "Sigmoid", "TANH": "TanH",
    "LRN": "LRN", "DROPOUT": "Dropout", "CONCAT": "Concat", "ELTWISE": "Eltwise",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "FLATTEN": "Flatten", "DATA": "Data", "IMAGE_DATA": "ImageData", "HDF5_DATA": "HDF5Data",
    "MEMORY_DATA": "MemoryData", "DUMMY_DATA": "DummyData", "WINDOW_DATA": "WindowData",
    "ACCURACY": "Accuracy", "SILENCE": "Silence",
}

_SCALARS = {"double": 1, "float": 2, "int64": 3, "uint64": 4, "int32": 5, "bool": 8,
            "string": 9, "bytes": 12, "uint32": 13}


def _enum(container, name, values):
    enum = container.enum_type.add(name=name)
    items = values.items() if isinstance(values, dict) else ((v, i) for i, v in enumerate(values))
    for value, number in items:
        enum.value.add(name=value, number=number)


def _field(message, spec):
    from google.protobuf import descriptor_pb2 as d

    name, number, kind, default = (*spec, None)[:4]
    repeated, packed = "*" in kind, kind.endswith("*p")
    base = kind.split("*")[0]
    field = message.field.add(name=name, number=number, json_name=name,
                              label=d.FieldDescriptorProto.LABEL_REPEATED if repeated
                              else d.FieldDescriptorProto.LABEL_OPTIONAL)
    if base in _SCALARS:
        field.type = _SCALARS[base]
    else:
        field.type_name = f".caffe.{base}"
        field.type = (d.FieldDescriptorProto.TYPE_ENUM if base in _ENUMS
                      else d.FieldDescriptorProto.TYPE_MESSAGE)
    if default is not None:
        field.default_value = default
    if packed:
        field.options.packed = True


def _file():
    from google.protobuf import descriptor_pb2 as d

    proto = d.FileDescriptorProto(name="netc_caffe.proto", package="caffe", syntax="proto2")
    messages = {}
    for name, fields in _MESSAGES.items():
        messages[name] = proto.message_type.add(name=name)
        for spec in fields:
            _field(messages[name], spec)
    for name, values in _ENUMS.items():
        outer, _, inner = name.rpartition(".")
        _enum(messages[outer] if outer else proto, inner, values)
    return proto


@lru_cache(maxsize=1)
def classes() -> dict:
    """Message name -> generated class (NetParameter, LayerParameter, BlobProto, ...), built
    once in a descriptor pool of their own (no clash with any other `caffe` package)."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name in _MESSAGES}
