"""One dtype policy for a layer and every sub-layer under it.

Keras 3 gives a layer the policy passed as `dtype=` or, without one, the global policy
at the moment it is constructed; a parent's policy does not reach the sub-layers it
creates. `share_dtype_policy(layer)` sets `layer`'s policy on every sub-layer below it.
`KMaXDeepLab` calls it once its sub-layers exist, and the layers that create sub-layers
in `build()` (where the input channels decide whether a projection is needed) call it
there before building them. So a `mixed_bfloat16` model computes in bfloat16 throughout
and never touches the global policy.
"""

import keras


def share_dtype_policy(layer: keras.layers.Layer) -> None:
  """Gives every sub-layer below `layer` (nested, lists included) `layer`'s policy."""
  policy = layer.dtype_policy
  for sub_layer in layer._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if sub_layer.dtype_policy.name != policy.name:
      sub_layer.dtype_policy = policy
