"""What a Model shows when printed (a notebook cell, a REPL): network, backend, dtype, params."""
import netc


def test_a_model_says_what_it_is():
    net = netc.compile("network Tiny\ninput 8\nFC 4 - RELU - FC 2")
    assert repr(netc.Model(net)) == "Model('Tiny', backend='cpu', dtype='float32', 46 params)"
    assert "dtype='float64'" in repr(netc.Model(net, dtype="float64"))
