"""The model zoo: every spec compiles, the published totals come out exactly."""
import glob
import math
import os

import pytest

import netc
from netc.compiler import report

from ..conftest import SPECS

ALL = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(SPECS, "*.net")))

# (params, MACs) from the papers, the lecture and torchvision's model documentation
PUBLISHED = {
    "lenet5": (61_706, 416_520),
    "alexnet": (60_965_224, None),
    "alexnet_1gpu": (62_378_344, None),
    "vgg11": (132_863_336, 7.61e9), "vgg13": (133_047_848, 11.31e9),
    "vgg16": (138_357_544, 15_470_264_320), "vgg19": (143_667_240, 19.63e9),
    "vgg16_bn": (138_365_992, 15_470_264_320),
    "googlenet": (6_624_904, 1.50e9),
    "inception_naive": (None, 854_196_224), "inception_reduced": (None, 271_351_808),
    "resnet18": (11_689_512, 1.81e9), "resnet34": (21_797_672, 3.66e9),
    "resnet50": (25_557_032, 4_089_184_256), "resnet101": (44_549_160, 7.80e9),
    "resnet152": (60_192_808, 11.51e9), "resnext50_32x4d": (25_028_904, 4.23e9),
    "wide_resnet50_2": (68_883_240, 11.40e9), "densenet121": (7_978_856, 2.83e9),
    # GN has BN's scale and shift per channel: torchvision's resnet18 with GroupNorm(32, C)
    "resnet18_gn": (11_689_512, 1.81e9),
    # CIFAR ResNet-110: 253M multiply-adds as commonly quoted; the papers' params in
    # test_resnet110_sd
    "resnet110_sd": (1_730_714, 253_149_824),
    # counted by hand: fcn_shapes' seven convolutions; fractalnet_c3: 7 convolutions + BN per
    # block (3 from the block's input), 33,698,880 + 20,608 + 5,130
    "fcn_shapes": (72_340, 9_895_936), "unet_small": (117_092, 25_149_440),
    "fractalnet_c3": (33_724_618, 845_222_912),
    # recurrent, by the formulas G(HD + HH + 2H) parameters and T G H (D + H) MACs per
    # direction (G = 1, 3, 4), plus the OUT layer: LSTM(8 -> 64) over 8 steps + OUT 10;
    # RNN/GRU/LSTM(2 -> 64) over 50 steps + OUT 1
    "lstm_digits": (4 * (64 * 8 + 64 * 64 + 128) + 650, 8 * 4 * 64 * 72 + 640),
    "rnn_adding": (64 * 2 + 64 * 64 + 128 + 65, 50 * 64 * 66 + 64),
    "gru_adding": (3 * (64 * 2 + 64 * 64 + 128) + 65, 50 * 3 * 64 * 66 + 64),
    "lstm_adding": (4 * (64 * 2 + 64 * 64 + 128) + 65, 50 * 4 * 64 * 66 + 64),
}

REQUIRED = {"lenet5", "alexnet", "alexnet_1gpu", "zfnet", "vgg11", "vgg13", "vgg16", "vgg16_bn",
            "vgg19", "nin", "googlenet", "inception_naive", "inception_reduced", "resnet18",
            "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "wide_resnet50_2", "densenet121", "mlp", "digits", "fcn_shapes", "unet_small",
            "resnet110_sd", "fractalnet_c3", "resnet18_gn", "lstm_digits", "rnn_adding",
            "gru_adding", "lstm_adding"}


def test_the_zoo_is_complete():
    assert REQUIRED <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_spec_compiles(name, spec_path):
    net = netc.compile(spec_path(name))
    assert net.total_params > 0 and net.activation_count > 0


def test_the_zoo_compiles_without_warnings(spec_path):
    """A warning is something to act on; the zoo's specs have nothing to act on."""
    assert {name: [w.format() for w in netc.compile(spec_path(name)).warnings]
            for name in ALL} == {name: [] for name in ALL}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_totals(name, spec_path):
    params, macs = PUBLISHED[name]
    net = netc.compile(spec_path(name))
    if params is not None:
        assert net.total_params == params
    if isinstance(macs, int):
        assert net.total_macs == macs
    elif macs is not None:  # torchvision publishes GFLOPS (meaning GMACs) to two decimals
        assert round(net.total_macs / 1e9, 2) == round(macs / 1e9, 2)


def test_vgg16_activations_and_bn_difference(spec_path):
    vgg = netc.compile(spec_path("vgg16"))
    assert vgg.activation_count == 15_237_608  # the lecture's "24M" over-counts
    bn = netc.compile(spec_path("vgg16_bn"))
    assert bn.total_params - vgg.total_params == 8_448
    assert bn.buffer_count == 8_448  # running mean and variance: saved, not parameters


def test_inception_module_shapes(spec_path):
    assert netc.compile(spec_path("inception_naive")).output_shape == (672, 28, 28)
    assert netc.compile(spec_path("inception_reduced")).output_shape == (480, 28, 28)


def test_lenet5_lecture_sizes(spec_path):
    net = netc.compile(spec_path("lenet5"))
    c1, s2, c3 = net.node("conv1"), net.node("pool1"), net.node("conv2")
    assert c1.out_shape == (6, 28, 28) and c1.param_count == 156
    assert s2.out_shape == (6, 14, 14)
    assert c3.out_shape == (16, 10, 10)


def test_alexnet_lecture_sizes(spec_path):
    net = netc.compile(spec_path("alexnet"))
    assert net.node("conv1").out_shape == (96, 55, 55) and net.node("conv1").param_count == 34_944
    assert net.node("pool1").out_shape == (96, 27, 27)
    assert net.node("conv2").out_shape == (256, 27, 27)


def test_conv_versus_fc_parameters():
    """32x32x3 input: 4 filters of 4x4x3 (stride 4) need 196 params; an FC of 500 needs 1,536,500."""
    conv = netc.compile("input 32x32x3\nCONV 4x4/4 4")
    fc = netc.compile("input 32x32x3\nFC 500")
    assert conv.total_params == 196 and fc.total_params == 1_536_500


def test_resnet_paths_fold(spec_path):
    net = netc.compile(spec_path("resnet18"))
    names = [n.name for n in net.nodes]
    assert "basic3.res1.proj1" in names and "basic3.res1.proj_bn1" in names
    proj = net.node("basic3.res1.proj1")
    assert proj.hyper["stride"] == (2, 2) and not proj.hyper["bias"]
    folded = report.rows(net, depth=1)
    assert [r["name"] for r in folded][5:13] == [f"basic{i}" for i in range(1, 9)]
    assert sum(r["params"] for r in folded) == net.total_params


def test_googlenet_ceil_pools(spec_path):
    net = netc.compile(spec_path("googlenet"))
    assert net.node("pool1").out_shape == (64, 56, 56)
    assert net.node("inception5b.concat1.concat1").out_shape == (1024, 7, 7)


def test_resnet110_sd(spec_path):
    """The papers' 1.7M (1,727,962) uses zero-padded identity shortcuts; netc's two projections
    (1x1 convolution + BN) are the rest. 54 units, drop probabilities l/54 * 0.5."""
    net = netc.compile(spec_path("resnet110_sd"))
    proj = sum(math.prod(s) for n in net.nodes if "proj" in n.name for s in n.params.values())
    assert net.total_params - proj == 1_727_962 and proj == 2_752
    drops = [n.hyper["drop"] for n in net.nodes if n.kind == "ADD"]
    assert len(drops) == 54 and drops[0] == 0.5 / 54 and drops[-1] == 0.5
    assert sum(n.kind == "CONV" for n in net.nodes) == 109 + 2  # 109 + the FC: 110 layers


def test_fractalnet_c3_joins():
    """Three columns: f3 holds two f2 joins and its own, 3 per block, 15 in all; 7 convolutions
    per block."""
    net = netc.compile(os.path.join(SPECS, "fractalnet_c3.net"))
    means = [n for n in net.nodes if n.kind == "MEAN"]
    assert len(means) == 15 and {n.hyper["drop_path"] for n in means} == {0.15}
    assert sum(n.kind == "CONV" for n in net.nodes) == 35
