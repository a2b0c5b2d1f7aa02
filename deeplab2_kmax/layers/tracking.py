"""Checkpoint tracking of sub-layers kept in Python lists, tuples or dicts.

Keras 3 wraps list/dict attributes of a layer in its own tracked collections, which
`tf.train.Checkpoint`'s dependency graph does not follow: a layer that keeps blocks in
`self.stages = [[...], ...]` saved on its own (e.g. a backbone checkpoint
`tf.train.Checkpoint(backbone=backbone)` for ImageNet weights) silently misses every
variable of those blocks. `TrackListHeldLayers` fixes it for the layer that holds the
lists: mix it in *before* `keras.layers.Layer` in every layer class that keeps
sub-layers in collections. It adds checkpoint edges named
`listed/<attribute>/<index or key>[/<index or key>...]` to the layers found in those
collections (positions and attribute names only, no auto-generated layer names); the
layers themselves add their own edges, so any sub-tree is complete on its own.
Only `save_type="checkpoint"` is affected (SavedModel export is left unchanged).
"""

import keras

# Keras' registry of sub-layers and TF's dependency tables: every layer in them is
# also reachable through the attribute that holds it.
_KERAS_INTERNAL_LISTS = ("_layers",)
_TF_INTERNAL_PREFIX = "_self_"


def direct_list_held_layers(layer: keras.layers.Layer) -> dict:
  """{"<attribute>/<index or key>/...": sub_layer} for layers held in collections.

  Only `layer`'s own attributes are searched (nested lists/tuples/dicts included), not
  the sub-layers' attributes: each layer class with the mixin adds its own edges.
  """
  found = {}

  def visit(value, prefix):
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
      if isinstance(item, keras.layers.Layer):
        found.setdefault(f"{prefix}/{key}", item)
      elif isinstance(item, (list, tuple, dict)):
        visit(item, f"{prefix}/{key}")

  for attr, value in sorted(vars(layer).items()):
    if attr in _KERAS_INTERNAL_LISTS or attr.startswith(_TF_INTERNAL_PREFIX):
      continue
    if isinstance(value, (list, tuple, dict)):
      visit(value, attr)
  return found


class TrackListHeldLayers:
  """Mixin: checkpoint the sub-layers a layer keeps in lists/tuples/dicts.

  Use as `class Foo(TrackListHeldLayers, keras.layers.Layer)`.
  """

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    children = super()._trackable_children(save_type, **kwargs)
    if save_type == "checkpoint":
      for key, layer in direct_list_held_layers(self).items():
        children.setdefault(f"listed/{key}", layer)
    return children
