"""The `netc` command: a thin front end over netc.compiler and netc.runtime."""
from __future__ import annotations

import argparse
import json
import sys

from netc.dsl.errors import NetcError


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {text!r}")
    return v


def _compile(args):
    from netc.compiler import compile as compile_spec
    net = compile_spec(args.spec)
    if not getattr(args, "no_warn", False):
        for w in net.warnings:
            print(w.format(), file=sys.stderr)
    return net


def cmd_check(args):
    _compile(args)
    return 0


def cmd_summary(args):
    from netc.compiler import report
    net = _compile(args)
    if args.json:
        print(json.dumps(report.to_json(net, args.batch, args.optimizer), indent=1))
    else:
        print(report.summary(net, args.batch, args.depth, args.optimizer))
    return 0


def cmd_draw(args):
    from netc.compiler import draw
    net = _compile(args)
    draw.render(net, args.output, args.depth, args.rankdir)
    return 0


def cmd_gradcheck(args):
    from netc.runtime import gradcheck
    net = _compile(args)
    if args.layer and args.layer not in net.graph:
        raise NetcError(f"--layer: no layer named {args.layer!r}",
                        "layers: " + ", ".join(n.name for n in net.nodes if n.params))
    report = gradcheck(net, batch=args.batch, seed=args.seed, layer=args.layer)
    width = max(len(k) for k in report)
    worst = max(report.values())
    for name, err in report.items():
        flag = "" if err < args.tol else "  <-- above tolerance"
        print(f"{name:<{width}}  {err:.2e}{flag}")
    print(f"max relative error {worst:.2e} (tolerance {args.tol:g}): "
          + ("ok" if worst < args.tol else "FAILED"))
    return 0 if worst < args.tol else 1


def cmd_bench(args):
    from netc.runtime.bench import bench, format_bench
    net = _compile(args)
    print(format_bench(bench(net, batch=args.batch, iters=args.iters), net.name))
    return 0


def parser() -> argparse.ArgumentParser:
    from netc.compiler.settings import OPTIMIZERS
    p = argparse.ArgumentParser(prog="netc", description="netc: the .net neural-network compiler")
    p.add_argument("--version", action="version", version="netc 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def spec_cmd(name, help_text):
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.add_argument("spec", metavar="SPEC", help="a .net file, or - for standard input")
        c.add_argument("--no-warn", action="store_true", help="do not print warnings")
        return c

    c = spec_cmd("check", "check a spec; silent on success, exit 2 on an error")
    c.set_defaults(func=cmd_check)

    c = spec_cmd("summary", "the table of layers: output shape, params, MACs, activations, "
                            "receptive field, totals and memory")
    c.add_argument("--batch", type=_positive, default=1, help="batch size for memory (default 1)")
    c.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="optimizer for the training-memory estimate (default sgd)")
    c.add_argument("--depth", type=_positive, default=None, help="fold blocks deeper than K")
    c.add_argument("--json", action="store_true", help="print JSON instead of the table")
    c.set_defaults(func=cmd_summary)

    c = spec_cmd("draw", "draw the network with Graphviz")
    c.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.svg, .png, .pdf (need Graphviz's dot) or .dot")
    c.add_argument("--depth", type=_positive, default=None, help="fold blocks deeper than K")
    c.add_argument("--rankdir", choices=("LR", "TB"), default="TB", help="direction (default TB)")
    c.set_defaults(func=cmd_draw)

    c = spec_cmd("gradcheck", "check the gradients by central finite differences in float64")
    c.add_argument("--layer", default=None, help="check only this layer's parameters")
    c.add_argument("--batch", type=_positive, default=2, help="random batch size (default 2)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tol", type=float, default=1e-6, help="tolerance (default 1e-6); exit 1 above")
    c.set_defaults(func=cmd_gradcheck)

    c = spec_cmd("bench", "time forward and backward per layer, and the training step")
    c.add_argument("--batch", type=_positive, default=64)
    c.add_argument("--iters", type=_positive, default=20)
    c.add_argument("--device", choices=("cpu",), default="cpu")
    c.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except NetcError as e:
        print(e.format(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
