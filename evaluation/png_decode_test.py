"""The fast PNG->id decoder against Pillow: every row filter, RGB/RGBA, fallbacks."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from evaluation import png_decode
from evaluation import pq_files

pytestmark = pytest.mark.skipif(not png_decode.AVAILABLE, reason="numba not installed")


def _paeth(a, b, c):
  a, b, c = (x.astype(np.int32) for x in (a, b, c))
  pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
  return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(pixels, filters):
  """PNG-filters uint8 [H, W, C] rows with the given filter type per row."""
  h, w, bpp = pixels.shape
  rows = pixels.reshape(h, w * bpp).astype(np.int32)
  out = []
  for y in range(h):
    x = rows[y]
    up = rows[y - 1] if y else np.zeros_like(x)
    left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
    upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
    pred = [np.zeros_like(x), left, up, (left + up) // 2, _paeth(left, up, upleft)]
    out.append(bytes([filters[y]]) + ((x - pred[filters[y]]) % 256).astype(np.uint8)
               .tobytes())
  return b"".join(out)


def _chunk(ctype, data):
  return (struct.pack(">I", len(data)) + ctype + data
          + struct.pack(">I", zlib.crc32(ctype + data)))


def _png(pixels, filters, color=None, depth=8, interlace=0, idat_parts=3,
         raw=None, level=6):
  """PNG bytes of uint8 [H, W, C] pixels, split over several IDAT chunks."""
  h, w, channels = pixels.shape
  color = {3: 2, 4: 6}[channels] if color is None else color
  stream = zlib.compress(_filter_rows(pixels, filters) if raw is None else raw, level)
  cut = np.linspace(0, len(stream), idat_parts + 1).astype(int)
  ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace)
  return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
          + b"".join(_chunk(b"IDAT", stream[a:b]) for a, b in zip(cut[:-1], cut[1:]))
          + _chunk(b"IEND", b""))


def _pillow_ids(data):
  arr = np.asarray(Image.open(io.BytesIO(data))).astype(np.uint32)
  return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]


def _images(rng, channels):
  noise = rng.integers(0, 256, size=(24, 37, channels), dtype=np.uint8)
  blocks = np.zeros((24, 37, channels), np.uint8)
  for _ in range(12):  # piecewise constant, like segment maps (flat rows above)
    y, x = rng.integers(0, 24), rng.integers(0, 37)
    blocks[y:y + rng.integers(1, 12), x:x + rng.integers(1, 20)] = rng.integers(
        0, 256, size=channels)
  return noise, blocks


@pytest.mark.parametrize("channels", [3, 4])
def test_every_filter_type_matches_pillow(channels):
  rng = np.random.default_rng(channels)
  for pixels in _images(rng, channels):
    h = pixels.shape[0]
    for filters in ([t for t in range(5) for _ in range(h)][:h],  # runs of each type
                    [y % 5 for y in range(h)],  # every type after every type
                    rng.integers(0, 5, size=h).tolist(),
                    *([first] + [4] * (h - 1) for first in range(5))):  # row 0: any type
      data = _png(pixels, filters)
      ids = png_decode.decode_ids(data)
      assert ids is not None and ids.dtype == np.uint32
      np.testing.assert_array_equal(ids, _pillow_ids(data))


def test_reuses_a_fitting_buffer_and_matches_pillow_on_a_real_writer_png(tmp_path):
  from evaluation import writers  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 1 << 24, size=(33, 50)).astype(np.uint32)
  ids[10:30, 5:40] = 123456  # flat region: Pillow's adaptive filter picks Up/Sub/Paeth
  writers.write_id_png(str(tmp_path / "a.png"), ids)
  data = (tmp_path / "a.png").read_bytes()
  buf = np.empty((33, 50), np.uint32)
  assert png_decode.decode_ids(data, buf) is buf
  np.testing.assert_array_equal(buf, ids)
  other = png_decode.decode_ids(data, np.empty((3, 3), np.uint32))  # wrong size: new
  np.testing.assert_array_equal(other, ids)


def test_formats_left_to_pillow_read_the_same_as_panopticapi(tmp_path):
  rng = np.random.default_rng(1)
  values = rng.integers(0, 256, size=(9, 11)).astype(np.uint8)
  wide = rng.integers(0, 1 << 16, size=(9, 11)).astype(np.uint16)
  cases = {
      "gray.png": Image.fromarray(values),  # L
      "palette.png": Image.fromarray(values).convert("P"),  # P: ids are the indices
      "gray16.png": Image.fromarray(wide),  # I;16
  }
  for name, img in cases.items():
    img.save(tmp_path / name)
    assert png_decode.decode_ids((tmp_path / name).read_bytes()) is None, name
    expected = np.asarray(Image.open(tmp_path / name)).astype(np.uint32)
    np.testing.assert_array_equal(pq_files.read_id_png(str(tmp_path / name)), expected)
  rgb16 = rng.integers(0, 256, size=(5, 6, 6), dtype=np.uint8)  # 16-bit RGB rows
  data = _png(rgb16, [0] * 5, color=2, depth=16)
  assert png_decode.decode_ids(data) is None
  (tmp_path / "rgb16.png").write_bytes(data)
  np.testing.assert_array_equal(pq_files.read_id_png(str(tmp_path / "rgb16.png")),
                                _pillow_ids(data))
  pixels = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
  assert png_decode.decode_ids(_png(pixels, [0] * 5, interlace=1)) is None


def test_damaged_files_fall_back_to_pillow_and_its_errors(tmp_path):
  rng = np.random.default_rng(2)
  pixels = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
  good = _png(pixels, [4] * 8, idat_parts=1)
  bad_filter = _png(pixels, [1] * 8, raw=_filter_rows(pixels, [1] * 7 + [0])[:-31]
                    + b"\x05" + bytes(30))
  truncated = good[:60] + good[-12:]
  bad_ihdr_crc = good[:29] + bytes([good[29] ^ 1]) + good[30:]
  idat = good.index(b"IDAT")
  end = idat + 4 + struct.unpack(">I", good[idat - 4:idat])[0]
  bad_adler = good[:end - 1] + bytes([good[end - 1] ^ 1]) + good[end:]  # zlib checksum
  for name, data in (("filter", bad_filter), ("truncated", truncated),
                     ("crc", bad_ihdr_crc), ("adler", bad_adler),
                     ("not a png", b"not a png")):
    assert png_decode.decode_ids(data) is None, name
    (tmp_path / "x.png").write_bytes(data)
    with pytest.raises(pq_files.PanopticFormatError, match="cannot read panoptic PNG"):
      pq_files.read_id_png(str(tmp_path / "x.png"))
