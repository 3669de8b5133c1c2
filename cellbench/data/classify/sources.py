"""Resolve ``data.path`` into train/val/test image lists and class names.

Accepted forms of ``data.path``:
  1. an ImageFolder tree ``DIR/train/<class>/*`` with ``val/`` (or ``valid/``, ``validation/``)
     and optionally ``test/``;
  2. one folder of class subfolders ``DIR/<class>/*``, split per class (stratified) with
     ``data.split_seed``, ``data.val_ratio`` and ``data.test_ratio``;
  3. a Hugging Face dataset saved with ``save_to_disk`` (``datasets.load_from_disk``): a
     DatasetDict with ``train`` and ``validation|val|valid`` [and ``test``], or a single split,
     which is split like (2);
  4. ``hf-imagefolder:DIR``: ``datasets.load_dataset("imagefolder", data_dir=DIR)``;
  5. ``hf:NAME``: a hub dataset, loaded only when the hub is reachable or the dataset is cached.
Missing splits are carved out stratified with the same seed: no val -> ``val_ratio`` of train;
no test -> ``test_ratio`` of val (the seeds/002 protocol: Tiny ImageNet's ``valid`` split becomes
80% val / 20% test with ``test_ratio: 0.2``). ``test_ratio: 0`` means no test split.
Nothing here decodes pixels: ``build_classification_data`` does the header scan.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.config import DataConfig
from cellbench.data.classify.images import FileSplit, HFSplit
from cellbench.data.classify.splits import stratified_split
from cellbench.errors import BadInputError

# torchvision's ImageFolder extensions, so a tree that works there works here
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
VAL_NAMES = ("val", "valid", "validation")
HF_IMAGEFOLDER = "hf-imagefolder:"
HF_HUB = "hf:"

Split = FileSplit | HFSplit


@dataclass
class ResolvedSource:
    train: Split
    val: Split
    test: Split | None
    classes: list[str]
    kind: str  # imagefolder-tree | class-folders | hf-disk | hf-imagefolder | hf-hub
    description: str  # one line for logs: where each split came from
    warnings: list[str] = field(default_factory=list)

    def splits(self) -> dict[str, Split]:
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out


# --------------------------------------------------------------------------- folders


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _unreadable(exc: OSError) -> None:
    # os.walk skips folders it cannot list unless told: an unreadable class folder would read
    # as "has no images", and its images would silently be missing from the dataset
    raise BadInputError(f"{exc.filename}: cannot read folder ({exc.strerror})") from exc


def readable_folder(folder: Path) -> Path:
    """``folder``, or a one-line error when it cannot be listed (Permission denied...): else
    the first file looked for inside it would be named, although it does not exist."""
    try:
        with os.scandir(folder):
            pass
    except OSError as exc:
        raise BadInputError(f"{folder}: cannot read folder ({exc.strerror})") from exc
    return folder


def _images_under(folder: Path) -> tuple[list[str], int]:
    """Sorted image paths below ``folder`` (recursively, like ImageFolder), and skipped files."""
    images, skipped = [], 0
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_unreadable, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if _is_image(name):
                images.append(os.path.join(dirpath, name))
            elif not name.startswith("."):
                skipped += 1
    return images, skipped


def image_list_digest(root: Path) -> tuple[int, str]:
    """``(count, sha256)`` of the image files below ``root`` by relative path, as the folder
    loaders see them (dot folders and non-images left out): what decides the carved splits.
    An image added, removed or renamed changes it; an image's content does not (its bytes
    are not read)."""
    digest = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, onerror=_unreadable, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if _is_image(name):
                relative = os.path.relpath(os.path.join(dirpath, name), root)
                digest.update(relative.encode("utf-8", "surrogateescape") + b"\n")
                count += 1
    return count, digest.hexdigest()


def scan_class_folders(
    root: Path, classes: list[str] | None = None
) -> tuple[list[str], FileSplit, int]:
    """Classes, images and labels of ``root/<class>/...``; ``classes`` fixes the label order."""
    if not root.is_dir():
        raise BadInputError(f"{root}: folder not found")
    found = _class_dirs(readable_folder(root))
    if not found:
        loose = any(_is_image(e.name) for e in os.scandir(root))
        what = "images but no class subfolders" if loose else "no class subfolders"
        raise BadInputError(f"{root}: {what} (expected {root}/<class>/<image>)")
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise BadInputError(
                f"{root}: class folder(s) {', '.join(unknown)} not in the train classes"
            )
    paths: list[str] = []
    labels: list[int] = []
    skipped = 0
    for name in found:
        images, n_skipped = _images_under(root / name)
        if not images:
            raise BadInputError(f"{root / name}: class '{name}' has no images")
        paths += images
        labels += [classes.index(name)] * len(images)
        skipped += n_skipped
    return classes, FileSplit(paths, np.asarray(labels, dtype=np.int64)), skipped


def _select_classes(split: Split, classes: list[str], wanted: list[str], where: str) -> Split:
    """Keep the images of ``wanted`` classes, relabelled in ``wanted``'s order."""
    missing = [c for c in wanted if c not in classes]
    if missing:
        raise BadInputError(
            f"{where}: data.classes {', '.join(missing)} not found (classes: {', '.join(classes)})"
        )
    old_to_new = np.full(len(classes), -1, dtype=np.int64)
    for new, name in enumerate(wanted):
        old_to_new[classes.index(name)] = new
    mapped = old_to_new[split.labels]
    keep = np.flatnonzero(mapped >= 0)
    selected = split.subset(keep)
    selected.labels = mapped[keep]
    return selected


def _complete_splits(
    train: Split,
    val: Split | None,
    test: Split | None,
    classes: list[str],
    data: DataConfig,
    where: str,
    whole: str = "train",
) -> tuple[Split, Split, Split | None, list[str], str]:
    """Select ``data.classes``, then carve missing val/test splits (see the module docstring).

    Returns the splits, the class names and a note saying what was carved.
    """
    if data.classes:
        wanted = list(data.classes)
        train, val, test = (
            _select_classes(s, classes, wanted, where) if s is not None else None
            for s in (train, val, test)
        )
        classes = wanted
    notes = []

    def carve(split: Split, first: float, second: float) -> tuple[Split, Split, Split]:
        idx = stratified_split(split.labels, first, second, data.split_seed, classes)
        return split.subset(idx[0]), split.subset(idx[1]), split.subset(idx[2])

    if val is None:
        test_ratio = 0.0 if test is not None else data.test_ratio
        train, val, carved_test = carve(train, data.val_ratio, test_ratio)
        notes.append(f"val = {data.val_ratio:g} of {whole} per class")
        if test is None and data.test_ratio > 0:
            test = carved_test
            notes.append(f"test = {data.test_ratio:g} of {whole} per class")
    elif test is None and data.test_ratio > 0:
        # carve(val) returns (rest, carved, empty): the rest stays val, the carved part is test
        val, test, _ = carve(val, data.test_ratio, 0.0)
        notes.append(f"test = {data.test_ratio:g} of val per class")
    if notes:
        notes.append(f"split_seed {data.split_seed}")
    if test is not None and len(test) == 0:
        test = None
    return train, val, test, classes, "; ".join(notes)


def _skipped_warning(root: Path, skipped: int) -> list[str]:
    return [f"{root}: {skipped} non-image files ignored"] if skipped else []


def _from_tree(root: Path, data: DataConfig) -> ResolvedSource:
    classes, train, skipped = scan_class_folders(root / "train")
    val = test = None
    val_dir = next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)
    if val_dir is not None:
        _, val, s = scan_class_folders(val_dir, classes)
        skipped += s
    if (root / "test").is_dir():
        _, test, s = scan_class_folders(root / "test", classes)
        skipped += s
    layout = "train/" + (f" {val_dir.name}/" if val_dir else "") + (" test/" if test else "")
    train, val, test, classes, note = _complete_splits(train, val, test, classes, data, str(root))
    description = f"ImageFolder tree {root} ({layout.strip()})" + (f"; {note}" if note else "")
    return ResolvedSource(
        train, val, test, classes, "imagefolder-tree", description, _skipped_warning(root, skipped)
    )


def _from_class_folders(root: Path, data: DataConfig) -> ResolvedSource:
    classes, everything, skipped = scan_class_folders(root)
    train, val, test, classes, note = _complete_splits(
        everything, None, None, classes, data, str(root), whole="the folder"
    )
    description = f"class folders {root}; {note}"
    return ResolvedSource(
        train, val, test, classes, "class-folders", description, _skipped_warning(root, skipped)
    )


# --------------------------------------------------------------------------- Hugging Face


def _hf_labels(splits: dict[str, Any], key: str, where: str) -> tuple[list[str], dict]:
    """Class names and, per split, int64 labels indexing them."""
    import datasets

    first = next(iter(splits.values()))
    feature = first.features.get(key)
    raw = {}
    for name, ds in splits.items():
        if key not in ds.column_names:
            raise BadInputError(
                f"{where}[{name}]: no label column '{key}' "
                f"(columns: {', '.join(ds.column_names)}); set data.hf_label_key"
            )
        raw[name] = np.asarray(ds.with_format("numpy", columns=[key])[key])
    if isinstance(feature, datasets.ClassLabel):
        classes = list(feature.names)
        labels = {n: v.astype(np.int64) for n, v in raw.items()}
        for name, values in labels.items():
            if len(values) and (values.min() < 0 or values.max() >= len(classes)):
                raise BadInputError(
                    f"{where}[{name}]: label values outside 0..{len(classes) - 1} "
                    "(unlabelled rows use -1; drop them before training)"
                )
        return classes, labels
    values = np.unique(np.concatenate([v for v in raw.values()]))
    classes = [str(v) for v in values]
    return classes, {n: np.searchsorted(values, v).astype(np.int64) for n, v in raw.items()}


def _from_hf(obj: Any, where: str, kind: str, data: DataConfig) -> ResolvedSource:
    import datasets

    if isinstance(obj, datasets.Dataset):
        splits = {"train": obj}
    elif isinstance(obj, datasets.DatasetDict):
        splits = dict(obj)
    else:
        raise BadInputError(f"{where}: not a Dataset or DatasetDict ({type(obj).__name__})")
    if not splits:
        raise BadInputError(f"{where}: the dataset has no splits")
    for name, ds in splits.items():
        if len(ds) == 0:
            raise BadInputError(f"{where}[{name}]: split is empty")
        if data.hf_image_key not in ds.column_names:
            raise BadInputError(
                f"{where}[{name}]: no image column '{data.hf_image_key}' "
                f"(columns: {', '.join(ds.column_names)}); set data.hf_image_key"
            )
    if len(splits) == 1:
        chosen = {"train": next(iter(splits))}
    elif "train" in splits:
        chosen = {"train": "train"}
    else:
        raise BadInputError(f"{where}: no 'train' split (splits: {', '.join(splits)})")
    val_name = next((n for n in VAL_NAMES if n in splits), None)
    if len(splits) > 1 and val_name:
        chosen["val"] = val_name
    if len(splits) > 1 and "test" in splits:
        chosen["test"] = "test"
    used = {role: splits[name] for role, name in chosen.items()}
    classes, labels = _hf_labels(used, data.hf_label_key, where)

    def make(role: str) -> HFSplit | None:
        if role not in used:
            return None
        name = chosen[role]
        ds = used[role]
        return HFSplit(ds, np.arange(len(ds)), labels[role], data.hf_image_key, f"{where}[{name}]")

    train, val, test, classes, note = _complete_splits(
        make("train"), make("val"), make("test"), classes, data, where
    )
    mapping = ", ".join(f"{role}={name}" for role, name in chosen.items())
    description = f"Hugging Face dataset {where} ({mapping})" + (f"; {note}" if note else "")
    return ResolvedSource(train, val, test, classes, kind, description)


def _load_hf_disk(root: Path) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(root))
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise BadInputError(f"{root}: not a readable saved Hugging Face dataset ({exc})") from exc


def _load_hf_imagefolder(folder: str) -> Any:
    import datasets

    from cellbench.models.hub import offline_hub_if_unreachable

    if not Path(folder).is_dir():
        raise BadInputError(f"{folder}: folder not found ({HF_IMAGEFOLDER}{folder})")
    with offline_hub_if_unreachable():
        try:
            return datasets.load_dataset("imagefolder", data_dir=folder)
        except (FileNotFoundError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"{folder}: imagefolder builder failed: {first[:240]}") from exc


def _load_hf_hub(name: str) -> Any:
    import datasets

    from cellbench.models.hub import offline_hub_if_unreachable

    with offline_hub_if_unreachable() as online:
        try:
            return datasets.load_dataset(name)
        except Exception as exc:  # hub, network, cache and builder errors all end here
            if not online:
                raise BadInputError(
                    f"{HF_HUB}{name}: the Hugging Face hub is unreachable and the dataset is not "
                    "cached; download it on a connected machine and save_to_disk, then set "
                    "data.path to that folder"
                ) from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"{HF_HUB}{name}: cannot load dataset: {first[:240]}") from exc


def _is_saved_hf(root: Path) -> bool:
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()


def resolve_source(data: DataConfig) -> ResolvedSource:
    """Where each split's images and labels come from; reads no pixels."""
    source = _resolve(data)
    if len(source.val) == 0:
        raise BadInputError(
            f"{data.path}: no validation images (every class has a single image, or "
            "data.val_ratio is 0 and there is no val split)"
        )
    return source


def _resolve(data: DataConfig) -> ResolvedSource:
    path = str(data.path)
    if path.startswith(HF_IMAGEFOLDER):
        folder = path[len(HF_IMAGEFOLDER) :]
        return _from_hf(_load_hf_imagefolder(folder), folder, "hf-imagefolder", data)
    if path.startswith(HF_HUB):
        name = path[len(HF_HUB) :]
        return _from_hf(_load_hf_hub(name), f"{HF_HUB}{name}", "hf-hub", data)
    root = Path(path).expanduser()
    if not root.exists():
        raise BadInputError(f"{root}: data path not found")
    if not root.is_dir():
        raise BadInputError(
            f"{root}: expected a folder (class folders, train/val tree or a saved "
            "Hugging Face dataset)"
        )
    readable_folder(root)
    if _is_saved_hf(root):
        return _from_hf(_load_hf_disk(root), str(root), "hf-disk", data)
    if (root / "train").is_dir():
        return _from_tree(root, data)
    return _from_class_folders(root, data)
