"""The ``vmamba-zoo`` command line (also ``python -m vmamba_zoo.cli``).

Commands::

    vmamba-zoo list                      the zoo's models: family, scan, params, GFLOPs, weights
    vmamba-zoo info MODEL                pretrained cfg, weight source, cache state, FLOPs
    vmamba-zoo predict MODEL IMAGE...    ImageNet top-5 with the model's pretrained transforms
    vmamba-zoo restore MODEL IMAGE       run a restoration network on an image
    vmamba-zoo bench MODEL...            throughput / latency / peak memory (JSON out)
    vmamba-zoo erf MODEL                 effective receptive field heatmap (PNG)
    vmamba-zoo convert CKPT OUT --model  official checkpoint -> zoo safetensors
    vmamba-zoo export MODEL --onnx OUT   ONNX through the pure-PyTorch scan, checked with onnxruntime
    vmamba-zoo demo                      offline CPU demo (restoration, model table, classification)

User errors (unknown model, unreadable image, bad size, missing weights) print one
line on stderr and exit with status 2; unexpected failures keep their traceback.
"""
from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["main", "UserError", "build_parser"]

_logger = logging.getLogger("vmamba_zoo.cli")

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_IMAGE = ASSETS / "chelsea.jpg"
CLASS_NAMES_FILE = ASSETS / "imagenet_classes.txt"
#: Preferred classification model of the demo (first one registered wins).
DEMO_MODELS = ("vmamba_tiny_s1l8", "vmamba_tiny_s2l5", "test_vmamba")


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, no traceback."""


# --------------------------------------------------------------------------- helpers
def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _warn(line: str) -> None:
    sys.stderr.write(f"vmamba-zoo: {line}\n")


def _known_models() -> List[str]:
    import timm

    import vmamba_zoo  # noqa: F401  (registration)

    return timm.list_models()


def check_model_name(name: str) -> str:
    """Return ``name`` if timm knows it (``arch`` or ``arch.tag``); else raise UserError with close matches."""
    import timm
    from timm.models import split_model_name_tag

    import vmamba_zoo  # noqa: F401

    arch, tag = split_model_name_tag(name)
    if timm.is_model(arch):
        if tag and name not in timm.list_pretrained(name):
            tags = [t.split(".", 1)[1] for t in timm.list_pretrained(arch + ".*")]
            raise UserError(f"model {arch!r} has no pretrained tag {tag!r}; tags: {', '.join(tags) or 'none'}")
        return name
    from .model_info import zoo_models

    zoo = zoo_models()
    close = difflib.get_close_matches(name, zoo, n=3, cutoff=0.5) or difflib.get_close_matches(
        name, _known_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"unknown model {name!r}{hint} (`vmamba-zoo list` shows the zoo's models)")


def _check_img_size(name: str, size: int) -> None:
    import timm

    if size < 1:
        raise UserError(f"--img-size must be positive, got {size}")
    cfg = timm.models.get_pretrained_cfg(name) if name else None
    if cfg is not None and cfg.fixed_input_size and size != cfg.input_size[-1]:
        raise UserError(f"{name} only accepts {cfg.input_size[-1]}x{cfg.input_size[-1]} inputs, got --img-size {size}")
    min_size = cfg.min_input_size[-1] if cfg is not None and cfg.min_input_size else 32
    if size < min_size:
        raise UserError(f"{name} needs inputs of at least {min_size}x{min_size}, got --img-size {size}")


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"cannot read image {path}: no such file")
    try:
        with Image.open(p) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA GPU is available")
    return dev


def _load_classifier(name: str, weights: Optional[str], random_init: bool, pretrained_default: bool = True):
    """Build a classifier: --weights FILE, else pretrained (hub), else random with a notice."""
    from . import hub

    if weights:
        if not Path(weights).is_file():
            raise UserError(f"weights file {weights} does not exist")
        try:
            model = hub.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(Path(weights).resolve())))
        except RuntimeError as e:  # load_state_dict: missing/unexpected keys or shape mismatches
            if isinstance(e, hub.WeightsError):
                raise
            raise UserError(f"{weights} does not fit {name}: {str(e).splitlines()[0]}") from None
        return model, weights
    if random_init or not pretrained_default:
        import timm

        return timm.create_model(name, pretrained=False), None
    if hub.weights_status(name) == "none":
        raise UserError(f"{name} has no pretrained weights; pass --weights FILE or --random-init")
    model = hub.create_model(name, pretrained=True, progress=sys.stderr.isatty())
    return model, model.pretrained_cfg.get("file")


def load_class_names(path: Path = CLASS_NAMES_FILE) -> List[str]:
    """ImageNet-1k class descriptions, index order (``synset<TAB>description`` per line)."""
    return [line.split("\t", 1)[1].strip() for line in path.read_text().splitlines() if line.strip()]


def _fmt_params(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 1e6:.1f}M"


def _fmt_gflops(g: Optional[float]) -> str:
    return "?" if g is None else f"{g:.2f}"


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        _out("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


# --------------------------------------------------------------------------- list / info
def model_table_rows(include_test: bool, refresh: bool = False, compute_missing: bool = True) -> List[Dict[str, Any]]:
    """Rows for ``list``: cached facts (assets/model_table.json) plus the weight status."""
    from . import hub
    from .model_info import MODEL_TABLE_PATH, load_model_table, model_facts, save_model_table, zoo_models

    names = zoo_models(include_test=include_test)
    table = {} if refresh else load_model_table()
    missing = [n for n in names if n not in table]
    if missing and compute_missing and not refresh:
        _warn(f"computing params/FLOPs of {len(missing)} models missing from {MODEL_TABLE_PATH.name} "
              "(`vmamba-zoo list --refresh` stores them)")
    computed = []
    rows = []
    for name in names:
        row = table.get(name)
        if row is None and compute_missing:
            _logger.info("computing params/FLOPs of %s (not in %s)", name, MODEL_TABLE_PATH.name)
            facts = model_facts(name)
            computed.append(facts)
            row = facts.to_json()
        elif row is None:
            facts = model_facts(name, flops=False)
            row = facts.to_json()
        row = dict(row, weights=hub.weights_status(name))
        rows.append(row)
    if refresh and computed:  # keep the rows of registered models not recomputed here (test_* without --test)
        registered = set(zoo_models(include_test=True))
        save_model_table(computed, keep={k: v for k, v in load_model_table().items() if k in registered})
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    rows = model_table_rows(include_test=args.test, refresh=args.refresh)
    if args.json:
        _out(json.dumps(rows, indent=1))
        return 0
    if not rows:
        _out("no vmamba_zoo models are registered")
        return 0
    table = [("model", "family", "scan", "params", "GFLOPs@224", "weights")]
    for r in rows:
        table.append((r["model"], r["family"], r["scan"], _fmt_params(r["params"]), _fmt_gflops(r["gflops"]),
                      r["weights"]))
    _print_table(table)
    _out("GFLOPs: multiply-accumulates of matmuls/convs + 9*B*D*L*N per selective scan, batch 1, "
         "from vmamba_zoo/assets/model_table.json (`vmamba-zoo list --refresh` recomputes it)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import timm

    from . import hub
    from .model_info import family_of, load_model_table, model_facts

    name = check_model_name(args.model)
    arch = timm.models.split_model_name_tag(name)[0]
    cfg = timm.models.get_pretrained_cfg(name)
    row = load_model_table().get(arch) or model_facts(arch).to_json()
    src = hub.resolve_weight_source(name)
    lines = [
        ("model", name),
        ("family", family_of(name)),
        ("scan pattern", row["scan"]),
        ("params", f"{row['params']:,}"),
        ("GFLOPs", f"{_fmt_gflops(row['gflops'])} at {row['input_size'][-1]}px (scan: {_fmt_gflops(row['scan_gflops'])})"),
        ("pretrained tags", ", ".join(t.split(".", 1)[1] for t in timm.list_pretrained(arch + ".*")) or "-"),
        ("weights", src.describe()),
        ("weights status", hub.weights_status(name)),
    ]
    if src.cache_path is not None:
        lines.append(("cache path", str(src.cache_path)))
    if cfg is not None:
        lines += [
            ("license", cfg.license or "-"),
            ("paper", " ".join(filter(None, [cfg.paper_ids if isinstance(cfg.paper_ids, str) else
                                             ", ".join(cfg.paper_ids or ()), cfg.paper_name])) or "-"),
            ("origin", cfg.origin_url or "-"),
            ("input", f"{cfg.input_size}, crop_pct {cfg.crop_pct}, {cfg.interpolation}, mean {cfg.mean}, std {cfg.std}"),
            ("notes", "; ".join(cfg.notes) if cfg.notes else "-"),
        ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        _out(f"{k.ljust(width)}  {v}")
    return 0


# --------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from timm.data import create_transform, resolve_data_config

    name = check_model_name(args.model)
    images = [(p, _open_image(p)) for p in args.images]  # fail on unreadable files before loading weights
    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    model, source = _load_classifier(name, args.weights, args.random_init)
    if source is None:
        _warn(f"{name} has random weights (--random-init): the predictions are meaningless")
    device = _device(args.device)
    model = model.eval().to(device)
    config = resolve_data_config(model=model)
    transform = create_transform(**config)
    names = load_class_names() if getattr(model, "num_classes", 0) == 1000 else None
    batch = torch.stack([transform(img) for _, img in images]).to(device)
    with torch.inference_mode():
        probs = model(batch).float().softmax(-1)
    k = min(args.top_k, probs.shape[-1])
    top_p, top_i = probs.topk(k, dim=-1)
    results = []
    for (path, _), ps, idx in zip(images, top_p.tolist(), top_i.tolist()):
        preds = [dict(index=i, label=names[i] if names else str(i), prob=round(p, 5)) for p, i in zip(ps, idx)]
        results.append(dict(image=path, predictions=preds))
    if args.json:
        _out(json.dumps(dict(model=name, weights=source, results=results), indent=1))
        return 0
    for r in results:
        _out(f"{r['image']}:")
        for rank, p in enumerate(r["predictions"], 1):
            _out(f"  {rank}. {100 * p['prob']:6.2f}%  {p['label']} ({p['index']})")
    return 0


# --------------------------------------------------------------------------- restore
def _restoration():
    """The restoration package (its import needs only torch/numpy)."""
    try:
        from . import restoration
    except ImportError as e:  # a missing optional dependency of the restoration package
        raise UserError(f"restoration support is unavailable: {e}") from None
    return restoration


def _load_restoration_net(name: str, weights: Optional[str]):
    """A shipped model by name, a zoo ``.safetensors`` file, or a registered network + checkpoint."""
    from .restoration.pretrained import SHIPPED_MODELS

    rest = _restoration()
    if weights:
        if not Path(weights).is_file():
            raise UserError(f"weights file {weights} does not exist")
        if name in SHIPPED_MODELS or weights.endswith(".safetensors"):
            try:
                return rest.load_shipped_model(weights)
            except ValueError:  # a safetensors file without the zoo's metadata: use the registry below
                pass
    known = sorted(set(SHIPPED_MODELS) | set(rest.list_restoration_models()))
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        raise UserError(f"unknown restoration model {name!r}; "
                        + (f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(known)}"))
    if weights:
        return rest.create_restoration_model(name, checkpoint_path=weights)
    if name not in SHIPPED_MODELS:
        raise UserError(f"no shipped weights for {name}; pass --weights FILE (shipped: {', '.join(sorted(SHIPPED_MODELS))})")
    try:
        return rest.load_shipped_model(name)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


def cmd_restore(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    img = np.asarray(_open_image(args.image))
    if min(img.shape[:2]) < 8:
        raise UserError(f"image {args.image} is {img.shape[1]}x{img.shape[0]}; restoration needs at least 8x8 pixels")
    if args.tile is not None and args.tile < 32:
        raise UserError(f"--tile must be at least 32 pixels, got {args.tile}")
    device = _device(args.device)
    net = _load_restoration_net(args.model, args.weights).eval().to(device)
    t0 = time.perf_counter()
    out = _restoration().restore_image(net, img, tile_size=args.tile)
    out_path = Path(args.out or Path(args.image).with_name(Path(args.image).stem + "_restored.png"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(out_path)
    _out(f"wrote {out_path} ({out.shape[1]}x{out.shape[0]}, {time.perf_counter() - t0:.1f}s on {device})")
    return 0


# --------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import MODES, format_table, run_benchmarks_auto

    names = [check_model_name(n) for n in args.models]
    for n in names:
        _check_img_size(n, args.img_size)
    if args.batch_size < 1 or args.iters < 1 or args.warmup < 0:
        raise UserError("--batch-size and --iters must be >= 1, --warmup >= 0")
    modes = args.modes or list(MODES)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise UserError(f"unknown --modes {bad}; choose from {', '.join(MODES)}")
    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    settings = dict(device=str(_device(args.device)), batch_size=args.batch_size, img_size=args.img_size, modes=modes,
                    warmup=args.warmup, iters=args.iters, channels_last=args.channels_last, tf32=args.tf32,
                    progress=not args.no_progress)
    if args.isolate is False and args.repeats > 1:
        raise UserError("--repeats runs every model in fresh processes; drop --in-process")
    report = run_benchmarks_auto(names, repeats=args.repeats, isolate=args.isolate, **settings)
    _out(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        _out(f"wrote {args.json}")
    return 0


# --------------------------------------------------------------------------- erf
def cmd_erf(args: argparse.Namespace) -> int:
    from .erf import effective_receptive_field, erf_summary, save_heatmap

    name = check_model_name(args.model)
    _check_img_size(name, args.img_size)
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    images = [_open_image(p) for p in args.images] if args.images else None
    model, source = _load_classifier(name, args.weights, not args.pretrained and not args.weights)
    if source is None:
        _warn(f"{name}: ERF of randomly initialised weights (pass --pretrained or --weights for a trained model)")
    device = _device(args.device)
    erf = effective_receptive_field(model.to(device), img_size=args.img_size, samples=args.samples,
                                    images=images, stage=args.stage, seed=args.seed)
    out = Path(args.out)
    save_heatmap(erf, out, title=f"{name} ERF")
    summary = erf_summary(erf)
    _out(f"wrote {out}; " + ", ".join(f"{int(100 * t)}% of the contribution within {s:.1%} of the area"
                                      for t, s in summary.items()))
    return 0


# --------------------------------------------------------------------------- convert / export
def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    name = check_model_name(args.model)
    if not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint {args.checkpoint} does not exist")
    try:
        info = convert_checkpoint(args.checkpoint, args.out, name, key=args.key)
    except ValueError as e:  # the checkpoint does not fit the model
        raise UserError(str(e)) from None
    _out(f"wrote {info['path']}: {info['tensors']} tensors, {info['params']:,} values, sha256 {info['sha256']}")
    _out(f"load with: timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file={str(info['path'])!r}))")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .onnx_export import export_onnx

    name = check_model_name(args.model)
    _check_img_size(name, args.img_size)
    if not args.onnx:
        raise UserError("choose an export format: --onnx OUT.onnx")
    model, source = _load_classifier(name, args.weights, not args.pretrained and not args.weights)
    if source is None:
        _warn(f"exporting {name} with random weights (pass --pretrained or --weights FILE for trained ones)")
    try:
        report = export_onnx(model, args.onnx, img_size=args.img_size, opset=args.opset, backend=args.scan_backend,
                             check=not args.no_check)
    except AssertionError as e:  # the onnxruntime check failed: say so in one line, keep the file for inspection
        _warn(f"error: {args.onnx} was written, but {str(e).splitlines()[0]}")
        return 1
    check = (f"onnxruntime matches PyTorch (max abs diff {report.max_abs_diff:.2e}, batch {report.checked_batch})"
             if report.max_abs_diff is not None else "not checked")
    _out(f"wrote {report.path} ({report.file_mb:.1f} MB, {report.num_nodes} nodes, opset {report.opset}, "
         f"scan backend {report.scan_backend}); {check}")
    return 0


# --------------------------------------------------------------------------- demo
def _demo_restoration(out_dir: Path, device) -> Optional[Dict[str, Any]]:
    """Denoise the bundled photo with the shipped denoiser; None (and a note) if its weights are absent."""
    import numpy as np
    from PIL import Image

    rest = _restoration()
    from .restoration.pretrained import DEFAULT_DENOISER, shipped_weights_path

    try:
        shipped_weights_path(DEFAULT_DENOISER)
    except (FileNotFoundError, ValueError) as e:
        _out(f"[1/3] restoration: skipped -- {e}")
        return None
    net = rest.load_shipped_denoiser(device)
    clean = np.asarray(_open_image(str(DEMO_IMAGE)))
    sigma = 25.0
    noisy_f = rest.add_gaussian_noise(clean, sigma, np.random.RandomState(0))  # [0, 1] float, unclipped
    noisy = (np.clip(noisy_f, 0.0, 1.0) * 255.0).round().astype(np.uint8)  # a noisy 8-bit photo
    t0 = time.perf_counter()
    restored = rest.restore_image(net, noisy)
    seconds = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    for tag, img in (("clean", clean), ("noisy", noisy), ("restored", restored)):
        Image.fromarray(img).save(out_dir / f"{tag}.png")
    psnr = rest.calculate_psnr
    metrics = dict(model=getattr(net, "name", DEFAULT_DENOISER), image=DEMO_IMAGE.name, sigma=sigma,
                   seconds=round(seconds, 2), device=str(device),
                   psnr_noisy=round(float(psnr(noisy, clean, crop_border=0, input_order="HWC")), 3),
                   psnr_restored=round(float(psnr(restored, clean, crop_border=0, input_order="HWC")), 3))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    _out(f"[1/3] restoration: {metrics['model']} denoised {DEMO_IMAGE.name} (a photo held out of its training; "
         f"Gaussian noise sigma {sigma:g}) in "
         f"{seconds:.1f}s: PSNR {metrics['psnr_noisy']:.2f} dB -> {metrics['psnr_restored']:.2f} dB "
         f"(clean/noisy/restored.png, metrics.json in {out_dir})")
    return metrics


def cmd_demo(args: argparse.Namespace) -> int:
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the demo never downloads
    try:
        return _run_demo(args)
    finally:
        if previous is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _run_demo(args: argparse.Namespace) -> int:
    import torch

    out_dir = Path(args.out)
    device = _device(args.device)
    t_start = time.perf_counter()
    _out(f"vmamba-zoo demo (device {device}, offline); outputs in {out_dir}")
    _demo_restoration(out_dir, device)

    _out("[2/3] model table:")
    rows = model_table_rows(include_test=False, compute_missing=False)
    table = [("model", "family", "scan", "params", "GFLOPs@224", "weights")]
    table += [(r["model"], r["family"], r["scan"], _fmt_params(r["params"]), _fmt_gflops(r["gflops"]), r["weights"])
              for r in rows]
    _print_table(table)

    from . import hub
    from .model_info import zoo_models

    registered = set(zoo_models())
    name = args.model or next((m for m in DEMO_MODELS if m in registered), None)
    if name is None:
        _out("[3/3] classification: skipped -- no zoo classification model is registered")
        return 0
    name = check_model_name(name)
    cached = hub.weights_status(name) == "cached"
    model, source = _load_classifier(name, None, random_init=not cached)
    from timm.data import create_transform, resolve_data_config

    backend = _scan_backend_name(device)
    model = model.eval().to(device)
    transform = create_transform(**resolve_data_config(model=model))
    x = transform(_open_image(str(DEMO_IMAGE)))[None].to(device)
    with torch.inference_mode():
        model(x)  # warm-up
        t0 = time.perf_counter()
        probs = model(x).float().softmax(-1)[0]
        ms = 1e3 * (time.perf_counter() - t0)
    names = load_class_names()
    weights_note = f"pretrained weights from {source}" if source else \
        "random weights (no cached pretrained weights; `vmamba-zoo info` says where to put them) -- labels are meaningless"
    _out(f"[3/3] classification: {name} on {DEMO_IMAGE.name}, {ms:.0f} ms/image on {device}, scan backend {backend}, "
         f"{weights_note}")
    top_p, top_i = probs.topk(5)
    for p, i in zip(top_p.tolist(), top_i.tolist()):
        _out(f"      {100 * p:6.2f}%  {names[i]}")
    _out(f"done in {time.perf_counter() - t_start:.1f}s")
    return 0


def _scan_backend_name(device) -> str:
    """The selective-scan backend that backend='auto' picks on ``device`` (for the demo's report)."""
    try:
        from vmamba_zoo_kernels import dispatch
    except ImportError:
        return "unknown"
    resolve = getattr(dispatch, "resolve_backend", None)
    if resolve is None:
        return "auto"
    import torch

    try:
        name = str(resolve("auto", torch.empty(0, device=device)))
    except (TypeError, ValueError, RuntimeError):
        return "auto"
    if name == "cpu":  # inference runs the compiled kernel where it could be built
        from vmamba_zoo_kernels.native_cpu import native_library

        return "native (compiled C)" if native_library() is not None else "cpu (chunked PyTorch)"
    return name


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``vmamba-zoo``."""
    p = argparse.ArgumentParser(prog="vmamba-zoo", description="Visual Mamba model zoo: models, weights, tools.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO) to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="list the zoo's models")
    s.add_argument("--test", action="store_true", help="include the tiny test_* models")
    s.add_argument("--refresh", action="store_true", help="recompute params/FLOPs and update the committed table")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("info", help="details of one model")
    s.add_argument("model")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("predict", help="ImageNet top-k of images")
    s.add_argument("model")
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--weights", help="local checkpoint (official .pth or zoo .safetensors)")
    s.add_argument("--random-init", action="store_true", help="skip pretrained weights (smoke tests)")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("restore", help="run a restoration network on an image (e.g. the shipped denoiser "
                                        "wavelet_mambair_dn25_skimage)")
    s.add_argument("model")
    s.add_argument("image")
    s.add_argument("--weights", help="checkpoint of the restoration network (default: its shipped weights)")
    s.add_argument("--out", help="output PNG (default: IMAGE_restored.png)")
    s.add_argument("--tile", type=int, default=256, help="tile size for large images (default 256)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("bench", help="throughput, latency and peak memory")
    s.add_argument("models", nargs="+", metavar="MODEL")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--img-size", type=int, default=224)
    s.add_argument("--modes", nargs="+", help="subset of infer_fp32 infer_bf16 train_bf16")
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--iters", type=int, default=20)
    s.add_argument("--device", default="auto")
    s.add_argument("--channels-last", action="store_true")
    s.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (off by default)")
    s.add_argument("--json", "--out", dest="json", help="write the results to this JSON file")
    s.add_argument("--repeats", type=int, default=1,
                   help="N > 1: every model in N fresh processes, interleaved across models; median and samples")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--isolate", action="store_const", const=True, dest="isolate",
                       help="every model in a fresh process (default with several models on CUDA, or --repeats)")
    where.add_argument("--in-process", action="store_const", const=False, dest="isolate",
                       help="every model in this process (later models of a host-bound table can measure slower)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("erf", help="effective receptive field heatmap (PNG)")
    s.add_argument("model")
    s.add_argument("--out", default="erf.png")
    s.add_argument("--img-size", type=int, default=224)
    s.add_argument("--samples", type=int, default=8, help="inputs to average over")
    s.add_argument("--images", nargs="+", help="real images instead of random inputs")
    s.add_argument("--stage", type=int, default=-1, help="feature stage whose centre is used (default: last)")
    s.add_argument("--pretrained", action="store_true", help="use the pretrained weights")
    s.add_argument("--weights", help="local checkpoint")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_erf)

    s = sub.add_parser("convert", help="official checkpoint -> zoo safetensors")
    s.add_argument("checkpoint")
    s.add_argument("out")
    s.add_argument("--model", required=True, help="zoo model the checkpoint belongs to")
    s.add_argument("--key", help="key holding the state dict (default: model/state_dict/params_ema/params)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("export", help="export to ONNX (pure-PyTorch scan), checked with onnxruntime")
    s.add_argument("model")
    s.add_argument("--onnx", metavar="OUT", help="output .onnx file")
    s.add_argument("--img-size", type=int, default=224)
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--scan-backend", default="ref", choices=("ref", "cpu"),
                   help="pure-PyTorch scan used while tracing: ref (default; graph grows with H*W) or cpu "
                        "(chunked, ~2*sqrt(H*W) steps; use it for full-size inputs)")
    s.add_argument("--pretrained", action="store_true")
    s.add_argument("--weights")
    s.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("demo", help="offline CPU demo")
    s.add_argument("--out", default="outputs/demo")
    s.add_argument("--model", help="classification model (default: the first of %s)" % ", ".join(DEMO_MODELS))
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``vmamba-zoo``; returns the exit status."""
    from .hub import WeightsError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # its retry warnings would precede our one-line error
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except (UserError, WeightsError) as e:
        _warn(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _warn("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
