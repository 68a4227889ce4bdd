"""The data module: sources, the on-disk cache, splits, batches and the batched augmentation."""

from __future__ import annotations

import logging
import pickle
import shutil

import pytest
import torch
from torchvision.io import write_png

from downsample_lab.data import CIFAR10DataModule, load_split
from downsample_lab.data import sources as sources_module
from downsample_lab.data.augment import CIFAR10_MEAN, normalize, random_crop_flip
from downsample_lab.data.cifar10 import TensorBatches, class_balanced_subset
from downsample_lab.data.sources import tensor_digest
from downsample_lab.errors import ConfigError, DataError

from .conftest import data_config, make_image_folder


def test_synthetic_data_module_serves_normalised_batches(tmp_path):
    data = data_config(tmp_path, "batch_size=32", "eval_batch_size=50", "val_size=40",
                       "synthetic_train_size=200", "synthetic_test_size=60")  # fmt: skip
    dm = CIFAR10DataModule(data, channels_last=True, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (160, 40, 60)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 3, 32, 32) and labels.shape == (32,)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert abs(x.mean().item()) < 1.5 and torch.equal(y, labels)
    assert len(dm.train_dataloader()) == 5  # 160 // 32
    assert [len(b[1]) for b in dm.val_dataloader()] == [40]
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 60


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    def split(seed):
        data = data_config(tmp_path, "val_size=50", f"split_seed={seed}", "synthetic_train_size=300",
                           "synthetic_test_size=20")  # fmt: skip
        dm = CIFAR10DataModule(data, channels_last=True, seed=0)
        dm.setup("fit")
        return dm

    a, b, c = split(0), split(0), split(1)
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    train_rows = {tuple(img.flatten()[:16].tolist()) for img in a.train_set.images}
    assert not any(tuple(img.flatten()[:16].tolist()) in train_rows for img in a.val_set.images)


def test_val_size_zero_validates_on_the_test_set(tmp_path):
    data = data_config(tmp_path, "val_size=0", "synthetic_train_size=100", "synthetic_test_size=30")
    dm = CIFAR10DataModule(data, channels_last=True, seed=0)
    dm.setup("fit")
    assert len(dm.train_set) == 100 and dm.val_set is dm.test_set and len(dm.val_set) == 30


def test_train_subset_is_class_balanced():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    subset = class_balanced_subset(torch.arange(100), labels, 31)
    counts = torch.bincount(labels[subset], minlength=3).tolist()
    assert sorted(counts) == [10, 10, 11] and len(set(subset.tolist())) == 31
    assert subset[:3].tolist() == [0, 1, 2]  # the first images of class 0 come first


def test_train_subset_larger_than_the_split_is_a_config_error(tmp_path):
    data = data_config(tmp_path, "val_size=10", "train_subset=500", "synthetic_train_size=100",
                       "synthetic_test_size=10")  # fmt: skip
    dm = CIFAR10DataModule(data, channels_last=True, seed=0)
    with pytest.raises(ConfigError, match=r"data\.train_subset=500 is larger than the 90 training images"):
        dm.setup("fit")


def test_image_folder_is_read_in_cifar10_label_order(tiny_folder, tmp_path):
    root, written = tiny_folder
    for split in ("train", "test"):
        data = load_split("folder", root, split, cache_dir=tmp_path / "cache")
        images, labels = written[split]
        assert torch.equal(data.labels, labels)
        assert torch.equal(data.images, images)  # PNG is lossless: the exact pixels come back


def test_jpeg_folder_decodes_close_to_the_original(tmp_path):
    written = make_image_folder(tmp_path / "jpg", {"train": 2, "test": 1}, fmt="jpg")
    data = load_split("folder", tmp_path / "jpg", "test", cache_dir=tmp_path / "cache")
    assert data.images.shape == (10, 3, 32, 32)
    assert (data.images.float() - written["test"][0].float()).abs().mean() < 3


def test_second_load_comes_from_the_cache(tiny_folder, tmp_path, monkeypatch):
    root, _ = tiny_folder
    first = load_split("folder", root, "train", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("folder-train-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(sources_module, "_decode_files", no_decoding)
    second = load_split("folder", root, "train", cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_cache_is_invalidated_when_the_source_changes(tiny_folder, tmp_path):
    root, _ = tiny_folder
    load_split("folder", root, "train", cache_dir=tmp_path / "cache")

    target = root / "train" / "cat" / "0000.png"
    new_image = torch.full((3, 32, 32), 7, dtype=torch.uint8)
    write_png(new_image, str(target))
    reloaded = load_split("folder", root, "train", cache_dir=tmp_path / "cache")
    cat_first = (reloaded.labels == 3).nonzero()[0].item()
    assert torch.equal(reloaded.images[cat_first], new_image)


def test_the_data_digest_tells_copies_apart_by_their_pixels_not_their_folder(tiny_folder, tmp_path):
    root, _ = tiny_folder
    cache = tmp_path / "cache"

    def digest(folder) -> str:
        cfg = data_config(cache, "source=folder", f"root={folder}")
        return CIFAR10DataModule(cfg, channels_last=False, seed=0).digest()

    first = digest(root)
    assert len(first) == 12 and digest(root) == first  # the second from the cache
    blob = torch.load(next(cache.glob("folder-train-*.pt")), weights_only=True)
    assert blob["digest"] == tensor_digest(blob["images"], blob["labels"])  # kept in the cache
    shutil.copytree(root, tmp_path / "moved")  # one copy at another path: the same data
    assert digest(tmp_path / "moved") == first
    make_image_folder(tmp_path / "jpg", {"train": 4, "test": 2}, fmt="jpg")  # the same images as JPEG
    assert digest(tmp_path / "jpg") != first
    changed = tmp_path / "moved" / "test" / "cat" / "0000.png"
    write_png(torch.full((3, 32, 32), 7, dtype=torch.uint8), str(changed))
    assert digest(tmp_path / "moved") != first  # one test image changed


def test_a_cache_written_before_the_digest_gets_one(tiny_folder, tmp_path):
    root, _ = tiny_folder
    fresh = load_split("folder", root, "test", cache_dir=tmp_path / "cache")
    cache_file = next((tmp_path / "cache").glob("folder-test-*.pt"))
    blob = torch.load(cache_file, weights_only=True)
    del blob["digest"]
    torch.save(blob, cache_file)
    assert load_split("folder", root, "test", cache_dir=tmp_path / "cache").digest == fresh.digest
    assert torch.load(cache_file, weights_only=True)["digest"] == fresh.digest  # written back, once


def test_a_data_module_pickled_for_spawned_workers_leaves_its_loaded_splits_behind(tmp_path):
    # digest() loads the splits before fit; trainer.strategy=ddp_spawn pickles the module into every worker
    dm = CIFAR10DataModule(data_config(tmp_path), channels_last=False, seed=0)
    dm.digest()
    assert dm._splits and pickle.loads(pickle.dumps(dm))._splits == {}


def test_corrupt_cache_is_rebuilt_with_a_warning(tiny_folder, tmp_path, caplog):
    root, _ = tiny_folder
    good = load_split("folder", root, "test", cache_dir=tmp_path / "cache")
    cache_file = next((tmp_path / "cache").glob("folder-test-*.pt"))
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # a truncated write
    with caplog.at_level(logging.WARNING):
        again = load_split("folder", root, "test", cache_dir=tmp_path / "cache")
    assert torch.equal(good.images, again.images)
    assert str(cache_file) in caplog.text and "unreadable" in caplog.text


def test_corrupt_image_is_named(tiny_folder, tmp_path):
    root, _ = tiny_folder
    bad = root / "test" / "dog" / "0001.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=f"cannot decode image {bad}"):
        load_split("folder", root, "test", cache_dir=tmp_path / "cache")


def test_missing_class_folder_is_named(tiny_folder, tmp_path):
    root, _ = tiny_folder
    for f in (root / "train" / "frog").iterdir():
        f.unlink()
    (root / "train" / "frog").rmdir()
    with pytest.raises(DataError, match="lacks the class folder\\(s\\) frog"):
        load_split("folder", root, "train", cache_dir=tmp_path / "cache")


def test_missing_torchvision_files_say_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(DataError, match=r"data\.source=folder"):
        load_split(
            "torchvision", tmp_path / "nothing-here", "test", cache_dir=tmp_path / "cache", download=False
        )


def test_random_crop_flip_translates_and_mirrors():
    torch.manual_seed(0)
    images = (
        torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 32, 32)
    )
    images = images.repeat(200, 1, 1, 1)
    out = random_crop_flip(images, padding=4, flip=True, mode="zeros")
    assert out.shape == images.shape and out.dtype == torch.uint8
    # The reference: torchvision's RandomCrop(32, padding=4) then RandomHorizontalFlip, as 9 x 9 x 2 outcomes.
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    outcome = torch.full((len(images),), -1)
    matches = torch.zeros(len(images), dtype=torch.int64)
    for dy in range(9):
        for dx in range(9):
            crop = padded[:, :, dy : dy + 32, dx : dx + 32]
            for flipped, candidate in ((0, crop), (1, crop.flip(3))):
                same = (out == candidate).flatten(1).all(1)
                outcome[same] = (dy * 9 + dx) * 2 + flipped
                matches += same
    assert (matches == 1).all()  # each output is exactly one shifted, maybe mirrored, copy of its input
    assert 0.4 < (outcome % 2).float().mean().item() < 0.6  # mirrored half the time
    assert len(set((outcome // 2).tolist())) == 81  # every shift of -4..4 pixels on both axes occurs


def test_normalize_uses_cifar_statistics():
    mean_image = torch.tensor([round(m * 255) for m in CIFAR10_MEAN], dtype=torch.uint8).view(1, 3, 1, 1)
    x = normalize(mean_image.expand(2, 3, 4, 4).contiguous())
    assert x.abs().max() < 0.01


def test_training_batches_are_global_and_shared_over_processes():
    n, batch = 100, 20
    images = torch.arange(n).view(n, 1, 1, 1).expand(n, 3, 32, 32).to(torch.uint8)
    labels = torch.arange(n)
    shards = [
        TensorBatches(images, labels, batch, shuffle=True, seed=3, rank=r, world_size=4) for r in range(4)
    ]
    per_rank = [list(s) for s in shards]
    assert all(len(p) == 5 for p in per_rank)
    for step in range(5):
        parts = [per_rank[r][step][1] for r in range(4)]
        assert all(len(p) == 5 for p in parts)  # 20 / 4 processes
        combined = torch.cat(parts)
        assert len(set(combined.tolist())) == 20
    seen = torch.cat([b[1] for p in per_rank for b in p])
    assert sorted(seen.tolist()) == list(range(n))
    # a new epoch is a new order; the same epoch is the same order
    epoch = [0]
    loader = TensorBatches(images, labels, batch, shuffle=True, seed=3, epoch_fn=lambda: epoch[0])
    first = torch.cat([b[1] for b in loader])
    assert torch.equal(first, torch.cat([b[1] for b in loader]))
    epoch[0] = 1
    assert not torch.equal(first, torch.cat([b[1] for b in loader]))


def test_evaluation_batches_cover_the_set_once_over_processes():
    n = 103
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    labels = torch.arange(n)
    seen = [
        b[1] for r in range(3) for b in TensorBatches(images, labels, 16, shuffle=False, rank=r, world_size=3)
    ]
    assert sorted(torch.cat(seen).tolist()) == list(range(n))


def test_torchvision_files_that_fail_their_checksum_without_download_say_what_to_do(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"truncated")
    with pytest.raises(
        DataError,
        match=r"cifar-10-batches-py cannot be read \(torchvision.s checksum check failed\); delete it and set data.download=true",
    ) as info:
        load_split("torchvision", tmp_path, "test", cache_dir=tmp_path / "cache", download=False)
    assert "download=True" not in str(info.value)  # torchvision's argument, not a key of ours
