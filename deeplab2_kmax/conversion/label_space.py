"""deeplab2's label conventions, and how its class channels map to our train ids.

Our convention (docs/DESIGN.md): train ids 0..C-1 in the dataset's category order, class
logits [.., C + 1] with void last, semantic logits [.., C], panoptic = train_id *
label_divisor + instance, void = ignore_label * label_divisor.

deeplab2 numbers the classes of each dataset with "semantic ids" and, on COCO and
ADE20K, reserves id 0 for void (`ignore_label` 0: COCO ids 1..133, ADE20K 1..150); on
Cityscapes the ids are the 19 train ids and void is 255. Its auxiliary semantic head has
one channel per semantic id (134 on COCO, void included; 19 on Cityscapes). Its class
head lists the *thing* ids first and then the stuff ids, plus void last
(`thing_class_ids + stuff_class_ids`), so its channel k is not our train id k on
Cityscapes (channel 0 is "person") nor on ADE20K; on COCO the things come first in
category-id order anyway. Its post-processed panoptic map is semantic_id *
label_divisor + instance, with label divisors 256 (COCO) and 1000 (Cityscapes, ADE20K).

`LabelSpace` holds one dataset's deeplab2 numbering next to ours and converts weights
(channel permutations) and outputs (panoptic maps, class logits) between the two.
"""

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabelSpace:
  """One dataset in deeplab2's numbering.

  Attributes:
    name: "coco", "cityscapes" or "ade20k".
    semantic_ids: deeplab2 semantic id of each of our train ids (length C).
    thing_train_ids: our train ids of the thing classes.
    ignore_label: deeplab2's void semantic id.
    label_divisor: deeplab2's panoptic label divisor.
    semantic_channels: channels of deeplab2's auxiliary semantic head.
  """
  name: str
  semantic_ids: Tuple[int, ...]
  thing_train_ids: Tuple[int, ...]
  ignore_label: int
  label_divisor: int
  semantic_channels: int

  @property
  def num_classes(self) -> int:
    return len(self.semantic_ids)

  def class_channel_ids(self) -> List[int]:
    """deeplab2 semantic id of each class-head channel (void excluded): things, then
    stuff, each in increasing id order (deeplab2 `get_stuff_class_ids`)."""
    things = sorted(self.semantic_ids[t] for t in self.thing_train_ids)
    stuff = sorted(set(self.semantic_ids) - set(things))
    return things + stuff

  def class_permutation(self) -> np.ndarray:
    """index[t] = the deeplab2 class-head channel of our channel t (C + 1 entries, void
    last on both sides): `ours = theirs[..., index]`."""
    position = {s: k for k, s in enumerate(self.class_channel_ids())}
    return np.array([position[s] for s in self.semantic_ids] + [self.num_classes])

  def semantic_channel_index(self) -> np.ndarray:
    """index[t] = deeplab2's semantic-head channel of our train id t (its void channel,
    if any, has no counterpart: our semantic head has C channels)."""
    return np.array(self.semantic_ids)

  def class_logits_to_deeplab2(self, logits: np.ndarray) -> np.ndarray:
    """Our [.., C + 1] class logits in deeplab2's channel order."""
    out = np.empty_like(logits)
    out[..., self.class_permutation()] = logits
    return out

  def panoptic_to_deeplab2(self, panoptic: np.ndarray, label_divisor: int,
                           ignore_label: int) -> np.ndarray:
    """Our panoptic map (train_id * label_divisor + instance) in deeplab2's encoding."""
    panoptic = np.asarray(panoptic, np.int64)
    semantic, instance = panoptic // label_divisor, panoptic % label_divisor
    lookup = np.full(max(ignore_label, self.num_classes) + 1, self.ignore_label, np.int64)
    lookup[:self.num_classes] = self.semantic_ids
    theirs = lookup[np.clip(semantic, 0, len(lookup) - 1)]
    void = (semantic == ignore_label) | (semantic >= self.num_classes)
    theirs = np.where(void, self.ignore_label, theirs)
    return (theirs * self.label_divisor + np.where(void, 0, instance)).astype(np.int32)


def coco(num_classes: int = 133, num_things: int = 80) -> LabelSpace:
  """COCO panoptic: train id t is deeplab2 id t + 1 (both in category-id order)."""
  return LabelSpace("coco", tuple(range(1, num_classes + 1)), tuple(range(num_things)),
                    ignore_label=0, label_divisor=256, semantic_channels=num_classes + 1)


def cityscapes() -> LabelSpace:
  """Cityscapes: deeplab2's ids are the 19 train ids; things are 11..18."""
  return LabelSpace("cityscapes", tuple(range(19)), tuple(range(11, 19)),
                    ignore_label=255, label_divisor=1000, semantic_channels=19)


def ade20k(thing_train_ids: Sequence[int], num_classes: int = 150) -> LabelSpace:
  """ADE20K panoptic: train id t is deeplab2 id t + 1 (the ADE20K-150 order)."""
  return LabelSpace("ade20k", tuple(range(1, num_classes + 1)),
                    tuple(int(t) for t in thing_train_ids), ignore_label=0,
                    label_divisor=1000, semantic_channels=num_classes + 1)


def for_dataset(name: str, num_classes: int, thing_train_ids: Sequence[int]) -> LabelSpace:
  """The deeplab2 numbering of a dataset of ours, by its dataset_info name (or, for a
  dataset of another name, by its class count: 133 COCO, 19 Cityscapes, 150 ADE20K)."""
  key = name.lower()
  things = tuple(int(t) for t in thing_train_ids)
  if "cityscapes" in key or (num_classes == 19 and "coco" not in key):
    space = cityscapes()
  elif "ade20k" in key or (num_classes == 150 and "coco" not in key):
    space = ade20k(things, num_classes)
  else:  # deeplab2 treats other datasets as COCO-like (void = 0)
    space = coco(num_classes, 0)
    space = dataclasses.replace(space, thing_train_ids=things)
  if space.num_classes != num_classes:
    raise ValueError(f"dataset {name!r} has {num_classes} classes; deeplab2's "
                     f"{space.name} has {space.num_classes}")
  if tuple(sorted(things)) != tuple(sorted(space.thing_train_ids)):
    space = dataclasses.replace(space, thing_train_ids=things)
  return space
