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


def _attributes(layer):
  """(name, value) of a layer's own attributes, sorted, Keras/TF internals skipped."""
  for attr, value in sorted(vars(layer).items()):
    if attr not in _KERAS_INTERNAL_LISTS and not attr.startswith(_TF_INTERNAL_PREFIX):
      yield attr, value


def _collection_layers(value, prefix: str):
  """(`prefix/index or key[/...]`, layer) of the layers in a (nested) list/tuple/dict."""
  items = value.items() if isinstance(value, dict) else enumerate(value)
  for key, item in items:
    if isinstance(item, keras.layers.Layer):
      yield f"{prefix}/{key}", item
    elif isinstance(item, (list, tuple, dict)):
      yield from _collection_layers(item, f"{prefix}/{key}")


def direct_list_held_layers(layer: keras.layers.Layer) -> dict:
  """{"<attribute>/<index or key>/...": sub_layer} for layers held in collections.

  Only `layer`'s own attributes are searched (nested lists/tuples/dicts included), not
  the sub-layers' attributes: each layer class with the mixin adds its own edges.
  """
  found = {}
  for attr, value in _attributes(layer):
    if isinstance(value, (list, tuple, dict)):
      for key, item in _collection_layers(value, attr):
        found.setdefault(key, item)
  return found


def list_held_layers(root: keras.layers.Layer) -> dict:
  """Like `direct_list_held_layers`, for the whole tree under `root`: every layer that
  is reachable only through a collection somewhere below it, keyed by the attribute
  path (`"<attr>/<attr>/<index>..."`; attribute names and positions only)."""
  found, seen = {}, set()

  def visit(layer, prefix):
    if id(layer) in seen:
      return
    seen.add(id(layer))
    for attr, value in _attributes(layer):
      if isinstance(value, keras.layers.Layer):
        visit(value, f"{prefix}{attr}/")
      elif isinstance(value, (list, tuple, dict)):
        for key, item in _collection_layers(value, f"{prefix}{attr}"):
          found.setdefault(key, item)
          visit(item, f"{key}/")

  visit(root, "")
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
