"""Device-dependent defaults: the dtype policy chosen for --mixed_precision."""
import pytest

from trainer import distribution


def test_no_mixed_precision_is_float32_everywhere(monkeypatch):
  monkeypatch.setattr(distribution, "cpu_has_bfloat16", lambda: True)
  for gpu in (False, True):
    monkeypatch.setattr(distribution, "on_gpu", lambda g=gpu: g)
    assert distribution.resolve_precision(False) == "float32"


@pytest.mark.parametrize("gpu,bf16,jit,want", [
    (True, False, True, "mixed_float16"),
    (False, True, False, "mixed_bfloat16"),   # CPU with AVX512-BF16/AMX, no XLA
    (False, True, True, "float32"),           # XLA:CPU and bf16 do not mix
    (False, False, False, "float32"),         # bf16 would be emulated
])
def test_mixed_precision_policy_by_device(monkeypatch, gpu, bf16, jit, want):
  monkeypatch.setattr(distribution, "on_gpu", lambda: gpu)
  monkeypatch.setattr(distribution, "cpu_has_bfloat16", lambda: bf16)
  assert distribution.resolve_precision(True, jit) == want


def test_cpu_flag_detection_reads_cpuinfo(monkeypatch, tmp_path):
  import builtins  # pylint: disable=g-import-not-at-top
  real_open = builtins.open
  for text, want in (("flags : avx512f avx512_bf16 amx_tile", True),
                     ("flags : avx2 fma", False)):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    monkeypatch.setattr(builtins, "open", lambda p, *a, _i=info, **k: real_open(
        _i if p == "/proc/cpuinfo" else p, *a, **k))
    assert distribution.cpu_has_bfloat16() is want
