"""AdamW with kMaX-DeepLab's parameter groups and the warm-up + poly learning rate.

docs/PAPER.md §2/§3: Adam (beta 0.9/0.999, epsilon 1e-7) with decoupled weight decay applied
only to kernels (never to norm scales/offsets or biases), the backbone trained at a
fraction (0.1x) of the learning rate, and a linear warm-up followed by a poly decay
(power 0.9) to zero over the whole run. deeplab2 realises the backbone multiplier with a
second optimizer; here one optimizer holds a per-variable multiplier, decided once from
each Keras 3 variable's `.path`, so one `tf.train.Checkpoint(optimizer=...)` covers both.

Decoupled decay (as deeplab2's AdamWeightDecay): var -= lr_eff * wd * var, then the Adam
step with lr_eff, where lr_eff = schedule(step) * multiplier(var).
"""

import re
from typing import Mapping, Optional, Sequence

import gin
import keras
import tensorflow as tf

# Last path component of the variables that get weight decay (conv/dense kernels and
# explicitly named "weight"s). Norm gammas/betas, biases, embeddings are left alone.
DEFAULT_DECAY_PATTERN = r"(^|/)(kernel|depthwise_kernel|pointwise_kernel|weight)$"
# Safety net: anything inside a norm layer is never decayed, whatever its name.
DEFAULT_NO_DECAY_PATTERN = r"(norm|bn|batch_normalization)[^/]*/[^/]+$"
DEFAULT_BACKBONE_PATTERN = r"(^|/)backbone(/|$)"


@gin.configurable
class WarmupPolyDecay(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step) = base * step / warmup for step < warmup, else base * (1 - step/total)^power.

  As in deeplab2, the poly decay runs over the global step (warm-up included) and reaches
  `end_learning_rate` at `total_steps`; it stays there afterwards.
  """

  def __init__(self, base_learning_rate: float, total_steps: int,
               warmup_steps: int = 0, power: float = 0.9,
               end_learning_rate: float = 0.0):
    super().__init__()
    if total_steps <= 0:
      raise ValueError(f"WarmupPolyDecay: total_steps must be > 0, got {total_steps} "
                       "(set --train_steps)")
    if warmup_steps < 0:
      raise ValueError(f"WarmupPolyDecay: warmup_steps must be >= 0, got {warmup_steps}")
    self.base_learning_rate = float(base_learning_rate)
    self.total_steps = int(total_steps)
    self.warmup_steps = int(warmup_steps)
    self.power = float(power)
    self.end_learning_rate = float(end_learning_rate)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    base = self.base_learning_rate
    fraction = tf.minimum(step, float(self.total_steps)) / float(self.total_steps)
    decayed = ((base - self.end_learning_rate) * tf.pow(1.0 - fraction, self.power)
               + self.end_learning_rate)
    if self.warmup_steps == 0:
      return decayed
    warm = base * step / float(self.warmup_steps)
    return tf.where(step < float(self.warmup_steps), warm, decayed)

  def get_config(self):
    return {"base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "power": self.power, "end_learning_rate": self.end_learning_rate}


def uses_weight_decay(path: str, decay_pattern: str = DEFAULT_DECAY_PATTERN,
                      no_decay_pattern: str = DEFAULT_NO_DECAY_PATTERN) -> bool:
  """Whether the variable at `path` (Keras 3 `variable.path`) gets weight decay."""
  if no_decay_pattern and re.search(no_decay_pattern, path):
    return False
  return re.search(decay_pattern, path) is not None


def _plain_tf_variable(variable) -> bool:
  """A single-device tf.Variable (not a tf.distribute one), float32."""
  return (isinstance(variable, tf.Variable)
          and not isinstance(variable, tf.distribute.DistributedValues)
          and variable.dtype == tf.float32)


class KMaXAdamW(keras.optimizers.Adam):
  """Adam with decoupled weight decay on kernels and a learning-rate multiplier per group.

  Args:
    learning_rate: float or schedule (the rate of the non-backbone variables).
    weight_decay_rate: decoupled weight decay (0.05 in the COCO recipe).
    backbone_multiplier: learning-rate factor of the variables whose path matches
      `backbone_pattern` (0.1 in the recipe; their decay is scaled the same way).
    backbone_pattern, decay_pattern, no_decay_pattern: regexes on `variable.path`.
    lr_multipliers: optional {path regex: factor}; the first matching regex multiplies
      that variable's learning rate (on top of the backbone factor). Not in the paper's
      recipe: short CPU schedules use it to speed up single scalars such as the learned
      mask-logit temperature.
    beta_1, beta_2, epsilon: Adam constants (deeplab2: 0.9, 0.999, 1e-7).
  """

  def __init__(self, learning_rate, weight_decay_rate: float = 0.05,
               backbone_multiplier: float = 0.1,
               backbone_pattern: str = DEFAULT_BACKBONE_PATTERN,
               decay_pattern: str = DEFAULT_DECAY_PATTERN,
               no_decay_pattern: str = DEFAULT_NO_DECAY_PATTERN,
               lr_multipliers: Optional[Mapping[str, float]] = None,
               beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
               name: str = "kmax_adamw", **kwargs):
    super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                     epsilon=epsilon, name=name, **kwargs)
    self.weight_decay_rate = float(weight_decay_rate)
    self.backbone_multiplier = float(backbone_multiplier)
    self.backbone_pattern = backbone_pattern
    self.decay_pattern = decay_pattern
    self.no_decay_pattern = no_decay_pattern
    self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
    self._lr_multipliers = ()
    self._decay_flags = ()

  def build(self, var_list):
    if self.built:
      return
    super().build(var_list)
    multipliers, flags = [], []
    for variable in var_list:
      path = getattr(variable, "path", None) or variable.name
      in_backbone = bool(self.backbone_pattern and re.search(self.backbone_pattern, path))
      factor = self.backbone_multiplier if in_backbone else 1.0
      for pattern, extra in self.lr_multipliers.items():
        if re.search(pattern, path):
          factor *= extra
          break
      multipliers.append(factor)
      flags.append(uses_weight_decay(path, self.decay_pattern, self.no_decay_pattern))
    self._lr_multipliers = tuple(multipliers)
    self._decay_flags = tuple(flags)

  def group_of(self, variable) -> tuple:
    """(learning-rate multiplier, uses weight decay) of a built variable."""
    index = self._get_variable_index(variable)
    return self._lr_multipliers[index], self._decay_flags[index]

  def update_step(self, gradient, variable, learning_rate):
    multiplier, decay = self.group_of(variable)
    lr = tf.cast(learning_rate, variable.dtype) * multiplier
    if decay and self.weight_decay_rate > 0.0:
      self.assign_sub(variable, variable * (lr * self.weight_decay_rate))
    index = self._get_variable_index(variable)
    m, v = self._momentums[index].value, self._velocities[index].value
    if self.amsgrad or not all(_plain_tf_variable(x) for x in (variable, m, v)):
      super().update_step(gradient, variable, lr)
      return
    # TF's fused Adam kernel: the same update as keras.optimizers.Adam.update_step
    # (m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    #  var -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)) in one pass over the
    # variable and its slots instead of ~12 elementwise ops (the optimizer was 0.37 s
    # of a 4 s R50 step on CPU).
    dtype = variable.dtype
    local_step = tf.cast(self.iterations + 1, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.handle, v=v.handle,
        beta1_power=tf.pow(tf.cast(self.beta_1, dtype), local_step),
        beta2_power=tf.pow(tf.cast(self.beta_2, dtype), local_step),
        lr=lr, beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
        epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
        use_locking=False, use_nesterov=False)

  def get_config(self):
    config = super().get_config()
    config.update({"weight_decay_rate": self.weight_decay_rate,
                   "backbone_multiplier": self.backbone_multiplier,
                   "backbone_pattern": self.backbone_pattern,
                   "decay_pattern": self.decay_pattern,
                   "no_decay_pattern": self.no_decay_pattern,
                   "lr_multipliers": dict(self.lr_multipliers)})
    return config


@gin.configurable
def build_optimizer(total_steps: int,
                    base_learning_rate: float = 5e-4,
                    warmup_steps: int = 5000,
                    poly_power: float = 0.9,
                    weight_decay: float = 0.05,
                    backbone_multiplier: float = 0.1,
                    backbone_pattern: Optional[str] = None,
                    lr_multipliers: Optional[Mapping[str, float]] = None,
                    mixed_precision: bool = False) -> keras.optimizers.Optimizer:
  """The kMaX optimizer (COCO recipe defaults; docs/PAPER.md §3).

  `total_steps` comes from --train_steps. `backbone_pattern` defaults to
  DEFAULT_BACKBONE_PATTERN (the trainer passes one built from the model's backbone layer
  name). `lr_multipliers`: see KMaXAdamW. With `mixed_precision` the optimizer is wrapped in a dynamic loss scaler.
  """
  warmup_steps = min(int(warmup_steps), int(total_steps))
  schedule = WarmupPolyDecay(base_learning_rate, total_steps, warmup_steps, poly_power)
  optimizer = KMaXAdamW(schedule, weight_decay_rate=weight_decay,
                        backbone_multiplier=backbone_multiplier,
                        backbone_pattern=backbone_pattern or DEFAULT_BACKBONE_PATTERN,
                        lr_multipliers=lr_multipliers)
  if mixed_precision:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def schedule_of(optimizer):
  """The learning-rate schedule (or constant) of a (possibly loss-scaled) optimizer."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  return inner._learning_rate  # pylint: disable=protected-access


def current_learning_rate(optimizer, step=None) -> float:
  """The base (non-backbone) learning rate at `step` (default: the optimizer's step)."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  lr = schedule_of(optimizer)
  if step is None:
    step = inner.iterations
  if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
    return float(lr(step))
  return float(keras.ops.convert_to_numpy(lr))


def trainable_variables_report(optimizer, variables: Sequence) -> list:
  """[(path, lr multiplier, decayed)] for logging which group each variable is in."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  return [(v.path, *inner.group_of(v)) for v in variables]
