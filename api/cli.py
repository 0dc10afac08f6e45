"""The `netc` command: a thin front end over netc.compiler and netc.runtime."""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import warnings

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


def _columns(text):
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) or a number of columns; "
                                         f"received {text!r}")
    return v


def cmd_summary(args):
    from netc.compiler import report
    net = _compile(args)
    # the estimate trains as the spec's train section says unless told otherwise
    batch = args.batch or net.train.get("batch", 1)
    optimizer = args.optimizer or net.train.get("optimizer", "sgd")
    if args.json:
        print(json.dumps(report.to_json(net, batch, optimizer, depth=args.depth), indent=1))
        return 0
    # the terminal's width; COLUMNS, or 100 columns, when the output is not a terminal
    width = shutil.get_terminal_size((100, 24)).columns if args.width is None else args.width
    print(report.summary(net, batch, args.depth, optimizer, width=width))
    return 0


def cmd_draw(args):
    from netc.compiler import draw
    net = _compile(args)
    out = args.output
    if out is None:  # the spec's name, as SVG, in the current folder
        stem = net.name if args.spec == "-" else os.path.splitext(os.path.basename(args.spec))[0]
        out = stem + ".svg"
    draw.render(net, out, args.depth, args.rankdir, args.unroll)
    if args.output is None:
        print(out)
    return 0


def _depth(text):
    """--depth K of netc draw: K >= 1 folds, 0 draws every layer."""
    if text.strip() == "0":
        return 0
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 0 (every layer) or a positive integer; "
                                         f"received {text!r}") from None


def cmd_gradcheck(args):
    from netc.runtime import gradcheck
    net = _compile(args)
    if args.layer and args.layer not in net.graph:
        raise NetcError(f"--layer: no layer named {args.layer!r}",
                        "layers: " + ", ".join(n.name for n in net.nodes if n.params))
    report = gradcheck(net, batch=args.batch, seed=args.seed, layer=args.layer,
                       backend=args.device)
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
    print(format_bench(bench(net, batch=args.batch, iters=args.iters, device=args.device),
                       net.name))
    return 0


TRAIN_FLAGS = ("epochs", "batch", "lr", "optimizer", "device", "seed", "data", "loss", "momentum",
               "weight_decay", "schedule", "val_split", "test_split", "l1", "l2", "clip_norm",
               "clip_value", "warmup", "patience", "init_from", "cycles", "save_every",
               "tensorboard")


def _group(args):
    """The MPI ranks for --distributed (None without it); without it, an MPI launch of several
    processes is an error rather than as many copies of the run."""
    from netc.runtime import distributed
    rank, size = distributed.launched()
    if not args.distributed:
        if size > 1:
            if rank:
                sys.stderr = open(os.devnull, "w")  # rank 0 says it
            raise NetcError(f"this is one of {size} processes an MPI launcher started, and "
                            f"without --distributed each would train the whole run on its own",
                            "add --distributed to train one run over the ranks (data-parallel), "
                            "or run netc train without mpiexec")
        return None
    several = [f for f in ("folds", "compare", "bagging") if getattr(args, f)]
    if several:
        raise NetcError(f"--distributed trains one run; --{several[0]} trains several",
                        f"run --{several[0]} without --distributed")
    group = distributed.connect()
    if group.size == 1:
        warnings.warn("--distributed on 1 rank (started without mpiexec?): training on this "
                      "process alone; launch K ranks with mpiexec -n K netc train ... "
                      "--distributed")
    return group


def cmd_train(args):
    from netc.runtime import training
    group = _group(args)  # first: only rank 0 prints the spec's warnings
    net = _compile(args)
    overrides = _overrides(args)
    progress = False if args.quiet else None  # None: a bar on a terminal (progress.py)
    if args.bagging and (args.compare or args.folds or args.resume):
        raise NetcError("--bagging trains its own members: it does not combine with --compare, "
                        "--folds or --resume", "run them one at a time")
    try:
        if args.bagging:
            training.bagging(net, overrides, args.bagging, args.out, progress)
        elif args.compare:
            training.compare(net, overrides, args.compare.split(","), args.out, progress)
        elif args.folds:
            training.cross_validate(net, overrides, args.folds, args.out, progress)
        else:
            result, folder = training.train(net, overrides, args.out, args.resume, progress,
                                            args.diagnose, group=group)
            ranks = f" on {group.size} ranks" if group else ""  # (rank 0 alone prints)
            print(f"done in {result['seconds']:.1f}s{ranks}: {training.result_line(result)} "
                  f"(best epoch {result['best_epoch']}); {folder}/")
    except KeyboardInterrupt:
        return 130
    return 0


def _weights_model(args, path):
    """The Model of a checkpoint, with the normalization it was trained with."""
    from netc.runtime import Model
    return Model.load(path, spec=_compile(args).source.text, backend=args.device)


def _weights_files(items):
    """--weights: paths, and patterns (quoted, 'run/snapshot_*.npz') expanded in natural order
    (snapshot_10 after snapshot_9)."""
    def natural(path):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]
    paths = []
    for item in items:
        if not any(c in item for c in "*?["):
            paths.append(item)
            continue
        found = sorted(glob.glob(item), key=natural)
        if not found:
            raise NetcError(f"--weights: no file matches {item!r}",
                            "check the folder and the pattern (e.g. 'runs/NAME/snapshot_*.npz')")
        paths += found
    return paths


def _eval_data(args, net, loss):
    """(x, y, per-pixel) to evaluate on: the data's test set, all of --data with --all, else the
    test split the training run made."""
    from netc.runtime import data as datasets
    from netc.runtime import losses
    from netc.runtime.training import resolve
    source = args.data or net.train.get("data")
    if not source:
        raise NetcError("eval needs data: --data, or data= in the spec's train section")
    segment = loss in losses.CLASS_LABELS and len(net.output_shape) == 3
    ds = datasets.load(source, net.input_shape, losses.classes(net.output_shape),
                       loss in losses.CLASS_LABELS,
                       label_shape=losses.label_shape(net.output_shape))
    if ds.x_test is not None:
        return ds.x_test, ds.y_test, segment
    if args.all:
        return ds.x, ds.y, segment
    cfg = resolve(net, {"data": source})  # the split the training run made
    _, _, test = datasets.split(ds, cfg["val_split"], cfg["test_split"], cfg["seed"])
    if not len(test):
        raise NetcError(f"the test split of {source} is empty (test_split={cfg['test_split']:g} "
                        f"of {len(ds.x)} samples)", "evaluate on every sample with --all")
    return ds.x[test], ds.y[test], segment


def cmd_eval(args):
    _eval_spec_from_weights(args)
    paths = _weights_files(args.weights)
    if len(paths) > 1:
        return _eval_ensemble(args, paths)
    from netc.runtime import Model, losses
    spec = _compile(args).source.text if args.spec else None  # else the checkpoint's own
    model = Model.load(paths[0], spec=spec, backend=args.device)
    loss = model.loss_name(args.loss)
    x, y, segment = _eval_data(args, model.net, loss)
    value, out = model.evaluate(model.normalize(x), y, loss)
    line = f"{len(x)} samples: loss {value:.4f}"
    if loss not in losses.CLASS_LABELS:
        if args.output:
            raise NetcError(f"-o draws the confusion matrix of a classifier; {model.net.name}'s "
                            f"loss is {loss}")
        print(line)
        return 0
    print(line + _class_scores(args, out, y, segment))
    return 0


def _eval_spec_from_weights(args):
    """`netc eval --weights W SPEC.net`: --weights takes every word after it, so a spec named
    last is moved back to SPEC."""
    if args.spec is None and len(args.weights) > 1 and \
            (args.weights[-1].endswith(".net") or args.weights[-1] == "-"):
        args.spec = args.weights.pop()


def _class_scores(args, out, y, segment) -> str:
    """', accuracy A%[, top-k accuracy][, mean IoU]' for the first line, then the class report
    (confusion matrix, per-class precision, recall, F1); -o draws the matrix."""
    import numpy as np

    from netc.runtime import losses, metrics, runs
    rows, labels = losses.step_rows(out, y)  # a per-step output: a row per step
    k = rows.shape[1]
    counts = metrics.confusion(rows, labels, k)
    text = f", {'pixel accuracy' if segment else 'accuracy'} " \
           f"{100 * np.trace(counts) / max(counts.sum(), 1):.2f}%"
    top = args.top if args.top is not None else (5 if k > 5 else None)
    if top and not segment and top < k:
        text += f", top-{top} accuracy {100 * metrics.top_k(rows, labels, top):.2f}%"
    if segment:
        text += f", mean IoU {100 * metrics.mean_iou(counts):.2f}%"
    text += "\n" + metrics.report(counts, args.matrix or None)
    if args.output:
        runs.save_figure(metrics.confusion_figure(counts, f"confusion matrix ({len(y)} "
                                                          f"samples)"), args.output)
        text += f"\nconfusion matrix: {args.output}"
    return text


def _eval_ensemble(args, paths):
    """Each member's loss and accuracy, and those of their mean output."""
    from netc.runtime import ensemble
    members = ensemble.load(paths, _compile(args) if args.spec else None, args.device)
    net = members[0].model.net
    loss = members[0].model.loss_name(args.loss)
    x, y, segment = _eval_data(args, net, loss)
    scores = ensemble.evaluate(members, x, y, loss)

    def line(s):
        text = f"{len(x)} samples: loss {s['loss']:.4f}"
        if s["acc"] is not None:
            text += f", {'pixel accuracy' if segment else 'accuracy'} {100 * s['acc']:.2f}%"
        if "miou" in s:
            text += f", mean IoU {100 * s['miou']:.2f}%"
        return text
    for path, s in zip(paths, scores["members"]):
        print(f"{path}: {line(s)}")
    print(f"ensemble of {len(paths)}: {line(scores['ensemble'])}")
    return 0


def cmd_predict(args):
    import numpy as np
    model = _weights_model(args, args.weights)
    out = model.predict(_read_inputs(args.input, model.net.input_shape))
    if len(model.net.output_shape) == 3:  # a class per pixel: label maps, as PNG images
        for path in _write_label_maps(out.argmax(axis=1), args.input, args.output):
            print(path)
        return 0
    if len(model.net.output_shape) == 2:  # per step: a class, or a row of values, per step
        for i, steps in enumerate(out):
            print(f"{i}: classes per step " + " ".join(str(k) for k in steps.argmax(axis=1))
                  if model.output_act == "softmax" else
                  f"{i}: " + " | ".join(" ".join(f"{v:.4f}" for v in step) for step in steps))
        return 0
    for i, row in enumerate(out):
        top = np.argsort(row)[::-1][:args.top]
        shown = ", ".join(f"{k}: {row[k]:.4f}" for k in top)
        print(f"{i}: class {top[0]}  ({shown})" if model.output_act == "softmax" else
              f"{i}: " + " ".join(f"{v:.4f}" for v in row))
    return 0


def _write_label_maps(labels, source, output):
    """One PNG per sample, a colour per class (matplotlib's tab10/tab20); the file names are
    `output` (or SOURCE.labels.png), numbered when there are several."""
    import os

    from matplotlib.image import imsave
    base = output or os.path.splitext(source)[0] + ".labels.png"
    stem, ext = os.path.splitext(base)
    paths = []
    cmap = "tab10" if labels.max(initial=0) < 10 else "tab20"
    for i, label in enumerate(labels):
        path = base if len(labels) == 1 else f"{stem}_{i}{ext or '.png'}"
        try:
            imsave(path, label, cmap=cmap, vmin=0, vmax=9 if cmap == "tab10" else 19)
        except OSError as e:
            raise NetcError(f"cannot write {path}: {e.strerror}", "check the folder exists") from None
        paths.append(path)
    return paths


def _read_inputs(path, input_shape):
    from netc.runtime import data as datasets
    from netc.runtime import files
    if path.endswith(".npz"):
        arrays = files.read_npz(path, "input file")
        if not arrays:
            raise NetcError(f"{path} holds no arrays", "save the inputs as x: np.savez(path, x=x)")
        name = "x" if "x" in arrays else next(iter(arrays))
        x = files.numeric(arrays[name], f"{path}: {name}")
        if x.ndim == 0:
            raise NetcError(f"{path}: {name} is a single number; expected a batch of inputs")
        return datasets.fit_shape(x, input_shape, path)
    if path.lower().endswith(".png"):
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise NetcError(f"{path}: an image needs a spec whose input is an image of 1 or 3 "
                            "channels (input HxWx1 or HxWx3)")
        return _image_to_input(files.read_image(path), input_shape)
    raise NetcError(f"predict reads .npz (array x) or .png files; received {path!r}")


def _image_to_input(img, input_shape):
    """An image (H x W x 3, or H x W) resized (nearest neighbour) to the spec's input, as a
    batch of one; grey is the mean of red, green and blue."""
    import numpy as np
    c, h, w = input_shape
    if c == 1 and img.ndim == 3:
        img = img.mean(axis=2)
    if c == 3 and img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    rows = (np.arange(h) * img.shape[0] / h).astype(int)
    cols = (np.arange(w) * img.shape[1] / w).astype(int)
    img = img[rows][:, cols]
    return (img[None, None] if c == 1 else img.transpose(2, 0, 1)[None]).astype(np.float32)


def cmd_lr(args):
    from netc.runtime import runs
    from netc.runtime.schedule import from_settings
    from netc.runtime.training import resolve
    from matplotlib.ticker import MaxNLocator
    net = _compile(args)
    cfg = resolve(net, {"epochs": args.epochs, "lr": args.lr, "schedule": args.schedule,
                        "warmup": args.warmup, "cycles": args.cycles}, need_data=False)
    sched = from_settings(cfg)
    values = [sched.lr(e) for e in range(cfg["epochs"])]
    fig = runs.new_figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.plot(range(1, len(values) + 1), values, marker="o", ms=3)
    restarts = f", {cfg.get('cycles', 1)} cycles" if cfg["schedule"] == "cosine_restarts" else ""
    plateau = " (before any reduction)" if cfg["schedule"] == "plateau" else ""
    ax.set(xlabel="epoch", ylabel="learning rate",
           title=f"{net.name}: {cfg.get('schedule', 'constant')}{restarts}{plateau}"
                 + (f" with {cfg['warmup']} warm-up epochs" if cfg.get("warmup") else ""))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    runs.save_figure(fig, args.output)
    if cfg["schedule"] == "plateau":
        print(f"note: plateau multiplies lr by factor={sched.factor:g} each time the validation "
              f"loss has not improved for patience={sched.patience} epochs; "
              "that loss is known only while training, so this shows lr before any reduction "
              "(the run's metrics.csv has the rates it used)", file=sys.stderr)
    for e, v in enumerate(values, 1):
        print(f"{e}\t{v:.6g}")
    return 0


def cmd_sweep(args):
    from netc.runtime.sweep import parse_grid, sweep
    if args.spec is None and "=" not in args.grid[-1]:  # --grid takes every word after it
        args.spec = args.grid.pop()
    if args.spec is None or not args.grid:
        raise NetcError("netc sweep takes a spec and a grid",
                        "netc sweep SPEC --grid lr=1e-3,1e-2 batch=32,64")
    grid = parse_grid(args.grid)  # before the spec compiles: a typo in the grid fails fast
    net = _compile(args)
    overrides = _overrides(args)  # netc train's settings flags, for every run
    try:
        rows = sweep(net, grid, overrides, args.out, args.engine, args.workers, args.address)
    except KeyboardInterrupt:
        return 130
    return 0 if any(r["status"] == "ok" for r in rows) else 1  # 1: no run finished


def cmd_export(args):
    from netc.interop import export_onnx
    net = _compile(args)
    path = export_onnx(args.weights or net, args.output, spec=net.source.text, raw=args.raw,
                       seed=args.seed)
    what = "trained weights" if args.weights else f"fresh weights (seed {args.seed})"
    print(f"{path}: {net.name}, {net.total_params:,} parameters ({what})")
    return 0


def cmd_import(args):
    from netc.interop import import_model
    imported = import_model(args.source, args.caffemodel)
    output = args.output or os.path.splitext(args.source)[0] + ".net"
    weights = args.weights_out
    if weights is None and imported.has_weights:
        weights = os.path.splitext(output)[0] + ".npz"
    if weights:
        imported.save_weights(weights)
    imported.save_spec(output)
    print(f"{output}: {imported.network.name}, {len(imported.text.splitlines())} lines"
          + (f"; weights {weights}" if weights else "; no weights (the source had none)"))
    return 0


def _add_run_settings(c):
    """The flags that override a run's train settings: netc train's, and netc sweep's for every
    run (TRAIN_FLAGS, early_stop, augment, freeze; _overrides reads them back)."""
    from netc.compiler.settings import DEVICES, LOSSES, OPTIMIZERS, SCHEDULES
    c.add_argument("--epochs", type=_positive)
    c.add_argument("--batch", type=_positive)
    c.add_argument("--lr", type=float)
    c.add_argument("--optimizer", choices=OPTIMIZERS)
    c.add_argument("--device", choices=DEVICES,
                   help="where to train: cpu (default) or cuda (an NVIDIA GPU: pip install 'netc[cuda]')")
    c.add_argument("--seed", type=int)
    c.add_argument("--data", help="digits | mnist:DIR | fashion:DIR | FILE.npz | FILE.csv[#label] | "
                                  "synthetic | adding:T")
    c.add_argument("--loss", choices=LOSSES)
    c.add_argument("--momentum", type=float)
    c.add_argument("--weight-decay", dest="weight_decay", type=float)
    c.add_argument("--schedule", choices=SCHEDULES)
    c.add_argument("--cycles", type=_positive, help="cosine_restarts: cycles over the epochs")
    c.add_argument("--warmup", type=int)
    c.add_argument("--val-split", dest="val_split", type=float)
    c.add_argument("--test-split", dest="test_split", type=float)
    c.add_argument("--l1", type=float)
    c.add_argument("--l2", type=float)
    c.add_argument("--clip-norm", dest="clip_norm", type=float)
    c.add_argument("--clip-value", dest="clip_value", type=float)
    c.add_argument("--early-stop", dest="early_stop", action="store_true")
    c.add_argument("--patience", type=int)
    c.add_argument("--augment", help="comma-separated: crop, flip")
    c.add_argument("--init-from", dest="init_from", help="a checkpoint to copy matching layers from")
    c.add_argument("--freeze", help="comma-separated layer names or path patterns (conv*, stage1.*)")
    c.add_argument("--save-every", dest="save_every", type=_positive, metavar="N",
                   help="also keep the weights every N epochs: snapshot_eN.npz in the run folder")
    c.add_argument("--tensorboard", metavar="DIR",
                   help="also log each epoch's figures for TensorBoard in DIR (needs tensorboardX)")


def _overrides(args) -> dict:
    """The train settings the flags of _add_run_settings (and --snapshots) give."""
    overrides = {k: getattr(args, k, None) for k in TRAIN_FLAGS}
    if args.early_stop:
        overrides["early_stop"] = True
    if getattr(args, "snapshots", False):
        overrides["snapshots"] = True
    if args.augment:
        overrides["augment"] = tuple(a.strip() for a in args.augment.split(",") if a.strip())
    if args.freeze:
        overrides["freeze"] = tuple(args.freeze.split(","))
    return overrides


def parser() -> argparse.ArgumentParser:
    from netc.compiler.settings import DEVICES, LOSSES, OPTIMIZERS, SCHEDULES
    p = argparse.ArgumentParser(prog="netc", description="netc: the .net neural-network compiler")
    p.add_argument("--version", action="version", version="netc 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def spec_cmd(name, help_text):
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.add_argument("spec", metavar="SPEC", help="a .net file, a zoo spec's name (resnet18), "
                       "or - for standard input")
        c.add_argument("--no-warn", action="store_true", help="do not print warnings")
        return c

    c = spec_cmd("check", "check a spec; silent on success, exit 2 on an error")
    c.set_defaults(func=cmd_check)

    c = spec_cmd("summary", "the table of layers: output shape, params, MACs, activations, "
                            "receptive field, totals and memory")
    c.add_argument("--batch", type=_positive, default=None,
                   help="batch size for memory (default: the spec's train batch=, else 1)")
    c.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="optimizer for the training-memory estimate (default: the spec's train "
                        "optimizer=, else sgd)")
    c.add_argument("--depth", type=_positive, default=None,
                   help="fold blocks deeper than K (in the table and in --json's layers)")
    c.add_argument("--width", type=_columns, default=None, metavar="N",
                   help="fit N columns (default: the terminal's width, COLUMNS, or 100 when not "
                        "a terminal; 0: no limit)")
    c.add_argument("--json", action="store_true", help="print JSON instead of the table")
    c.set_defaults(func=cmd_summary)

    c = spec_cmd("draw", "draw the network with Graphviz")
    c.add_argument("-o", "--output", metavar="FILE",
                   help="FILE.svg, .png, .pdf (need Graphviz's dot) or .dot (default: the spec's "
                        "name .svg, here)")
    c.add_argument("--depth", type=_depth, default=None,
                   help="fold blocks deeper than K; 0: every layer (default: every layer, but a "
                        ".png too tall to read is folded)")
    c.add_argument("--rankdir", choices=("LR", "TB"), default="TB", help="direction (default TB)")
    c.add_argument("--unroll", type=int, default=None, metavar="K",
                   help="draw each RNN/LSTM/GRU layer as its cells over K >= 2 steps (the first "
                        "K-1, an ellipsis and the last when the sequence is longer)")
    c.set_defaults(func=cmd_draw)

    c = spec_cmd("gradcheck", "check the gradients by central finite differences in float64")
    c.add_argument("--layer", default=None, help="check only this layer's parameters")
    c.add_argument("--batch", type=_positive, default=2, help="random batch size (default 2)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tol", type=float, default=1e-6, help="tolerance (default 1e-6); exit 1 above")
    c.add_argument("--device", choices=DEVICES, default="cpu", help="where to compute (default cpu)")
    c.set_defaults(func=cmd_gradcheck)

    c = spec_cmd("bench", "time forward and backward per layer, and the training step")
    c.add_argument("--batch", type=_positive, default=64)
    c.add_argument("--iters", type=_positive, default=20)
    c.add_argument("--device", choices=DEVICES, default="cpu", help="where to run (default cpu)")
    c.set_defaults(func=cmd_bench)

    c = spec_cmd("train", "train the network (settings: the spec's train section, then these flags)")
    _add_run_settings(c)
    c.add_argument("--snapshots", action="store_true",
                   help="save the weights at the end of each cosine_restarts cycle")
    c.add_argument("--out", help="the run folder (default runs/NAME-TIMESTAMP)")
    c.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly (--epochs "
                                                   "may be raised: the schedule keeps its span)")
    c.add_argument("--folds", type=_positive, help="K-fold cross-validation")
    c.add_argument("--compare", help="comma-separated optimizers trained from the same weights")
    c.add_argument("--bagging", type=_positive, metavar="K",
                   help="train K members on bootstrap resamples of the training split, and their "
                        "ensemble")
    c.add_argument("--diagnose", action="store_true", help="per-layer gradient and activation norms")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--distributed", action="store_true",
                   help="data-parallel over the MPI ranks it is launched on: mpiexec -n K netc "
                        "train SPEC --distributed (pip install 'netc[mpi]')")
    c.set_defaults(func=cmd_train)

    help_text = ("evaluate saved weights on the test split (or --data): loss, accuracy, top-k "
                 "accuracy, confusion matrix, per-class precision/recall/F1; several weights: "
                 "each and their ensemble")
    c = sub.add_parser("eval", help=help_text, description=help_text)
    c.add_argument("spec", metavar="SPEC", nargs="?",
                   help="a .net file (default: the spec saved in the checkpoint); its weights "
                        "must fit the checkpoint's")
    c.add_argument("--no-warn", action="store_true", help="do not print warnings")
    c.add_argument("--weights", required=True, nargs="+", metavar="W",
                   help="checkpoints, or quoted patterns ('run/snapshot_*.npz'); several are "
                        "evaluated as an ensemble (their outputs averaged)")
    c.add_argument("--data")
    c.add_argument("--loss", choices=LOSSES)
    c.add_argument("--all", action="store_true", help="every sample of --data, not its test split")
    c.add_argument("--top", type=_positive, metavar="K",
                   help="also the top-K accuracy (default 5 where there are more than 5 classes)")
    c.add_argument("--matrix", action="store_true",
                   help="print the confusion matrix even for more than 20 classes (the "
                        "per-class table is always printed)")
    c.add_argument("-o", "--output", metavar="FILE.png", help="draw the confusion matrix")
    c.add_argument("--device", choices=DEVICES, default="cpu", help="where to compute (default cpu)")
    c.set_defaults(func=cmd_eval)

    c = spec_cmd("predict", "predict with saved weights")
    c.add_argument("--weights", required=True)
    c.add_argument("input", metavar="FILE", help="FILE.npz (array x) or an image FILE.png")
    c.add_argument("--top", type=_positive, default=3)
    c.add_argument("-o", "--output", help="for a per-pixel output: the label map's PNG "
                                          "(default FILE.labels.png; numbered for several samples)")
    c.add_argument("--device", choices=DEVICES, default="cpu", help="where to compute (default cpu)")
    c.set_defaults(func=cmd_predict)

    c = spec_cmd("lr", "plot the learning-rate schedule ahead of time")
    c.add_argument("-o", "--output", required=True, help="FILE.png")
    c.add_argument("--epochs", type=_positive)
    c.add_argument("--lr", type=float)
    c.add_argument("--schedule", choices=SCHEDULES)
    c.add_argument("--cycles", type=_positive, help="cosine_restarts: cycles over the epochs")
    c.add_argument("--warmup", type=int)
    c.set_defaults(func=cmd_lr)

    help_text = ("train once per combination of a grid of train settings; a table (sweep.csv), "
                 "a summary and a plot (sweep.png) of the results")
    c = sub.add_parser("sweep", help=help_text, description=help_text)
    c.add_argument("spec", metavar="SPEC", nargs="?", help="a .net file, a zoo spec's name, or - "
                   "for standard input (before --grid, or last)")
    c.add_argument("--no-warn", action="store_true", help="do not print warnings")
    c.add_argument("--grid", required=True, nargs="+", metavar="KEY=V1,V2",
                   help="train settings and their values, as in the train section: "
                        "lr=1e-3,3e-3,1e-2 batch=32,64 (every combination runs)")
    c.add_argument("--engine", choices=("local", "dask", "ray"), default="local",
                   help="local: processes on this machine (default); dask, ray: a cluster "
                        "(--address, else a local one; pip install 'netc[dask]' or 'netc[ray]')")
    c.add_argument("--workers", type=_positive, default=1,
                   help="runs at a time (local processes, or a local cluster's); the cores "
                        "are shared out among them (default 1)")
    c.add_argument("--address", help="dask: the scheduler (tcp://HOST:8786); ray: the cluster "
                                     "(HOST:6379, or auto)")
    c.add_argument("--out", help="the sweep's folder (default runs/NAME-sweep-TIMESTAMP)")
    _add_run_settings(c)  # for every run
    c.set_defaults(func=cmd_sweep)

    c = spec_cmd("export", "write the network and its weights as an ONNX model (opset 17)")
    c.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.onnx")
    c.add_argument("--weights", metavar="W", help="a checkpoint (default: fresh weights from --seed)")
    c.add_argument("--raw", action="store_true",
                   help="leave out the input normalization saved with the weights")
    c.add_argument("--seed", type=int, default=0, help="the fresh weights' seed (default 0)")
    c.set_defaults(func=cmd_export)

    c = sub.add_parser("import", help="an ONNX model or a Caffe .prototxt as a .net spec and "
                                      "a checkpoint", description="write an ONNX model (.onnx) "
                                      "or a Caffe definition (.prototxt) as a .net spec in the "
                                      "lecture's notation, and its weights as a netc checkpoint")
    c.add_argument("source", metavar="FILE", help="FILE.onnx or FILE.prototxt")
    c.add_argument("-o", "--output", metavar="SPEC", help="the .net to write (default FILE.net)")
    c.add_argument("--weights-out", dest="weights_out", metavar="W",
                   help="the checkpoint to write (default SPEC's name with .npz, when the source "
                        "has weights)")
    c.add_argument("--caffemodel", metavar="M", help="a Caffe .caffemodel with the weights")
    c.set_defaults(func=cmd_import)
    return p


OPTIONAL = ("numba", "threadpoolctl", "matplotlib", "tqdm")  # the `run` extra
INTEROP = ("onnx", "onnxruntime", "google")  # the `onnx` extra (google: protobuf)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # "warning: ..." lines, as the spec's warnings
            return args.func(args)
    except NetcError as e:
        print(e.format(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError as e:
        print(f"error: out of memory ({e or 'an allocation failed'})\nhint: netc {args.command} "
              "needs more memory than this machine has free: a smaller batch, network or data",
              file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in OPTIONAL + INTEROP:
            raise
        extra = "onnx" if top in INTEROP else "run"
        print(f"error: netc {args.command} needs {top}, which is not installed\n"
              f"hint: pip install 'netc[{extra}]' (from a clone: pip install '.[{extra}]')",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
