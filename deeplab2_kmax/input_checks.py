"""In-graph checks of serving inputs that name what is wrong (used by inference.py).

`header_size` reads an encoded image's size from its header without decoding it (so a
size limit protects the decoder too); `guarded` runs a computation only when a check
holds and otherwise raises InvalidArgumentError with a message built only on failure.
"""
import tensorflow as tf


def _bytes_at(data, offset: int, length: int, little_endian: bool):
  """Unsigned integer of `length` bytes at `offset` of a scalar string (int64)."""
  raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, length), tf.uint8),
                tf.int64)
  weights = tf.constant([256 ** k for k in range(length)], tf.int64)
  return tf.reduce_sum(raw * (weights if little_endian else weights[::-1]))


def header_size(data: tf.Tensor) -> tf.Tensor:
  """int64 [2] (height, width) from an encoded image's header, without decoding it;
  (-1, -1) for formats other than JPEG, PNG, GIF and BMP. Malformed headers raise."""
  magic = tf.strings.substr(data, 0, 4)
  two = tf.strings.substr(data, 0, 2)
  unknown = lambda: tf.constant([-1, -1], tf.int64)
  bmp_height = lambda: tf.abs(tf.bitcast(tf.cast(_bytes_at(data, 22, 4, True), tf.uint32),
                                         tf.int32))
  return tf.case([
      (tf.equal(two, b"\xff\xd8"),
       lambda: tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64)),
      (tf.equal(magic, b"\x89PNG"),
       lambda: tf.stack([_bytes_at(data, 20, 4, False), _bytes_at(data, 16, 4, False)])),
      (tf.equal(magic, b"GIF8"),
       lambda: tf.stack([_bytes_at(data, 8, 2, True), _bytes_at(data, 6, 2, True)])),
      (tf.equal(two, b"BM"),
       lambda: tf.stack([tf.cast(bmp_height(), tf.int64), _bytes_at(data, 18, 4, True)])),
  ], default=unknown, exclusive=False)


def guarded(ok: tf.Tensor, message_fn, fn, refused_fn):
  """`fn()` when `ok`; otherwise InvalidArgumentError with the string `message_fn()` (built
  only then), and nothing of `fn` runs, so no later op can fail first with a less clear
  message. `refused_fn()` gives the false branch the structure of `fn()`'s result."""
  def refuse():
    with tf.control_dependencies([tf.debugging.Assert(ok, [message_fn()])]):
      return tf.nest.map_structure(tf.identity, refused_fn())
  return tf.cond(ok, fn, refuse)
