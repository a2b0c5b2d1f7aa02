"""`dataset_info.json`: the category table and label constants of a converted dataset.

Written by the converters next to the TFRecord shards, read by the input pipeline, the
trainer, the evaluator and export. A custom dataset in COCO panoptic format therefore
needs no code changes: its categories come from this file.

Stable API (others import it):
  DatasetInfo(name, label_divisor, ignore_label, categories, num_examples)
  DatasetInfo.load(path) / info.save(path)   path = the json file or its directory
  info.num_classes                 number of real classes C (train ids 0..C-1)
  info.thing_train_ids             sorted list of train ids with isthing == 1
  info.stuff_train_ids             sorted list of train ids with isthing == 0
  info.things_then_stuff_train_ids thing train ids then stuff train ids (deeplab2's
                                   transformer class-head channel order, void last)
  info.is_thing                    list[bool] of length C, indexed by train id
  info.train_id_to_category_id     dict train id -> original category id
  info.category_id_to_train_id     dict original category id -> train id
  info.colors                      list of [r, g, b] indexed by train id
  info.names                       list of names indexed by train id
  info.coco_categories()           COCO-panoptic "categories" list (original ids)
  DatasetInfo.from_coco_categories(name, coco_categories, label_divisor, ignore_label)
"""
from __future__ import annotations

import colorsys
import dataclasses
import json
import os
from typing import Any

from deeplab2_kmax.core.cli import UserError

INFO_FILE_NAME = "dataset_info.json"


@dataclasses.dataclass(frozen=True)
class Category:
  """One real class: original id, contiguous train id, name, isthing, colour."""
  id: int
  train_id: int
  name: str
  isthing: int
  color: tuple[int, int, int]

  def to_json(self) -> dict[str, Any]:
    return {"id": self.id, "train_id": self.train_id, "name": self.name,
            "isthing": self.isthing, "color": list(self.color)}


def default_color(index: int) -> tuple[int, int, int]:
  """A deterministic, well-spread colour for a category without one."""
  hue = (index * 0.618033988749895) % 1.0
  r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
  return (int(r * 255), int(g * 255), int(b * 255))


@dataclasses.dataclass
class DatasetInfo:
  """Category table + label constants of one dataset (all splits)."""
  name: str
  label_divisor: int
  ignore_label: int
  categories: list[Category]
  num_examples: dict[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.categories = sorted(self.categories, key=lambda c: c.train_id)
    train_ids = [c.train_id for c in self.categories]
    if train_ids != list(range(len(train_ids))):
      raise ValueError(f"dataset {self.name!r}: train ids must be 0..C-1, got {train_ids}")
    ids = [c.id for c in self.categories]
    if len(set(ids)) != len(ids):
      raise ValueError(f"dataset {self.name!r}: duplicate category ids {ids}")
    if self.ignore_label < len(self.categories):
      raise ValueError(f"dataset {self.name!r}: ignore_label {self.ignore_label} collides "
                       f"with the {len(self.categories)} train ids")
    if self.label_divisor < 2:
      raise ValueError(f"dataset {self.name!r}: label_divisor must be >= 2")

  # --- derived tables -------------------------------------------------------------
  @property
  def num_classes(self) -> int:
    return len(self.categories)

  @property
  def thing_train_ids(self) -> list[int]:
    return [c.train_id for c in self.categories if c.isthing]

  @property
  def stuff_train_ids(self) -> list[int]:
    return [c.train_id for c in self.categories if not c.isthing]

  @property
  def things_then_stuff_train_ids(self) -> list[int]:
    """Train id of each of deeplab2's transformer class-head channels, void excluded.

    deeplab2 orders those channels as its thing classes, then its stuff classes, each in
    ascending class id; its class ids increase with our train ids (COCO, ADE20K: train
    id + 1; Cityscapes: equal), so channel j is this list's train id j. A converted
    checkpoint takes our class logit of train id t from deeplab2's channel
    `things_then_stuff_train_ids.index(t)` (void stays the last channel).
    """
    return self.thing_train_ids + self.stuff_train_ids

  @property
  def is_thing(self) -> list[bool]:
    return [bool(c.isthing) for c in self.categories]

  @property
  def train_id_to_category_id(self) -> dict[int, int]:
    return {c.train_id: c.id for c in self.categories}

  @property
  def category_ids(self) -> list[int]:
    """The original category id of each train id (index = train id)."""
    return [c.id for c in self.categories]

  @property
  def category_id_to_train_id(self) -> dict[int, int]:
    return {c.id: c.train_id for c in self.categories}

  @property
  def colors(self) -> list[list[int]]:
    return [list(c.color) for c in self.categories]

  @property
  def names(self) -> list[str]:
    return [c.name for c in self.categories]

  def coco_categories(self) -> list[dict[str, Any]]:
    """The categories in COCO panoptic JSON form (original ids, sorted by id)."""
    return [{"id": c.id, "name": c.name, "isthing": c.isthing, "color": list(c.color),
             "supercategory": c.name} for c in sorted(self.categories, key=lambda c: c.id)]

  # --- construction ---------------------------------------------------------------
  @classmethod
  def from_coco_categories(cls, name: str, coco_categories: list[dict[str, Any]],
                           label_divisor: int, ignore_label: int) -> "DatasetInfo":
    """Train ids are assigned in increasing order of the original category id."""
    ordered = sorted(coco_categories, key=lambda c: int(c["id"]))
    cats = []
    for train_id, c in enumerate(ordered):
      color = c.get("color") or default_color(train_id)
      cats.append(Category(id=int(c["id"]), train_id=train_id, name=str(c.get("name", c["id"])),
                           isthing=int(c.get("isthing", 0)),
                           color=tuple(int(v) for v in color)))
    return cls(name=name, label_divisor=label_divisor, ignore_label=ignore_label,
               categories=cats)

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "num_classes": self.num_classes,
            "label_divisor": self.label_divisor, "ignore_label": self.ignore_label,
            "categories": [c.to_json() for c in self.categories],
            "num_examples": dict(sorted(self.num_examples.items()))}

  @classmethod
  def from_json(cls, obj: dict[str, Any], source: str = "<dict>") -> "DatasetInfo":
    try:
      cats = [Category(id=int(c["id"]), train_id=int(c["train_id"]), name=str(c["name"]),
                       isthing=int(c["isthing"]), color=tuple(int(v) for v in c["color"]))
              for c in obj["categories"]]
      info = cls(name=str(obj.get("name", "")), label_divisor=int(obj["label_divisor"]),
                 ignore_label=int(obj["ignore_label"]), categories=cats,
                 num_examples={k: int(v) for k, v in obj.get("num_examples", {}).items()})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise UserError(f"{source}: malformed dataset info ({e})") from e
    if "num_classes" in obj and int(obj["num_classes"]) != info.num_classes:
      raise UserError(f"{source}: num_classes {obj['num_classes']} != "
                      f"{info.num_classes} categories")
    return info

  @staticmethod
  def resolve_path(path: str) -> str:
    return os.path.join(path, INFO_FILE_NAME) if os.path.isdir(path) else path

  @classmethod
  def load(cls, path: str) -> "DatasetInfo":
    """Reads `dataset_info.json` (the file, or the directory containing it)."""
    path = cls.resolve_path(path)
    try:
      with open(path) as f:
        obj = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      raise UserError(f"{path}: cannot read dataset info "
                      f"({getattr(e, 'strerror', None) or e})") from e
    return cls.from_json(obj, source=path)

  def save(self, path: str) -> str:
    """Writes atomically; `path` may be the output directory. Returns the file path."""
    path = self.resolve_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    obj = self.to_json()
    cats = ",\n  ".join(json.dumps(c) for c in obj.pop("categories"))
    head = json.dumps(obj)[:-1]  # one category per line: readable and diff-friendly
    with open(tmp, "w") as f:
      f.write(f'{head},\n "categories": [\n  {cats}\n ]}}\n')
    os.replace(tmp, path)
    return path

  def same_categories(self, other: "DatasetInfo") -> bool:
    return (self.categories == other.categories and self.label_divisor == other.label_divisor
            and self.ignore_label == other.ignore_label)


def describe(info: DatasetInfo) -> str:
  return (f"{info.num_classes} classes, label divisor {info.label_divisor}, ignore label "
          f"{info.ignore_label}")


def check_agrees(info: DatasetInfo, info_path: str, other_path: str, what: str) -> None:
  """Raises UserError when `other_path` exists, is another file than `info_path` and
  has other categories or label constants. `what` ends in "... were made with"."""
  other_path = DatasetInfo.resolve_path(other_path)
  if (not os.path.isfile(other_path) or os.path.realpath(other_path)
      == os.path.realpath(DatasetInfo.resolve_path(info_path))):
    return
  other = DatasetInfo.load(other_path)
  if not other.same_categories(info):
    mine, theirs = describe(info), describe(other)
    if mine == theirs:
      mine, theirs = "its categories", "other categories"
    raise UserError(f"--dataset_info={info_path}: {mine}, but {what} {theirs} "
                    f"({other_path})")


def as_dataset_info(info_or_path: "DatasetInfo | str") -> DatasetInfo:
  """Accepts a DatasetInfo or a path to dataset_info.json / its directory."""
  if isinstance(info_or_path, DatasetInfo):
    return info_or_path
  return DatasetInfo.load(os.fspath(info_or_path))
