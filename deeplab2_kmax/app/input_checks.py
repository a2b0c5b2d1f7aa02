"""In-graph checks of serving inputs that name what is wrong (used by inference.py).

`header_size` reads an encoded image's size from its header without decoding it (so a
size limit protects the decoder too), `inspect_encoded` finds the images of a batch that
do not decode or are too large without raising; `guarded` runs a computation only when a check
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


def inspect_encoded(image_bytes, count, too_large, decode):
  """(decodes [count] bool, sizes [count, 2] int64, too large [count] bool) of a batch of
  encoded images. `too_large(size)` is checked on the header's size first, so a large
  image is never decoded; `decode(bytes)` gives the decoded size otherwise."""
  def inspect(i):
    data = image_bytes[i]
    header = header_size(data)
    large = too_large(header)
    size = tf.cond(large, lambda: header,
                   lambda: tf.shape(decode(data), out_type=tf.int64)[:2])
    return i, size, tf.logical_or(large, too_large(size))

  def collect(state, element):
    index = tf.reshape(element[0], [1, 1])
    return tuple(tf.tensor_scatter_nd_update(s, index, v[tf.newaxis])
                 for s, v in zip(state, (tf.constant(True),) + element[1:]))

  # ignore_errors drops the elements that fail to decode: their index stays not ok.
  return tf.data.Dataset.range(tf.cast(count, tf.int64)).map(
      inspect).ignore_errors().reduce(
          (tf.zeros([count], tf.bool), tf.zeros([count, 2], tf.int64),
           tf.zeros([count], tf.bool)), collect)
