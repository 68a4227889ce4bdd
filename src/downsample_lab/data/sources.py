"""CIFAR-10 from three sources, decoded once into uint8 tensors and cached on disk: :func:`load_split`.

Sources (``data.source``):

- ``torchvision``: the official python-pickle files under ``data.root``, downloaded by torchvision when absent.
- ``folder``: an image-folder copy, ``<root>/{train,test}/<class>/*.{png,jpg}``, class folders named as in
  CIFAR-10 (their sorted order is the official label order).
- ``synthetic``: generated 32x32 images of ten class patterns under random shifts and noise; learnable in a few
  hundred steps, for smoke tests and benchmarks.

Whatever the source, a split becomes one ``(N, 3, 32, 32)`` uint8 tensor and one int64 label tensor, written to
``data.cache_dir`` together with a fingerprint of the source files, so a second run skips decoding and a changed
source is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.datasets.folder import make_dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from tqdm.auto import tqdm

from downsample_lab.data.config import (
    CIFAR10_CLASSES,
    TORCHVISION_FOLDER,
    DataConfig,
    folder_split_problem,
    missing_torchvision_files,
)
from downsample_lab.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
# Bump when the cached tensors would differ for the same source files (decoder, layout, synthetic recipe).
CACHE_VERSION = 1


@dataclass
class Split:
    """One split of the data set in memory."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64
    # tensor_digest of a whole split as load_split returns it; None for a part of one
    digest: str | None = None

    def __len__(self) -> int:
        return len(self.labels)


def tensor_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 (hex) of a split's decoded pixels and labels, in order: two copies of CIFAR-10 share it only if
    they decode to the same tensors, whatever their files or folder (the JPEG and the PNG copy do not).
    ~0.1 s for the 50,000 training images; :func:`load_split` keeps it in the cache."""
    h = hashlib.sha256(f"{tuple(images.shape)} {images.dtype} {labels.dtype}\n".encode())
    for t in (images, labels):
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def split_of(data: DataConfig, split: str) -> Split:
    """One split as the ``data`` config group names it (:func:`load_split`, through the cache)."""
    size = data.synthetic_train_size if split == "train" else data.synthetic_test_size
    return load_split(
        str(data.source), data.root, split, data.cache_dir, synthetic_size=size, download=data.download
    )


def data_digest(splits: list[Split]) -> str:
    """The data a run reads as one checksum: SHA-256 of its whole splits' digests (training, then test; the
    held-out and subset parts follow from the config), first 12 hex digits."""
    return hashlib.sha256("\0".join(str(s.digest) for s in splits).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------------
# Sources: each returns (fingerprint of what it reads, a function that decodes it).
# ---------------------------------------------------------------------------------------------------------------


def _torchvision_source(root: Path, split: str, download: bool) -> tuple[dict, Callable[[], Split]]:
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=split == "train", download=download)
    except Exception as err:  # URLError, OSError, RuntimeError("Dataset not found or corrupted") ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not download:  # torchvision's own words name its download=True argument, not our key
            folder = root / TORCHVISION_FOLDER
            if not folder.is_dir():
                raise DataError(missing_torchvision_files(root)) from None
            if isinstance(err, RuntimeError) and "not found or corrupted" in str(err):
                reason = "torchvision's checksum check failed"
            raise DataError(
                f"{folder} cannot be read ({reason}); delete it and set data.download=true to fetch CIFAR-10 "
                "again, or point data.root at a good copy"
            ) from None
        raise DataError(
            f"CIFAR-10 is not under data.root={root} and could not be downloaded ({reason}); "
            "point data.root at the folder that holds cifar-10-batches-py, "
            "or use data.source=folder data.root=<folder with train/ and test/ class folders>"
        ) from None
    base = root / dataset.base_folder
    names = [name for name, _ in (dataset.train_list if split == "train" else dataset.test_list)]
    fingerprint = {"files": [[n, (base / n).stat().st_size, (base / n).stat().st_mtime_ns] for n in names]}

    def decode() -> Split:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(dataset.targets, dtype=torch.int64))

    return fingerprint, decode


def _folder_source(root: Path, split: str) -> tuple[dict, Callable[[], Split]]:
    split_dir = root / split
    problem = folder_split_problem(root, split)
    if problem is not None:
        raise DataError(problem)
    class_to_idx = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    try:
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMAGE_EXTENSIONS)
    except FileNotFoundError as err:
        raise DataError(f"{split_dir}: {err}".rstrip(".")) from None
    digest = hashlib.sha256()
    for path, label in samples:
        st = os.stat(path)
        digest.update(
            f"{os.path.relpath(path, split_dir)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
        )
    fingerprint = {"n": len(samples), "files_sha256": digest.hexdigest()}

    def decode() -> Split:
        images = _decode_files([path for path, _ in samples], desc=f"decoding {split_dir}")
        return Split(images, torch.tensor([label for _, label in samples], dtype=torch.int64))

    return fingerprint, decode


def _decode_files(paths: list[str], desc: str, chunk: int = 2048) -> torch.Tensor:
    """Decode image files into one (N, 3, 32, 32) uint8 tensor, naming any file that is corrupt or mis-sized."""
    out = torch.empty(len(paths), 3, 32, 32, dtype=torch.uint8)
    for start in tqdm(range(0, len(paths), chunk), desc=desc, unit="chunk", leave=False):
        part = paths[start : start + chunk]
        decoded = None
        if all(p.lower().endswith((".jpg", ".jpeg")) for p in part):
            try:  # torchvision decodes a list of JPEGs in one call, several times faster than one by one
                decoded = decode_jpeg([read_file(p) for p in part], mode=ImageReadMode.RGB)
            except RuntimeError:
                decoded = None  # some file is bad: decode one by one below to name it
        if decoded is None:
            decoded = []
            for p in part:
                try:
                    decoded.append(decode_image(p, mode=ImageReadMode.RGB))
                except (RuntimeError, ValueError) as err:
                    raise DataError(
                        f"cannot decode image {p} ({str(err).splitlines()[0]}); replace or delete it"
                    ) from None
        for i, (p, img) in enumerate(zip(part, decoded, strict=True)):
            if tuple(img.shape) != (3, 32, 32):
                raise DataError(
                    f"image {p} is {img.shape[2]}x{img.shape[1]} pixels; CIFAR-10 images are 32x32"
                )
            out[start + i] = img
    return out


def _synthetic_source(split: str, size: int) -> tuple[dict, Callable[[], Split]]:
    def decode() -> Split:
        # Ten fixed low-frequency colour patterns (the same for both splits), each image one of them shifted by
        # up to 4 pixels with per-pixel noise: a CNN separates them, but not from a single pixel.
        templates = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        templates = F.interpolate(templates, size=(32, 32), mode="bilinear", align_corners=False) * 200 + 28
        gen = torch.Generator().manual_seed(1 if split == "train" else 2)
        labels = torch.arange(size) % 10
        images = templates[labels]
        shifts = torch.randint(-4, 5, (size, 2), generator=gen)
        for i in range(size):
            images[i] = torch.roll(images[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
        images = images + torch.randn(images.shape, generator=gen) * 40
        return Split(images.clamp(0, 255).to(torch.uint8), labels.to(torch.int64))

    return {"size": size}, decode


# ---------------------------------------------------------------------------------------------------------------
# The on-disk cache
# ---------------------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/downsample_lab``, or ``~/.cache/downsample_lab``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "downsample_lab"


def _read_cache(path: Path, key: dict) -> Split | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        images, labels = blob["images"], blob["labels"]
        ok = images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32) and len(images) == len(labels)
        if not ok:
            raise ValueError("unexpected tensor shapes")
    except Exception as err:
        log.warning("Cache file %s is unreadable (%s); decoding the source again.", path, err)
        return None
    if blob.get("key") != json.dumps(key, sort_keys=True):
        log.info("Cache file %s is stale (the source changed); decoding the source again.", path)
        return None
    split = Split(images, labels, blob.get("digest"))
    if split.digest is None:  # written before the digest existed: computed once, and kept
        split.digest = tensor_digest(images, labels)
        _write_cache(path, key, split)
    return split


def _write_cache(path: Path, key: dict, split: Split) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename: a killed run never leaves a half-written cache behind.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        blob = {"key": json.dumps(key, sort_keys=True), "digest": split.digest}
        torch.save({**blob, "images": split.images, "labels": split.labels}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_split(
    source: str,
    root: str | os.PathLike,
    split: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    synthetic_size: int | None = None,
    download: bool = False,
) -> Split:
    """Load one split (``"train"`` or ``"test"``) of CIFAR-10 as uint8 tensors, through the on-disk cache.

    ``synthetic_size``: the number of images, for ``source="synthetic"`` (required there); ``download``: let
    torchvision download the official files when they are absent from ``root``.
    """
    root = Path(root).expanduser().resolve()
    if source == "torchvision":
        fingerprint, decode = _torchvision_source(root, split, download)
    elif source == "folder":
        fingerprint, decode = _folder_source(root, split)
    elif source == "synthetic" and synthetic_size is not None:
        fingerprint, decode = _synthetic_source(split, synthetic_size)
    else:
        raise ValueError(f"cannot load source {source!r} (synthetic_size={synthetic_size})")
    where = "synthetic" if source == "synthetic" else str(root)
    key = {"version": CACHE_VERSION, "source": source, "root": where, "split": split, **fingerprint}
    name = hashlib.sha256(f"{source}\0{where}".encode()).hexdigest()[:12]
    cache_file = Path(cache_dir or default_cache_dir()).expanduser() / f"{source}-{split}-{name}.pt"
    cached = _read_cache(cache_file, key)
    if cached is not None:
        log.info("Loaded %s %s split (%d images) from cache %s", source, split, len(cached), cache_file)
        return cached
    data = decode()
    data.digest = tensor_digest(data.images, data.labels)
    _write_cache(cache_file, key, data)
    log.info("Decoded %s %s split (%d images); cached in %s", source, split, len(data), cache_file)
    return data
