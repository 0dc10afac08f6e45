"""Caffe in (compiler/interop/caffe.py): prototxt texts written here in the style of BVLC's
reference models (AlexNet deploy, CaffeNet train_val, GoogLeNet, ResNet-50, LeNet in the V1
format) read into the intermediate form; their totals through the writer against the published
counts; weights from a .caffemodel built with the schema's classes; the errors."""
import numpy as np
import pytest

pytest.importorskip("google.protobuf")

import netc  # noqa: E402
from netc.compiler.interop import caffe  # noqa: E402
from netc.compiler.interop.caffe_schema import classes  # noqa: E402
from netc.compiler.interop.ir import InteropError  # noqa: E402
from netc.compiler.interop.write import write  # noqa: E402
from netc.dsl.errors import NetcError  # noqa: E402


def _layer(name, kind, bottom, top=None, body=""):
    bottoms = "".join(f' bottom: "{b}"' for b in ([bottom] if isinstance(bottom, str) else bottom))
    return (f'layer {{\n  name: "{name}"\n  type: "{kind}"\n {bottoms}\n  top: "{top or name}"\n'
            f'{body}}}\n')


def _conv(name, bottom, n, k, s=1, pad=0, group=1, bias=True, relu=True):
    extra = (f" stride: {s}" * (s > 1) + f" pad: {pad}" * (pad > 0)
             + f" group: {group}" * (group > 1) + " bias_term: false" * (not bias))
    body = ('  param { lr_mult: 1 decay_mult: 1 }\n  param { lr_mult: 2 decay_mult: 0 }\n'
            f'  convolution_param {{\n    num_output: {n}\n    kernel_size: {k}{extra}\n'
            '    weight_filler { type: "gaussian" std: 0.01 }\n'
            '    bias_filler { type: "constant" value: 0 }\n  }\n')
    text = _layer(name, "Convolution", bottom, body=body)
    if relu:
        text += _layer(f"relu_{name}", "ReLU", name, name)
    return text


def _pool(name, bottom, k, s, method="MAX", pad=0):
    pad = f" pad: {pad}" if pad else ""
    return _layer(name, "Pooling", bottom,
                  body=f"  pooling_param {{ pool: {method} kernel_size: {k} stride: {s}{pad} }}\n")


def _lrn(name, bottom):
    return _layer(name, "LRN", bottom,
                  body="  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }\n")


def _fc(name, bottom, n, relu=True, drop=None):
    text = _layer(name, "InnerProduct", bottom,
                  body=f"  inner_product_param {{ num_output: {n} }}\n")
    if relu:
        text += _layer(f"relu_{name}", "ReLU", name, name)
    if drop:
        text += _layer(f"drop_{name}", "Dropout", name, name,
                       f"  dropout_param {{ dropout_ratio: {drop} }}\n")
    return text


INPUT = ('layer {{\n  name: "data"\n  type: "Input"\n  top: "data"\n'
         '  input_param {{ shape: {{ dim: 10 dim: 3 dim: {0} dim: {0} }} }}\n}}\n')

# bvlc_alexnet's deploy.prototxt: LRN before pooling, conv2/4/5 in two groups
ALEXNET = ('name: "AlexNet"\n' + INPUT.format(227)
           + _conv("conv1", "data", 96, 11, s=4) + _lrn("norm1", "conv1")
           + _pool("pool1", "norm1", 3, 2)
           + _conv("conv2", "pool1", 256, 5, pad=2, group=2) + _lrn("norm2", "conv2")
           + _pool("pool2", "norm2", 3, 2) + _conv("conv3", "pool2", 384, 3, pad=1)
           + _conv("conv4", "conv3", 384, 3, pad=1, group=2)
           + _conv("conv5", "conv4", 256, 3, pad=1, group=2) + _pool("pool5", "conv5", 3, 2)
           + _fc("fc6", "pool5", 4096, drop=0.5) + _fc("fc7", "fc6", 4096, drop=0.5)
           + _fc("fc8", "fc7", 1000, relu=False) + _layer("prob", "Softmax", "fc8"))

# bvlc_reference_caffenet's train_val.prototxt: pooling before LRN, data layers per phase,
# the loss and the accuracy
_DATA = ('layer {{\n  name: "data"\n  type: "Data"\n  top: "data"\n  top: "label"\n'
         '  include {{ phase: {0} }}\n'
         '  transform_param {{ mirror: {1} crop_size: 227 mean_value: 104 mean_value: 117 '
         'mean_value: 123 }}\n'
         '  data_param {{ source: "examples/imagenet/ilsvrc12_{2}_lmdb" batch_size: {3} '
         'backend: LMDB }}\n}}\n')
CAFFENET = ('name: "CaffeNet"\n' + _DATA.format("TRAIN", "true", "train", 256)
            + _DATA.format("TEST", "false", "val", 50)
            + _conv("conv1", "data", 96, 11, s=4) + _pool("pool1", "conv1", 3, 2)
            + _lrn("norm1", "pool1")
            + _conv("conv2", "norm1", 256, 5, pad=2, group=2) + _pool("pool2", "conv2", 3, 2)
            + _lrn("norm2", "pool2") + _conv("conv3", "norm2", 384, 3, pad=1)
            + _conv("conv4", "conv3", 384, 3, pad=1, group=2)
            + _conv("conv5", "conv4", 256, 3, pad=1, group=2) + _pool("pool5", "conv5", 3, 2)
            + _fc("fc6", "pool5", 4096, drop=0.5) + _fc("fc7", "fc6", 4096, drop=0.5)
            + _fc("fc8", "fc7", 1000, relu=False)
            + _layer("accuracy", "Accuracy", ["fc8", "label"],
                     body="  include { phase: TEST }\n")
            + _layer("loss", "SoftmaxWithLoss", ["fc8", "label"]))

# GoogLeNet's inception modules (bvlc_googlenet, deploy, no auxiliary classifiers)
INCEPTIONS = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool3",
              ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
              ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
              ("4e", 256, 160, 320, 32, 128, 128), "pool4",
              ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128)]


def _inception(bottom, name, c1, r3, c3, r5, c5, pp):
    n = f"inception_{name}"
    return (_conv(f"{n}/1x1", bottom, c1, 1) + _conv(f"{n}/3x3_reduce", bottom, r3, 1)
            + _conv(f"{n}/3x3", f"{n}/3x3_reduce", c3, 3, pad=1)
            + _conv(f"{n}/5x5_reduce", bottom, r5, 1)
            + _conv(f"{n}/5x5", f"{n}/5x5_reduce", c5, 5, pad=2)
            + _pool(f"{n}/pool", bottom, 3, 1, pad=1) + _conv(f"{n}/pool_proj", f"{n}/pool", pp, 1)
            + _layer(f"{n}/output", "Concat",
                     [f"{n}/1x1", f"{n}/3x3", f"{n}/5x5", f"{n}/pool_proj"]))


def _googlenet():
    text = ('name: "GoogleNet"\n' + INPUT.format(224)
            + _conv("conv1/7x7_s2", "data", 64, 7, s=2, pad=3)
            + _pool("pool1/3x3_s2", "conv1/7x7_s2", 3, 2) + _lrn("pool1/norm1", "pool1/3x3_s2")
            + _conv("conv2/3x3_reduce", "pool1/norm1", 64, 1)
            + _conv("conv2/3x3", "conv2/3x3_reduce", 192, 3, pad=1)
            + _lrn("conv2/norm2", "conv2/3x3")
            + _pool("pool2/3x3_s2", "conv2/norm2", 3, 2))
    bottom = "pool2/3x3_s2"
    for module in INCEPTIONS:
        if isinstance(module, str):
            text += _pool(f"{module}/3x3_s2", bottom, 3, 2)
            bottom = f"{module}/3x3_s2"
        else:
            text += _inception(bottom, *module)
            bottom = f"inception_{module[0]}/output"
    return (text + _pool("pool5/7x7_s1", bottom, 7, 1, "AVE")
            + _layer("pool5/drop_7x7_s1", "Dropout", "pool5/7x7_s1", "pool5/7x7_s1",
                     "  dropout_param { dropout_ratio: 0.4 }\n")
            + _fc("loss3/classifier", "pool5/7x7_s1", 1000, relu=False)
            + _layer("prob", "Softmax", "loss3/classifier"))


def _googlenet_params():
    """Counted from the layer shapes: k*k*c_in*c_out + c_out per convolution, the classifier."""
    convs = [(7, 3, 64), (1, 64, 64), (3, 64, 192)]
    c = 192
    for module in INCEPTIONS:
        if isinstance(module, str):
            continue
        _, c1, r3, c3, r5, c5, pp = module
        convs += [(1, c, c1), (1, c, r3), (3, r3, c3), (1, c, r5), (5, r5, c5), (1, c, pp)]
        c = c1 + c3 + c5 + pp
    return sum(k * k * a * b + b for k, a, b in convs) + c * 1000 + 1000


# ResNet-50 as He et al.'s Caffe release writes it: bias-free convolutions, each followed by
# BatchNorm (statistics) and Scale (gamma, beta), the stride in branch2a, Eltwise SUM + ReLU
def _bn(name, bottom):
    return (_layer(f"bn{name}", "BatchNorm", bottom, bottom,
                   "  batch_norm_param { use_global_stats: true }\n")
            + _layer(f"scale{name}", "Scale", bottom, bottom,
                     "  scale_param { bias_term: true }\n"))


def _res_block(bottom, name, width, out, stride, project):
    b = f"res{name}_branch"
    text = ""
    if project:
        text += (_conv(f"{b}1", bottom, out, 1, s=stride, bias=False, relu=False)
                 + _bn(f"{name}_branch1", f"{b}1"))
    for part, (c, k, s) in zip("abc", ((width, 1, stride), (width, 3, 1), (out, 1, 1))):
        before = bottom if part == "a" else f"{b}2{'ab'[part == 'c']}"
        text += (_conv(f"{b}2{part}", before, c, k, s=s, pad=k // 2, bias=False, relu=False)
                 + _bn(f"{name}_branch2{part}", f"{b}2{part}"))
        if part != "c":
            text += _layer(f"{b}2{part}_relu", "ReLU", f"{b}2{part}", f"{b}2{part}")
    shortcut = f"{b}1" if project else bottom
    return (text + _layer(f"res{name}", "Eltwise", [shortcut, f"{b}2c"])
            + _layer(f"res{name}_relu", "ReLU", f"res{name}", f"res{name}"))


def _resnet50():
    text = ('name: "ResNet-50"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 224\n'
            'input_dim: 224\n' + _conv("conv1", "data", 64, 7, s=2, pad=3, bias=False, relu=False)
            + _bn("_conv1", "conv1") + _layer("conv1_relu", "ReLU", "conv1", "conv1")
            + _pool("pool1", "conv1", 3, 2))
    bottom = "pool1"
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), start=2):
        for i in range(blocks):
            name = f"{stage}{'abcdef'[i]}"
            text += _res_block(bottom, name, width, 4 * width, 2 if i == 0 and stage > 2 else 1,
                               project=i == 0)
            bottom = f"res{name}"
    return (text + _pool("pool5", bottom, 7, 1, "AVE") + _fc("fc1000", "pool5", 1000, relu=False)
            + _layer("prob", "Softmax", "fc1000"))


# LeNet in the V1 format (`layers`, types as enums), the input declared at the top
LENET_V1 = '''name: "LeNet"
input: "data"
input_dim: 64
input_dim: 1
input_dim: 28
input_dim: 28
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "conv2" type: CONVOLUTION bottom: "pool1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 stride: 1 } }
layers { name: "pool2" type: POOLING bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 500 } }
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers { name: "ip2" type: INNER_PRODUCT bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 } }
layers { name: "prob" type: SOFTMAX bottom: "ip2" top: "prob" }
'''


def _read(tmp_path, text, name="net.prototxt", caffemodel=None):
    path = tmp_path / name
    path.write_text(text)
    return caffe.read(str(path), caffemodel=caffemodel)


def _kinds(network):
    return [layer.kind for layer in network.layers]


# ---- the intermediate form -----------------------------------------------------------------
def test_alexnet_deploy_layers(tmp_path):
    network = _read(tmp_path, ALEXNET)
    assert network.name == "AlexNet" and network.input_shape == (3, 227, 227)
    assert _kinds(network) == ["CONV", "RELU", "LRN", "POOL"] * 2 + ["CONV", "RELU"] * 3 + [
        "POOL", "FC", "RELU", "DROPOUT", "FC", "RELU", "DROPOUT", "OUT"]
    conv2 = network.layer("conv2")
    assert conv2.args == {"filters": 256, "kernel": (5, 5), "stride": (1, 1), "pad": (2, 2),
                          "groups": 2, "bias": True}
    assert conv2.inputs == ["pool1"] and conv2.source == "layer 'conv2' (Convolution)"
    # in place: relu_conv1 read conv1's output, norm1 reads the ReLU's (the top's 2nd version)
    assert network.layer("relu_conv1").inputs == ["conv1"]
    assert network.layer("norm1").inputs == ["relu_conv1"]
    # Caffe's LRN k (1) is always explicit: netc's default is 2
    assert network.layer("norm1").args == {"size": 5, "alpha": 0.0001, "beta": 0.75, "k": 1.0}
    # 55 -> 27 fits exactly: no round= needed
    assert network.layer("pool1").args == {"mode": "max", "kernel": (3, 3), "stride": (2, 2),
                                           "pad": (0, 0)}
    assert network.layer("drop_fc6").args == {"p": 0.5}
    out = network.layers[-1]
    assert (out.name, out.kind, out.args) == ("fc8", "OUT", {"units": 1000, "bias": True,
                                                             "act": "softmax"})
    assert all(not layer.weights and not layer.buffers for layer in network.layers)


def test_caffenet_train_val_takes_the_test_phase(tmp_path):
    """Data layers give the input (crop_size, a mean per channel) and the normalization;
    Accuracy is skipped; SoftmaxWithLoss after fc8 becomes OUT softmax."""
    network = _read(tmp_path, CAFFENET)
    assert network.input_shape == (3, 227, 227)
    assert network.mean.reshape(-1).tolist() == [104, 117, 123] and network.std.item() == 1
    assert _kinds(network)[:4] == ["CONV", "RELU", "POOL", "LRN"]
    assert network.layers[-1].kind == "OUT" and "SoftmaxWithLoss" in network.layers[-1].source


def test_googlenet_inception_and_ceil_pools(tmp_path):
    network = _read(tmp_path, _googlenet())
    concat = network.layer("inception_3a_output")
    assert concat.kind == "CONCAT"
    assert concat.inputs == ["relu_inception_3a_1x1", "relu_inception_3a_3x3",
                             "relu_inception_3a_5x5", "relu_inception_3a_pool_proj"]
    # the stem's 7x7/2 pad 3 on 224 leaves only padding over: floor and exact agree
    assert "round" not in network.layer("conv1_7x7_s2").args
    # Caffe rounds pools up: 112 -> 56 needs round=ceil; the branch's 3x3/1 pad 1 does not
    assert network.layer("pool1_3x3_s2").args["round"] == "ceil"
    assert "round" not in network.layer("inception_3a_pool").args
    assert network.layer("pool5_7x7_s1").args["mode"] == "avg"
    assert network.layers[-1].kind == "OUT"


def test_resnet_block_batchnorm_scale_eltwise(tmp_path):
    network = _read(tmp_path, _resnet50())
    assert network.input_shape == (3, 224, 224)
    bn = network.layer("bn2a_branch1")
    assert bn.kind == "BN" and bn.args == {"eps": 1e-5} and bn.inputs == ["res2a_branch1"]
    assert bn.source == "layer 'bn2a_branch1' (BatchNorm) + layer 'scale2a_branch1' (Scale)"
    add = network.layer("res2a")
    assert add.kind == "ADD" and add.args == {"act": "none"}
    assert add.inputs == ["bn2a_branch1", "bn2a_branch2c"]  # the projection, the body
    assert network.layer("res2a_relu").inputs == ["res2a"]
    assert network.layer("res2b").inputs == ["res2a_relu", "bn2b_branch2c"]  # identity shortcut
    assert network.layer("res3a_branch2a").args["stride"] == (2, 2)
    assert not any(layer.kind == "SCALE" for layer in network.layers)


def test_lenet_in_the_v1_format(tmp_path):
    network = _read(tmp_path, LENET_V1)
    assert network.input_shape == (1, 28, 28)
    assert _kinds(network) == ["CONV", "POOL", "CONV", "POOL", "FC", "RELU", "OUT"]
    assert network.layer("ip1").args == {"units": 500, "bias": True}


# ---- weights from a .caffemodel ------------------------------------------------------------
TINY = '''name: "Tiny"
input: "data"
input_shape { dim: 1 dim: 4 dim: 7 dim: 7 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
'''


def _tiny_blobs(rng):
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return {"conv1": [f(6, 2, 3, 3), f(6)],
            "bn1": [f(6), np.abs(f(6)) + 0.5, np.array([2.0], np.float32)],  # sums, factor 2
            "scale1": [f(6), f(6)],
            "ip1": [("legacy", f(1, 1, 5, 24)), ("legacy", f(1, 1, 1, 5))]}


def _caffemodel(path, blobs, v1=False):
    """A binary NetParameter with these blobs per layer name (("legacy", a): the 4-D
    num/channels/height/width fields instead of a BlobShape)."""
    net = classes()["NetParameter"]()
    for name, arrays in blobs.items():
        layer = (net.layers if v1 else net.layer).add(name=name)
        for a in arrays:
            blob = layer.blobs.add()
            if isinstance(a, tuple):
                a = a[1]
                blob.num, blob.channels, blob.height, blob.width = a.shape
            else:
                blob.shape.dim.extend(a.shape)
            blob.data.extend(a.ravel().tolist())
    path.write_bytes(net.SerializeToString())
    return str(path)


def _tiny_reference(x, b):
    """The tiny net in NumPy, as Caffe computes it (test phase)."""
    w, bias = b["conv1"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((1, 6, 4, 4))
    for o in range(6):
        g = o // 3
        for i in range(4):
            for j in range(4):
                patch = xp[0, 2 * g:2 * g + 2, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                y[0, o, i, j] = (patch * w[o]).sum() + bias[o]
    mean, var, factor = (v.reshape(1, -1, 1, 1) for v in b["bn1"])
    y = (y - mean / factor) / np.sqrt(var / factor + 1e-3)
    y = y * b["scale1"][0].reshape(1, -1, 1, 1) + b["scale1"][1].reshape(1, -1, 1, 1)
    y = np.where(y > 0, y, 0.1 * y)
    y = y.reshape(1, 6, 2, 2, 2, 2).mean(axis=(3, 5))
    z = y.reshape(1, -1) @ b["ip1"][0][1].reshape(5, 24).T + b["ip1"][1][1].reshape(5)
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("v1", [False, True])
def test_caffemodel_weights_land_in_netc_layouts(tmp_path, v1):
    blobs = _tiny_blobs(np.random.default_rng(0))
    network = _read(tmp_path, TINY, caffemodel=_caffemodel(tmp_path / "tiny.caffemodel", blobs, v1))
    assert _kinds(network) == ["CONV", "BN", "LEAKY", "POOL", "OUT"]
    conv, bn, out = network.layer("conv1"), network.layer("bn1"), network.layer("ip1")
    np.testing.assert_array_equal(conv.weights["weight"], blobs["conv1"][0])
    np.testing.assert_array_equal(conv.weights["bias"], blobs["conv1"][1])
    # Caffe keeps running sums and their factor: netc's statistics are the quotients
    np.testing.assert_allclose(bn.buffers["running_mean"], blobs["bn1"][0] / 2)
    np.testing.assert_allclose(bn.buffers["running_var"], blobs["bn1"][1] / 2)
    np.testing.assert_array_equal(bn.weights["weight"], blobs["scale1"][0])
    np.testing.assert_array_equal(bn.weights["bias"], blobs["scale1"][1])
    assert bn.args == {"eps": 0.001} and network.layer("relu1").args == {"slope": 0.1}
    assert out.weights["weight"].shape == (5, 24) and out.weights["bias"].shape == (5,)


def test_batchnorm_without_scale_and_zero_factor(tmp_path):
    text = TINY.replace('layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" '
                        'scale_param { bias_term: true } }\n', "")
    blobs = _tiny_blobs(np.random.default_rng(1))
    del blobs["scale1"]
    blobs["bn1"][2][0] = 0  # never updated: Caffe's statistics are then 0
    network = _read(tmp_path, text, caffemodel=_caffemodel(tmp_path / "m.caffemodel", blobs))
    bn = network.layer("bn1")
    assert bn.weights["weight"].tolist() == [1] * 6 and bn.weights["bias"].tolist() == [0] * 6
    assert not bn.buffers["running_mean"].any() and not bn.buffers["running_var"].any()


def test_inner_product_transpose(tmp_path):
    text = TINY.replace("num_output: 5 }", "num_output: 5 transpose: true }")
    blobs = _tiny_blobs(np.random.default_rng(2))
    w = blobs["ip1"][0][1].reshape(5, 24)
    blobs["ip1"][0] = np.ascontiguousarray(w.T)  # stored (inputs, units)
    network = _read(tmp_path, text, caffemodel=_caffemodel(tmp_path / "m.caffemodel", blobs))
    np.testing.assert_array_equal(network.layer("ip1").weights["weight"], w)


def test_tiny_forward_equals_numpy_reference(tmp_path):
    """The imported weights, keyed as a hand-written spec names its layers, give netc's forward
    pass Caffe's outputs (computed here in NumPy)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(3)
    blobs = _tiny_blobs(rng)
    network = _read(tmp_path, TINY, caffemodel=_caffemodel(tmp_path / "m.caffemodel", blobs))
    model = netc.Model("network Tiny\ninput 7x7x4\nCONV 3x3/2 6 pad=1 groups=2 name=conv1 - "
                       "BN eps=0.001 name=bn1 - LEAKY 0.1 - POOL avg 2x2 - "
                       "OUT 5 softmax name=ip1\n")
    model.load_state({f"{layer.name}.{key}": value for layer in network.layers
                      for key, value in {**layer.weights, **layer.buffers}.items()})
    x = rng.standard_normal((1, 4, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model.forward(x)),
                               _tiny_reference(x.astype(float), blobs), rtol=1e-5, atol=1e-7)


# ---- errors --------------------------------------------------------------------------------
def _error(tmp_path, text, caffemodel=None) -> str:
    with pytest.raises(InteropError) as info:
        _read(tmp_path, text, caffemodel=caffemodel)
    assert isinstance(info.value, NetcError) and info.value.__cause__ is None
    return str(info.value)


def test_unsupported_types_listed_together(tmp_path):
    text = (ALEXNET.replace('type: "LRN"', 'type: "Normalize"')
            .replace('name: "pool5"\n  type: "Pooling"', 'name: "pool5"\n  type: "SPP"'))
    message = _error(tmp_path, text)
    assert "Normalize (2 layers, first 'norm1')" in message
    assert "SPP (1 layer, first 'pool5')" in message
    assert "hint: netc imports" in message and "Convolution" in message


def test_dilation(tmp_path):
    text = ALEXNET.replace("num_output: 384\n    kernel_size: 3 pad: 1",
                           "num_output: 384\n    kernel_size: 3 pad: 2 dilation: 2", 1)
    message = _error(tmp_path, text)
    assert "layer 'conv3' (Convolution) has dilation 2: netc's CONV has no dilation" in message


def test_missing_files(tmp_path):
    with pytest.raises(InteropError, match="no such prototxt file: .*nope.prototxt"):
        caffe.read(str(tmp_path / "nope.prototxt"))
    message = _error(tmp_path, TINY, caffemodel=str(tmp_path / "nope.caffemodel"))
    assert "no such caffemodel file" in message


def test_syntax_error_with_line_and_column(tmp_path):
    text = 'name: "x"\nlayer {\n  name: "conv1"\n  type "Convolution"\n}\n'
    message = _error(tmp_path, text)
    assert "net.prototxt:4:" in message and '  type "Convolution"' in message and "^" in message
    message = _error(tmp_path, TINY.replace("pool: AVE", "pool: AVERAGE"))
    assert "net.prototxt:10:25: " in message and "AVERAGE" in message


@pytest.mark.parametrize("old, new, expected", [
    ('lrn_param { local_size: 5', 'lrn_param { norm_region: WITHIN_CHANNEL local_size: 5',
     "normalizes WITHIN_CHANNEL"),
    ('lrn_param { local_size: 5', 'lrn_param { local_size: 4', "even local_size 4"),
    ('top: "pool1"\n  pooling_param { pool: MAX',
     'top: "pool1"\n  pooling_param { pool: STOCHASTIC',
     "STOCHASTIC pooling"),
    ('bottom: "pool5"\n  top: "fc6"', 'bottom: "label"\n  top: "fc6"', "reads 'label', which no"),
    ('shape: { dim: 10 dim: 3 dim: 227 dim: 227 }', 'shape: { dim: 3 dim: 227 dim: 227 }',
     "has 3 dimensions"),
    ("group: 2", "group: 0", "group 0 must divide"),
])
def test_what_netc_cannot_express(tmp_path, old, new, expected):
    assert old in ALEXNET
    assert expected in _error(tmp_path, ALEXNET.replace(old, new, 1))


def test_eltwise_and_scale_rules(tmp_path):
    block = _resnet50()
    text = block.replace('name: "res2a"\n  type: "Eltwise"',
                         'name: "res2a"\n  type: "Eltwise"\n  eltwise_param { operation: PROD }')
    assert "layer 'res2a' (Eltwise) is PROD" in _error(tmp_path, text)
    text = block.replace('name: "res2a"\n  type: "Eltwise"',
                         'name: "res2a"\n  type: "Eltwise"\n  eltwise_param { coeff: 1 coeff: -1 }')
    assert "SUM with coefficients [1.0, -1.0]" in _error(tmp_path, text)
    text = TINY.replace('type: "BatchNorm"', 'type: "ReLU"')
    assert "layer 'scale1' (Scale) does not directly follow a BatchNorm" in _error(tmp_path, text)


def test_average_pool_overhanging_the_input(tmp_path):
    """Caffe divides a clipped last window by its part inside; netc's avg by the whole kernel."""
    text = TINY.replace("pool: AVE kernel_size: 2 stride: 2", "pool: AVE kernel_size: 3 stride: 2")
    message = _error(tmp_path, text)
    assert ("the last 3-wide AVE window along the height ends at 5, past the padded input "
            "(height 4, pad 0)") in message
    network = _read(tmp_path, text.replace("pool: AVE", "pool: MAX"))  # max pooling is exact
    assert network.layer("pool1").args["round"] == "ceil"


def test_input_shape_needed(tmp_path):
    text = CAFFENET.replace(" mean_value: 104 mean_value: 117 mean_value: 123", "")
    assert "does not give the shape of its input 'data'" in _error(tmp_path, text)
    text = 'input: "a"\ninput: "b"\n' + TINY.split("\n", 3)[3]
    assert "netc networks have one input; the prototxt has 2: a, b" in _error(tmp_path, text)


def test_caffemodel_mismatches(tmp_path):
    blobs = _tiny_blobs(np.random.default_rng(4))
    blobs["conv1"][0] = blobs["conv1"][0][:, :1]
    message = _error(tmp_path, TINY, caffemodel=_caffemodel(tmp_path / "a.caffemodel", blobs))
    assert "layer 'conv1' (Convolution): its weight in the caffemodel is 6x1x3x3 (54 values); " \
           "the prototxt needs 6x2x3x3 (108)" in message
    blobs = _tiny_blobs(np.random.default_rng(4))
    del blobs["ip1"]
    message = _error(tmp_path, TINY, caffemodel=_caffemodel(tmp_path / "b.caffemodel", blobs))
    assert "has no weights for layer(s) 'ip1'" in message
    (tmp_path / "c.caffemodel").write_bytes(b"\xff\xff\xff garbage")
    message = _error(tmp_path, TINY, caffemodel=str(tmp_path / "c.caffemodel"))
    assert "is not a Caffe model" in message or "holds no layer weights" in message


def test_branches_the_output_does_not_need_are_dropped(tmp_path):
    """An auxiliary classifier (GoogLeNet's train_val has two): left out, with a warning."""
    text = (ALEXNET.split('layer {\n  name: "fc6"')[0]  # up to pool5
            + _fc("aux_fc", "pool2", 10, relu=False) + _layer("aux_prob", "Softmax", "aux_fc")
            + _fc("fc6", "pool5", 10, relu=False) + _layer("prob", "Softmax", "fc6"))
    with pytest.warns(UserWarning, match="left out: aux_fc, aux_prob"):
        network = _read(tmp_path, text)
    assert [layer.name for layer in network.layers][-2:] == ["pool5", "fc6"]
    assert network.layers[-1].kind == "OUT"


# ---- end to end: prototxt -> .net (write.py) -> netc's totals and forward pass --------------
@pytest.mark.parametrize("name, text, params", [
    ("AlexNet", ALEXNET, 60_965_224),  # published: Krizhevsky et al.'s (and CaffeNet's) count
    ("CaffeNet", CAFFENET, 60_965_224),
    ("GoogleNet", _googlenet(), _googlenet_params()),  # 6,998,552 with Caffe's true 5x5s
    ("ResNet-50", _resnet50(), 25_557_032),  # published (He et al.; torchvision's resnet50)
    ("LeNet", LENET_V1, 431_080),  # Caffe's LeNet: 520 + 25,050 + 400,500 + 5,010
])
def test_written_spec_has_the_published_totals(tmp_path, name, text, params):
    network = _read(tmp_path, text)
    written = write(network)
    net = netc.compile(written.text)
    assert net.name == name and net.total_params == params
    assert written.text.rstrip().endswith(f"OUT {1000 if name != 'LeNet' else 10} softmax")
    if name == "ResNet-50":  # 53 BatchNorms, their statistics kept apart from the parameters
        assert sum(layer.kind == "BN" for layer in network.layers) == 53
        assert net.buffer_count == 2 * 26_560  # twice the channels they normalize


def test_googlenet_params_counted_independently():
    assert _googlenet_params() == 6_998_552


@pytest.mark.parametrize("v1", [False, True])
def test_caffemodel_through_the_writer_forward(tmp_path, v1):
    """prototxt + caffemodel -> spec and checkpoint arrays -> netc.Model: Caffe's outputs."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(5)
    blobs = _tiny_blobs(rng)
    network = _read(tmp_path, TINY, caffemodel=_caffemodel(tmp_path / "m.caffemodel", blobs, v1))
    written = write(network)
    model = netc.Model(written.text)
    model.load_state({k: v for k, v in written.arrays.items() if not k.startswith("__")})
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    expected = np.concatenate([_tiny_reference(x[i:i + 1].astype(float), blobs) for i in range(2)])
    np.testing.assert_allclose(np.asarray(model.forward(x)), expected, rtol=1e-5, atol=1e-7)


def test_alexnet_at_224_floors_conv1_and_ceils_the_pools(tmp_path):
    """(224 - 11)/4 leaves a pixel: Caffe floors convolutions (round=floor) and rounds pools up
    (54 -> 27): the same 6x6x256 reaches fc6, so the same count."""
    network = _read(tmp_path, ALEXNET.replace("dim: 227 dim: 227", "dim: 224 dim: 224"))
    assert network.layer("conv1").args["round"] == "floor"
    assert network.layer("pool1").args["round"] == "ceil"
    assert netc.compile(write(network).text).total_params == 60_965_224


OTHERS = '''name: "Others"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "split1" type: "Split" bottom: "conv1" top: "s1" top: "s2" }
layer { name: "conv_a" type: "Convolution" bottom: "s1" top: "a"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "sig" type: "Sigmoid" bottom: "a" top: "a" }
layer { name: "conv_b" type: "Convolution" bottom: "s2" top: "b"
  convolution_param { num_output: 3 kernel_size: 1 bias_term: false } }
layer { name: "tanh" type: "TanH" bottom: "b" top: "b" }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
layer { name: "up" type: "Deconvolution" bottom: "cat" top: "up"
  convolution_param { num_output: 5 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "elu" type: "ELU" bottom: "up" top: "up" elu_param { alpha: 0.5 } }
layer { name: "gpool" type: "Pooling" bottom: "up" top: "gmax"
  pooling_param { pool: MAX global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "gmax" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"
  inner_product_param { num_output: 3 } }
'''


def test_other_layer_types(tmp_path):
    network = _read(tmp_path, OTHERS)
    assert _kinds(network) == ["CONV", "PRELU", "CONV", "SIGMOID", "CONV", "TANH", "CONCAT",
                               "DECONV", "ELU", "POOL", "FLATTEN", "FC"]
    conv1 = network.layer("conv1").args
    assert conv1["kernel"] == (3, 1) and conv1["pad"] == (1, 0)
    assert network.layer("conv_a").inputs == ["prelu1"] == network.layer("conv_b").inputs  # Split
    assert network.layer("up").args["stride"] == (2, 2)
    assert network.layer("elu").args == {"alpha": 0.5}
    assert network.layer("gpool").args["kernel"] == (16, 16)  # global MAX: a 16x16 window
    assert network.layer("fc").kind == "FC"  # no softmax at the end: stays FC
    # 4*3*3 + 4, 4 slopes, 2*4 + 2, 3*4, deconv 5*5*4*4 + 5, fc 5*3 + 3
    assert netc.compile(write(network).text).total_params == 40 + 4 + 10 + 12 + 405 + 18


def test_other_layer_types_weights(tmp_path):
    rng = np.random.default_rng(6)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    blobs = {"conv1": [f(4, 3, 3, 1), f(4)], "prelu1": [f(4)], "conv_a": [f(2, 4, 1, 1), f(2)],
             "conv_b": [f(3, 4, 1, 1)], "up": [f(5, 5, 4, 4), f(5)], "fc": [f(3, 5), f(3)]}
    network = _read(tmp_path, OTHERS, caffemodel=_caffemodel(tmp_path / "o.caffemodel", blobs))
    np.testing.assert_array_equal(network.layer("up").weights["weight"], blobs["up"][0])
    np.testing.assert_array_equal(network.layer("prelu1").weights["weight"], blobs["prelu1"][0])
    written = write(network)
    assert sum(v.size for k, v in written.arrays.items()) == 40 + 4 + 10 + 12 + 405 + 18


def test_global_average_pooling_is_gap(tmp_path):
    text = OTHERS.replace("pool: MAX global_pooling", "pool: AVE global_pooling")
    network = _read(tmp_path, text)
    assert network.layer("gpool").kind == "GAP"
    assert network.layer("fc").inputs == ["gpool"]  # a vector already: Flatten makes nothing


def test_misspelt_field_is_an_error_other_layer_parameters_are_skipped(tmp_path):
    """A field the schema holds whole (ConvolutionParameter) misspelt: an error with the near
    names, as Caffe would refuse it; another layer type's parameters (data_param) are skipped,
    and so are engines."""
    message = _error(tmp_path, TINY.replace("stride: 2 pad: 1", "stide: 2 pad: 1"))
    assert 'net.prototxt:5:52: Message type "caffe.ConvolutionParameter" has no field named ' \
           '"stide"' in message
    assert "hint: did you mean stride" in message
    network = _read(tmp_path, CAFFENET.replace("group: 2", "group: 2 engine: CUDNN"))
    assert network.layer("conv2").args["groups"] == 2


def test_network_names_made_netc_names(tmp_path):
    network = _read(tmp_path, TINY.replace('name: "Tiny"', 'name: "bvlc tiny v2.0"'))
    assert network.name == "bvlc_tiny_v2.0"
    assert _read(tmp_path, TINY.replace('name: "Tiny"\n', ""), name="2x.prototxt").name == "net_2x"
    assert netc.compile(write(network).text).name == "bvlc_tiny_v2.0"
