"""Fast decoding of 8-bit RGB/RGBA PNGs straight into uint32 segment ids.

COCO panoptic PNGs encode a segment id as R + 256 G + 256^2 B. Pillow decodes them
with the system zlib (inflate ~2.7 ms for a 1024x512 Cityscapes PNG) and scalar PNG row
filters (~1.5 ms); here the zlib stream is inflated with zlib-ng (~0.2 ms) and the rows
are unfiltered by a compiled numba kernel that writes the ids directly (no RGB array,
no RGB->id arithmetic). Without numba `decode_ids` returns None and the caller uses
Pillow; without zlib-ng the standard zlib inflates.

The fast path only takes what it fully understands (8-bit, colour type 2 or 6,
non-interlaced, every filter type 0-4, any IDAT split); anything else, and anything
unusual (bad CRC before the image data, short or corrupt zlib data, unknown filter
type, APNG, a PLTE chunk), returns None so that Pillow decodes it or raises its own error. The result
is bit-identical to ``np.asarray(Image.open(path))`` turned into ids.
"""

import struct
import zlib
from typing import Optional

import numpy as np

try:  # zlib-ng inflates these highly compressible PNGs ~15x faster than zlib 1.2.
  from zlib_ng import zlib_ng as _inflater  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - requirements.txt installs it
  _inflater = zlib

try:
  import numba  # pylint: disable=g-import-not-at-top
  from numba.cpython.unsafe.numbers import trailing_zeros  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover - requirements.txt installs it
  numba = None

AVAILABLE = numba is not None
_INFLATE_ERRORS = (zlib.error, getattr(_inflater, "error", zlib.error))
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def jit(fn=None, inline="never"):
  """Compiles with numba (GIL released, cached on disk); identity without numba.

  inline="always" inlines a helper into its callers at numba IR level: array
  arguments then cost no call and no atomic reference counting per call.
  """
  if fn is None:
    return lambda f: jit(f, inline)
  if numba is None:
    return fn
  try:
    return numba.njit(nogil=True, cache=True, inline=inline)(fn)
  except RuntimeError:  # no writable cache location: compile in each process
    return numba.njit(nogil=True, inline=inline)(fn)


_LOW7 = np.uint32(0x7F7F7F)
_HIGH = np.uint32(0x808080)


@jit(inline="always")
def _add_bytes(x, y):  # pragma: no cover - compiled
  """Byte-wise x + y mod 256 of the three low bytes (no carry between bytes)."""
  return ((x & _LOW7) + (y & _LOW7)) ^ ((x ^ y) & _HIGH)


@jit(inline="always")
def _paeth_bytes(a, b, c):  # pragma: no cover - compiled
  """PNG's Paeth predictor applied to each of the three low bytes."""
  pred = np.uint32(0)
  for shift in (0, 8, 16):
    ai = np.int32((a >> shift) & 255)
    bi = np.int32((b >> shift) & 255)
    ci = np.int32((c >> shift) & 255)
    pa = abs(bi - ci)
    pb = abs(ai - ci)
    pc = abs(ai + bi - 2 * ci)
    if pa <= pb and pa <= pc:
      p = ai
    elif pb <= pc:
      p = bi
    else:
      p = ci
    pred |= np.uint32(p) << shift
  return pred


@jit(inline="always")
def _avg_bytes(a, b):  # pragma: no cover - compiled
  """PNG's Average predictor floor((a + b) / 2) of each of the three low bytes."""
  return (((a & b) & np.uint32(0xFFFFFF))
          + (((a ^ b) >> 1) & np.uint32(0x7F7F7F)))


@jit(inline="always")
def _next_nonzero(raw, words, i, end):  # pragma: no cover - compiled
  """The first index k in [i, end) with raw[k] != 0 (end if none), 8 bytes a step."""
  k = i >> 3
  num_words = words.size
  if k < num_words:
    w = words[k] >> np.uint64((i & 7) * 8)  # little-endian: byte i is the low byte
    if w != 0:
      return min(i + (np.int64(trailing_zeros(w)) >> 3), end)
    k += 1
    while (k + 4 <= num_words and k * 8 + 32 <= end
           and (words[k] | words[k + 1] | words[k + 2] | words[k + 3]) == 0):
      k += 4
    while k < num_words and k * 8 < end:
      w = words[k]
      if w != 0:
        return min(k * 8 + (np.int64(trailing_zeros(w)) >> 3), end)
      k += 1
    i = max(i, k * 8)
  while i < end:  # bytes past the last whole word
    if raw[i] != 0:
      return i
    i += 1
  return end


@jit
def _unfilter_to_ids(raw, words, height, width, bpp, out):  # pragma: no cover - compiled
  """Undoes the PNG row filters of `raw` and writes R + 256 G + 256^2 B into `out`.

  raw: uint8 [>= height * (1 + width * bpp)] inflated scanlines, `words` the same
  memory as uint64 (8-byte aligned); out: uint32 [height, width]. Works on whole pixels
  (three bytes in a uint32, byte-wise arithmetic; an alpha byte never influences R, G,
  B). Segment maps leave ~98% of the filtered pixels zero: runs of zero pixels are
  found 8 bytes at a time and filled without per-byte arithmetic. Returns -1 on
  success or the index of the first row with an unknown filter type.
  """
  stride = 1 + width * bpp
  zero = np.uint32(0)
  zeros = np.zeros(width, np.uint32)
  for y in range(height):
    off = y * stride + 1
    end = off + width * bpp
    ft = raw[off - 1]
    if ft > 4:
      return y
    row = out[y]
    prev = out[y - 1] if y > 0 else zeros
    x = 0
    while x < width:
      # Pixels x .. stop - 1 have zero residuals; pixel `stop` (if any) does not.
      nonzero = _next_nonzero(raw, words, off + x * bpp, end) - off
      stop = nonzero // 3 if bpp == 3 else nonzero >> 2  # constant divisors: no idiv
      left = row[x - 1] if x > 0 else zero
      if ft == 0 or ft == 1:
        fill = zero if ft == 0 else left
        if stop - x < 32:  # short runs: a plain loop (a slice view costs atomics)
          for i in range(x, stop):
            row[i] = fill
        else:
          row[x:stop] = fill
      elif ft == 2:
        if stop - x < 32:
          for i in range(x, stop):
            row[i] = prev[i]
        else:
          row[x:stop] = prev[x:stop]
      elif ft == 3:
        for i in range(x, stop):
          left = _avg_bytes(left, prev[i])
          row[i] = left
      else:
        upleft = prev[x - 1] if x > 0 else zero
        for i in range(x, stop):
          up = prev[i]
          if up != upleft:  # else each byte has b == c: the predictor is a
            left = _paeth_bytes(left, up, upleft)
          row[i] = left
          upleft = up
      if stop >= width:
        break
      j = off + stop * bpp
      s = (np.uint32(raw[j]) | (np.uint32(raw[j + 1]) << 8)
           | (np.uint32(raw[j + 2]) << 16))
      left = row[stop - 1] if stop > 0 else zero
      up = prev[stop]
      if ft == 0:
        pred = zero
      elif ft == 1:
        pred = left
      elif ft == 2:
        pred = up
      elif ft == 3:
        pred = _avg_bytes(left, up)
      else:
        pred = _paeth_bytes(left, up, prev[stop - 1] if stop > 0 else zero)
      row[stop] = _add_bytes(s, pred)
      x = stop + 1
  return -1


def _chunks(data: bytes):
  """Yields (type, start, length) of each chunk; raises ValueError when malformed."""
  pos = len(_SIGNATURE)
  while pos + 12 <= len(data):
    length, ctype = struct.unpack_from(">I4s", data, pos)
    start = pos + 8
    if start + length + 4 > len(data):
      raise ValueError("chunk overruns the file")
    yield ctype, start, length
    if ctype == b"IEND":
      return
    pos = start + length + 4
  raise ValueError("no IEND chunk")


def _parse(data: bytes):
  """(width, height, bytes per pixel, zlib stream) or None when not for the fast path."""
  if not data.startswith(_SIGNATURE):
    return None
  header = None
  idat = []
  idat_done = False
  try:
    for ctype, start, length in _chunks(data):
      if ctype == b"IDAT":
        if idat_done or header is None:
          return None
        idat.append(data[start:start + length])
        continue
      if idat:
        idat_done = True
      elif zlib.crc32(data[start - 4:start + length]) != struct.unpack_from(
          ">I", data, start + length)[0]:
        return None  # Pillow checks these CRCs and raises
      if ctype == b"IHDR":
        if header is not None or length != 13:
          return None
        header = struct.unpack_from(">IIBBBBB", data, start)
      elif ctype in (b"acTL", b"PLTE"):
        return None
  except (ValueError, struct.error):
    return None
  if header is None or not idat:
    return None
  width, height, depth, color, compression, filter_method, interlace = header
  if (depth != 8 or color not in (2, 6) or compression or filter_method or interlace
      or width == 0 or height == 0):
    return None
  return width, height, 3 if color == 2 else 4, b"".join(idat)


def _aligned(data: bytes) -> np.ndarray:
  """Read-only uint8 view of `data`, copied if not 8-byte aligned (for a uint64 view)."""
  raw = np.frombuffer(data, np.uint8)
  if raw.ctypes.data % 8:
    raw = raw.copy()
    raw.flags.writeable = False
  return raw


_WARM = []


def warm_up():
  """Compiles (or loads from the on-disk cache) the kernels once, in this thread."""
  if numba is None or _WARM:
    return
  raw = _aligned(b"\x01" + bytes(7))  # the very types decode_ids passes (read-only)
  _unfilter_to_ids(raw, raw.view(np.uint64), 1, 1, 3, np.empty((1, 1), np.uint32))
  _WARM.append(True)


def decode_ids(data: bytes, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
  """PNG file bytes -> uint32 [H, W] ids (R + 256 G + 256^2 B), or None.

  None: numba is missing or the file is not one the fast path takes (see module doc);
  decode it with Pillow then. `out`: an optional reusable buffer (used if it fits).
  """
  if numba is None:
    return None
  parsed = _parse(data)
  if parsed is None:
    return None
  width, height, bpp, stream = parsed
  size = height * (1 + width * bpp)
  try:
    raw = _inflater.decompress(stream, bufsize=size + 1)
  except _INFLATE_ERRORS:
    return None  # Pillow may still read the rows (it stops before the checksum)
  if len(raw) < size:
    return None
  if (out is None or out.shape != (height, width) or out.dtype != np.uint32
      or not out.flags.writeable or not out.flags.c_contiguous):
    out = np.empty((height, width), np.uint32)
  raw = _aligned(raw)
  words = raw[:len(raw) // 8 * 8].view(np.uint64)
  if _unfilter_to_ids(raw, words, height, width, bpp, out) >= 0:
    return None
  return out
