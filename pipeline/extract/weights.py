"""Which weights to load: `random` (only by name), the Hugging Face cache (fetched into it once), or a file."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import timm

from pipeline.errors import WeightsError
from pipeline.io.files import hash_file

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_SEED = 0
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass(frozen=True)
class Weights:
    source: str  # "hub" | "file" | "random"
    path: str | None
    sha256: str  # of the weights file, or the word "random"
    seed: int | None = None  # torch seed of a random init

    def record(self) -> dict:
        record = {"source": self.source, "path": self.path, "sha256": self.sha256}
        if self.seed is not None:
            record["seed"] = self.seed
        return record


def sha256_file(path: str | os.PathLike) -> str:
    return hash_file(path, "sha256").hexdigest()


def resolve_weights(model_name: str, weights: str) -> Weights:
    """`random` (only by name), `hub` (the Hugging Face cache; fetched into it once when missing, unless
    HF_HUB_OFFLINE=1), or a local file."""
    if weights == "random":
        log.warning("using RANDOM weights for %s, as asked: features are for testing, not for use", model_name)
        return Weights("random", None, "random", seed=RANDOM_WEIGHTS_SEED)
    if weights == "hub":
        path, digest = hub_file(model_name)
        return Weights("hub", path, digest)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {weights!r} does not exist. --weights takes 'hub', 'random', or a "
                           f"path to a {'/'.join(WEIGHT_SUFFIXES)} file")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise WeightsError(f"weights file {weights!r} is not one of {WEIGHT_SUFFIXES}")
    not_one = not_a_checkpoint(path)
    if not_one:
        raise WeightsError(f"{path.name} is not a checkpoint: {not_one}. " + _TAKES)
    return Weights("file", str(path.resolve()), sha256_file(path))


_TAKES = ("--weights takes a .safetensors file, a .pth/.pt/.bin state dict as torch.save writes it (timm or "
          "original facebookresearch DINOv2/DINOv3 layout), 'hub' or 'random'")


def not_a_checkpoint(path: Path) -> str | None:
    """What the file is instead, when its first bytes are not those of a checkpoint of its suffix (a
    safetensors header; torch.save's zip archive or legacy pickle); None when they are."""
    with open(path, "rb") as f:
        head = f.read(256)
    size = path.stat().st_size
    if path.suffix.lower() == ".safetensors":
        if len(head) > 8 and int.from_bytes(head[:8], "little") < size and head[8:9] == b"{":
            return None
        kind = "its first bytes are not a safetensors header"
    else:
        if head.startswith((b"PK\x03\x04", b"\x80")):  # zip (torch >= 1.6), pickle protocol >= 2 (older)
            return None
        kind = "its first bytes are neither a zip archive nor a pickle, as torch.save writes"
    if not head:
        return "it is empty"
    text = head.decode("utf-8", errors="replace")  # a character cut at byte 256 is one replacement
    if text.count("\ufffd") <= 1 and all(c.isprintable() or c.isspace() for c in text.replace("\ufffd", "")):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"it holds text ({first!r} ...)"
    from PIL import Image

    try:
        with Image.open(path) as im:
            return f"it is a {im.format} image"
    except Exception:  # noqa: BLE001 - not an image either: the bytes' own description stands
        return kind


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1/ON/YES/TRUE); `--offline` sets it for the job."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_names(model_name: str) -> tuple[str, list[str]]:
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as exc:
        raise WeightsError(f"timm knows no pretrained weights for {model_name!r}: {exc}") from exc
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise WeightsError(f"timm has no Hugging Face hub id for {model_name!r}; pass --weights PATH")
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
    names += [n for n in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin") if n not in names]
    return repo, names


def hub_file(model_name: str) -> tuple[str, str]:
    """(path in the Hugging Face cache, sha256) of the model's weights. Missing and online: fetched once into
    the cache (with a progress bar; a dropped connection goes on where it stopped), then found there with no
    network. A cached file whose content no longer matches its hub checksum (the blob's name) is fetched
    again online, refused offline."""
    from huggingface_hub import try_to_load_from_cache

    repo, names = _hub_names(model_name)
    for name in names:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and os.path.isfile(found):
            digest = sha256_file(found)
            if _intact(found, digest):
                return found, digest
            if hub_offline():
                raise WeightsError(f"{found} is damaged (its sha256 {digest[:12]}... is not the hub's "
                                   f"{_blob_name(found)[:12]}...) and HF_HUB_OFFLINE=1 forbids fetching it again: "
                                   f"delete it and fetch it where there is network")
            log.warning("%s in the Hugging Face cache is damaged (checksum mismatch): fetching it again", name)
            return _download(repo, [name], force=True)
    if hub_offline():
        raise WeightsError(
            f"no weights for {model_name!r} in the Hugging Face cache (looked for {repo}/{names[0]} under "
            f"{_cache_dir()}) and HF_HUB_OFFLINE=1 forbids fetching them. " + _ways_out(repo)
            + " (or run without HF_HUB_OFFLINE/--offline).")
    return _download(repo, names)


def _download(repo: str, names: list[str], force: bool = False) -> tuple[str, str]:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    unreachable = _unreachable(endpoint)
    if unreachable:  # fail at once: huggingface_hub would retry each file for half a minute
        raise WeightsError(f"no weights for {repo} in the Hugging Face cache, and the hub at {endpoint} cannot be "
                           f"reached ({unreachable}). " + _ways_out(repo)
                           + "; HF_HUB_OFFLINE=1 (or --offline) skips this check.")
    for name in names:
        log.info("fetching %s/%s from %s into the Hugging Face cache (once)", repo, name, endpoint)
        try:
            path = hf_hub_download(repo, name, force_download=force, endpoint=endpoint)
        except EntryNotFoundError:
            continue
        except RepositoryNotFoundError as exc:
            raise WeightsError(f"the hub at {endpoint} has no repository {repo!r}: pass --weights PATH") from exc
        except Exception as exc:  # noqa: BLE001 - network, HTTP and disk errors: one line a person can act on
            raise WeightsError(f"could not fetch {repo}/{name} from {endpoint} ({type(exc).__name__}: "
                               f"{str(exc)[:200]}); rerun to try again, or set HF_HUB_OFFLINE=1 and pass "
                               f"--weights PATH") from exc
        digest = sha256_file(path)
        if not _intact(path, digest):
            raise WeightsError(f"{repo}/{name} arrived damaged (sha256 {digest[:12]}... is not the hub's "
                               f"{_blob_name(path)[:12]}...): rerun to fetch it again")
        return path, digest
    raise WeightsError(f"the hub at {endpoint} has none of {', '.join(names)} in {repo}: pass --weights PATH")


def _ways_out(repo: str) -> str:
    """What a person without the weights can do, in one sentence (no final stop)."""
    return (f"Fetch them once where there is network (`hf download {repo}`) and copy the cache here, or pass a "
            f"local file with --weights PATH (.safetensors or .pth; original facebookresearch DINOv2/DINOv3 "
            f"checkpoints work), or --weights random for a test run")


def _unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why the hub's host cannot be reached (name lookup or TCP connect), or None when it can."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _blob_name(path: str) -> str:
    return Path(os.path.realpath(path)).name


def _intact(path: str, digest: str) -> bool:
    """The cache stores a large (LFS) file as blobs/<its sha256>; a small one under its git hash (not checked)."""
    blob = _blob_name(path)
    return not re.fullmatch(r"[0-9a-f]{64}", blob) or blob == digest


def _cache_dir() -> str:
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"


_CONVERT = ("convert it once, where you trust the file: python -c \"import torch, safetensors.torch as st; "
            "sd = torch.load('{path}', weights_only=False); sd = sd.get('model', sd); "
            "st.save_file({{k: v.contiguous() for k, v in sd.items() if hasattr(v, 'contiguous')}}, "
            "'{stem}.safetensors')\" and pass --weights {stem}.safetensors")


def explain_load_error(exc: BaseException, path: str, model_name: str) -> str:
    """One paragraph a person can act on, instead of torch's 5 kB list of keys or its pickle advice."""
    text = str(exc)
    name = Path(path).name
    full = f"{text}\n{exc.__cause__ or ''}"  # timm wraps torch's error
    if "Unsupported global" in full:  # a torch.save file that pickles objects of some code base
        stem = str(Path(path).with_suffix(""))
        return (f"{name} stores pickled Python objects, which --weights refuses to load (unpickling can run "
                f"code); " + _CONVERT.format(path=path, stem=stem))
    if "weights_only" in full or "WeightsUnpickler" in full:  # not a checkpoint: never advise unpickling it
        found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", full)
        detail = found.group(1)[:120] if found else "a pickle of no tensors torch reads"
        return f"{name} is not a checkpoint (torch cannot read it as one: {detail}). " + _TAKES
    if "state_dict" in text and ("Missing key" in text or "Unexpected key" in text or "size mismatch" in text):
        missing = _keys_after(text, "Missing key(s) in state_dict:")
        unexpected = _keys_after(text, "Unexpected key(s) in state_dict:")
        sizes = [m.group(0) for m in re.finditer(r"size mismatch for [^:]+: copying a param with shape [^,]+, "
                                                 r"the shape in current model is [^.]+", text)]
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights of the model are missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} in the file are unknown to it (e.g. {', '.join(unexpected[:3])})")
        if sizes:
            parts.append(f"{len(sizes)} have another shape ({sizes[0].removeprefix('size mismatch for ')})")
        return (f"{name} does not fit {model_name}: {'; '.join(parts)}. {describe_layout(read_keys(path))}")
    return f"{name} cannot be read as a checkpoint ({type(exc).__name__}: {text[:200] or 'no detail'}); " + _TAKES


def _keys_after(text: str, marker: str) -> list[str]:
    if marker not in text:
        return []
    section = text.split(marker, 1)[1].split("\n", 1)[0].split("Unexpected key(s)", 1)[0]
    return re.findall(r'"([^"]+)"', section)


def read_keys(path: str) -> list[str]:
    """The tensor names a checkpoint holds ([] when it cannot be read safely)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                return list(f.keys())
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - only a hint; the load error itself is reported
        return []
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            return [f"{wrapper}.{k}" for k in state[wrapper]]
    return list(state) if isinstance(state, dict) else []


def describe_layout(keys: list[str]) -> str:
    """The nearest checkpoint layout this pipeline knows, and what to do about it."""
    if not keys:
        return "The file's own keys could not be listed."
    first = keys[0]
    if any(k.startswith(("teacher.", "student.")) for k in keys):
        return ("It looks like a DINO training checkpoint (teacher/student): save the teacher's backbone weights "
                "(keys teacher.backbone.*, prefix removed) as .safetensors and pass that.")
    if any(k.startswith(("module.", "model.", "state_dict.")) for k in keys):
        return (f"Its keys carry a wrapper prefix ({first.split('.', 1)[0]}.): save the inner state dict without "
                f"the prefix.")
    if any(k.startswith(("embeddings.patch_embeddings", "encoder.layer.")) for k in keys):
        return ("It is in the Hugging Face transformers layout (Dinov2Model): use the timm or the original "
                "facebookresearch checkpoint of the same model instead.")
    if any(k.startswith("blocks.") for k in keys) and any("patch_embed" in k for k in keys):
        depth = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("blocks.") and k.split(".")[1].isdigit())
        return (f"It is a ViT in the timm / facebookresearch layout with {depth} blocks: check --model (and "
                f"--model-kwargs) against the model the file was saved from.")
    return f"Its keys ({len(keys)}, e.g. {', '.join(keys[:3])}) match no ViT layout this pipeline knows."
