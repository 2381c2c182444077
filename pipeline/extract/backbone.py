"""The timm backbone on its device: weights resolution, provenance, and the CLS / pooled-patch features."""

from __future__ import annotations

import difflib
import logging
import pickle
from collections.abc import Callable

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import parse_model_name, split_model_name_tag

from pipeline import __version__
from pipeline.errors import ConfigError, WeightsError
from pipeline.extract.allocator import keep_freed_memory
from pipeline.extract.compiled import CompiledForward, device_name
from pipeline.extract.config import DEFAULT_MODEL, EVAL_CROP_PCT, EXTRA_COLUMNS, ExtractConfig
from pipeline.extract.device import autocast, resolve_precision
from pipeline.extract.preprocess import Preprocess
from pipeline.extract.weights import RANDOM_WEIGHTS_SEED, Weights, explain_load_error, resolve_weights
from pipeline.io.stats import STATS_DEFINITION
from pipeline.provenance import stamp

log = logging.getLogger(__name__)


def create_model(cfg: ExtractConfig, weights: Weights) -> torch.nn.Module:
    """timm model with the config's overrides; file weights go through timm's checkpoint filter. The input size
    goes to models that take one (ViTs); the others (convnets) take any size, set by the preprocessing alone."""
    kwargs = dict(cfg.model_kwargs)
    size: dict[str, object] = {}
    if cfg.resize_mode == "dynamic":
        size["dynamic_img_size"] = True
    elif cfg.resolution is not None:
        size["img_size"] = cfg.resolution
    try:
        try:
            return _build(cfg, weights, {**kwargs, **size})
        except TypeError as exc:
            if not size or set(size) & set(kwargs) or f"keyword argument '{next(iter(size))}'" not in str(exc):
                raise
        return _build(cfg, weights, kwargs)
    except (TypeError, AssertionError, ValueError) as exc:
        if not kwargs:
            raise
        given = ",".join(f"{k}={v}" for k, v in cfg.model_kwargs)
        texts = [f"{k}={v!r} is text, not a number" for k, v in cfg.model_kwargs if isinstance(v, str)]
        raise ConfigError(f"timm cannot build {cfg.model} with --model-kwargs {given} ({type(exc).__name__}: "
                          f"{str(exc)[:200]}){'; ' + ', '.join(texts) if texts else ''}: check the names and values "
                          f"against the model's constructor arguments") from exc


def _build(cfg: ExtractConfig, weights: Weights, kwargs: dict) -> torch.nn.Module:
    if weights.source == "random":
        # Seeded, so that two runs (or a resumed run) with random weights use the same random model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return timm.create_model(cfg.model, pretrained=False, **kwargs)
    try:
        return timm.create_model(cfg.model, pretrained=True, pretrained_cfg_overlay=dict(file=weights.path),
                                 **kwargs)
    except (RuntimeError, KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise WeightsError(explain_load_error(exc, str(weights.path), cfg.model)) from exc


def check_model_name(name: str) -> None:
    """An unknown timm name (or pretrained tag) is refused in one line, with the nearest names timm knows."""
    source, arch = parse_model_name(name)
    if source is not None:  # hf-hub:org/repo, local-dir:... : timm resolves these itself
        return
    base, tag = split_model_name_tag(arch)
    if not timm.is_model(base):
        near = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = (f"did you mean {', '.join(near)}?" if near else
                "list them with python -c \"import timm; print(timm.list_models('*dinov2*'))\"")
        raise ConfigError(f"timm has no model {base!r} (--model): {hint} (the default is {DEFAULT_MODEL})")
    if tag and arch not in timm.list_pretrained(f"{base}.*"):
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{base}.*")]
        raise ConfigError(f"timm has no pretrained tag {tag!r} for {base} (--model): its tags are "
                          f"{', '.join(tags) or 'none'}")


def resolve_preprocess(model: torch.nn.Module, cfg: ExtractConfig) -> Preprocess:
    """The model's own data config, with the input size set to what the model really takes."""
    data = resolve_model_data_config(model)
    patch = _patch_size(model)
    size = cfg.resolution or _model_img_size(model) or max(data["input_size"][1:])
    if cfg.crop_pct is not None:
        crop = cfg.crop_pct
    elif cfg.resolution is not None:
        crop = EVAL_CROP_PCT  # global features as DINOv2 evaluates them: resize 256, centre crop 224
    else:
        crop = data.get("crop_pct", 1.0)
    return Preprocess(
        input_size=(3, size, size), interpolation=data["interpolation"], mean=tuple(data["mean"]),
        std=tuple(data["std"]), crop_pct=crop, crop_mode=data.get("crop_mode", "center"),
        resize_mode=cfg.resize_mode, patch_size=patch,
    )


def _patch_size(model: torch.nn.Module) -> int:
    pe = getattr(model, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    if ps is None:
        return 32  # convnets: keep dynamic sides a multiple of a typical total stride
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


def _model_img_size(model: torch.nn.Module) -> int | None:
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is None:
        return None
    return int(max(size) if isinstance(size, (tuple, list)) else size)


class Backbone:
    """Holds the model on its device (moved once) and turns uint8 batches into feature tensors."""

    def __init__(self, model: torch.nn.Module, preprocess: Preprocess, weights: Weights, cfg: ExtractConfig,
                 device: torch.device) -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.preprocess, self.weights, self.cfg, self.device = preprocess, weights, cfg, device
        self.precision, self.precision_why = resolve_precision(cfg.precision, device)
        if cfg.precision == "auto":
            log.info("precision auto → %s: %s", self.precision, self.precision_why)
        self.mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1) * 255.0
        self.num_prefix = int(getattr(model, "num_prefix_tokens", 0))
        # ViTs with a class token; the others (convnets, ViTs without one) stand in their own pooled pre-logits
        self.has_cls = getattr(model, "cls_token", None) is not None
        self.num_registers = max(0, self.num_prefix - int(self.has_cls))
        self.channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"  # Swin's maps
        self.embed_dim = int(getattr(model, "num_features", 0) or model.embed_dim)
        self._forward_features = CompiledForward(
            self.model.forward_features, cfg.compile, device, compile_key(cfg, device, self.precision),
            depth=len(getattr(model, "blocks", ())) or None, precision=self.precision,
            not_possible=compile_not_possible(cfg))

    def plan_compile(self, count: Callable[[int], int | None]) -> None:
        """How to count the images the run will embed: `--compile auto` decides from it (extract/compiled.py)."""
        self._forward_features.plan(count)

    @property
    def compiled(self) -> CompiledForward:
        return self._forward_features

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 NCHW on the device → float32 features on the device: cls, patch_mean and the extras."""
        # in place on one new float copy: two fewer 4-byte copies of the batch (~10 MB each for 16 images at
        # 224 px) to allocate and fault in per pass, the same arithmetic
        x = images.to(torch.float32, copy=True).sub_(self.mean).div_(self.std)
        extras = self.cfg.extras
        with autocast(self.device, self.precision):
            if "layers" in extras:
                final, inter = self.model.forward_intermediates(
                    x, indices=self.cfg.last_layers, norm=True, output_fmt="NLC", return_prefix_tokens=True)
                tokens = final
            else:
                tokens = self._forward_features(x)
        tokens = tokens.float()
        if tokens.ndim == 4:  # convnet NCHW (Swin NHWC) maps: their positions stand for the patch tokens
            cls = self.model.forward_head(tokens, pre_logits=True).float()
            patches = tokens.flatten(1, 2) if self.channels_last else tokens.flatten(2).transpose(1, 2)
        else:
            cls = tokens[:, 0] if self.has_cls else self.model.forward_head(tokens, pre_logits=True).float()
            patches = tokens[:, self.num_prefix:]
        out = {"cls": cls, "patch_mean": patches.mean(dim=1)}
        if "registers" in extras and self.num_registers:
            out["registers"] = tokens[:, self.num_prefix - self.num_registers:self.num_prefix].flatten(1)
        if "gem" in extras:
            p = self.cfg.gem_p
            out["patch_gem"] = patches.clamp(min=1e-6).pow(p).mean(dim=1).pow(1.0 / p)
        if "layers" in extras:
            out["layers"] = torch.cat([prefix[:, 0].float() for _, prefix in inter], dim=1)
        return out

    def provenance(self) -> dict:
        """What made these features: recorded in every Parquet file, config.json and marker."""
        record = {
            "model": self.cfg.model,
            "model_kwargs": {k: v for k, v in self.cfg.model_kwargs},
            "weights": self.weights.record(),
            **self.preprocess.record(),
            "precision": self.precision,
            "precision_why": self.precision_why,
            "dtype": self.cfg.dtype,
            "features": ["cls", "patch_mean"] + feature_extras(self.cfg, self.num_registers),
            "last_layers": self.cfg.last_layers if "layers" in self.cfg.extras else None,
            "gem_p": self.cfg.gem_p if "gem" in self.cfg.extras else None,
            "jpeg_draft": self.cfg.jpeg_draft,
            "quantize": None,  # the dropped int8 path; kept so that fingerprints of older roots hold
            "compile": self.cfg.compile,
            "embed_dim": self.embed_dim,
            "num_prefix_tokens": self.num_prefix,
            "device": str(self.device),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "pipeline": __version__,
        }
        if self.cfg.keep_columns:  # only when asked for: roots without them keep their fingerprints
            record["keep_columns"] = list(self.cfg.keep_columns)
        if "stats" in self.cfg.extras:  # the quality signals' definitions; absent (old fingerprints hold) otherwise
            record["stats"] = dict(STATS_DEFINITION)
        return stamp(record)


def compile_key(cfg: ExtractConfig, device: torch.device, precision: str) -> str:
    """What the compile ledger tells apart: device, model and its kwargs, precision, input, torch."""
    kwargs = ",".join(f"{k}={v}" for k, v in cfg.model_kwargs)
    return f"{device_name(device)}|{cfg.model}|{kwargs}|{precision}|{cfg.resolution}|torch {torch.__version__}"


def compile_not_possible(cfg: ExtractConfig) -> str | None:
    """Why the forward pass is not compiled whatever the run's size; None when it may be."""
    if cfg.resize_mode == "dynamic":
        return "dynamic resolution (--resize-mode dynamic): each input shape would compile anew"
    if "layers" in cfg.extras:
        return "--extras layers runs the model's forward_intermediates, which is not compiled"
    return None


def feature_extras(cfg: ExtractConfig, num_registers: int) -> list[str]:
    """The extra feature columns this config adds (registers only when the model has them)."""
    return [column for extra, column in EXTRA_COLUMNS.items()
            if extra in cfg.extras and (extra != "registers" or num_registers)]


def create_backbone(cfg: ExtractConfig, device: torch.device) -> Backbone:
    """Weights resolved, model built and checked against the config, moved to `device` once. On the CPU the
    process keeps the forward passes' freed memory for the next one (extract/allocator.py)."""
    if device.type == "cpu":
        keep_freed_memory()
    check_model_name(cfg.model)
    weights = resolve_weights(cfg.model, cfg.weights)
    model = create_model(cfg, weights)
    check_resolution(model, cfg)
    if "layers" in cfg.extras and getattr(model, "cls_token", None) is None:
        raise ConfigError(f"--extras layers stores the CLS token of the last blocks, and {cfg.model} has no CLS "
                          f"token (its features: cls = its pooled pre-logits, patch_mean): drop it, or use a ViT")
    return Backbone(model, resolve_preprocess(model, cfg), weights, cfg, device)


def check_resolution(model: torch.nn.Module, cfg: ExtractConfig) -> None:
    """A fixed input must be a whole number of patches: 13 px fails inside torch for a 14 px patch, and 15 px
    would silently drop a pixel row and column. Refused up front, naming the sizes that work."""
    if cfg.resolution is None or cfg.resize_mode != "fixed" or getattr(model, "patch_embed", None) is None:
        return
    patch = _patch_size(model)
    if cfg.resolution % patch:
        lower = max(patch, cfg.resolution // patch * patch)
        raise ConfigError(f"--resolution {cfg.resolution} is not a multiple of {cfg.model}'s patch size {patch}: "
                          f"use {lower} or {lower + patch} (DINOv2 evaluates at 224, its native size is 518)")
