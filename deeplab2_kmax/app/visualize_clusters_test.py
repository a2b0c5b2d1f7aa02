"""Tests for deeplab2_kmax/app/visualize_clusters.py."""
import numpy as np
import pytest
from PIL import Image

from deeplab2_kmax.app.export_test import TINY_GIN, _info, run_cli, write_tiny_checkpoint
from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app import visualize_clusters
from deeplab2_kmax.app.predictor_test import D, IGNORE, permissive_merger, random_image, tiny_model


def test_cluster_maps_cover_only_the_image():
  predictor = predictor_lib.PanopticPredictor(tiny_model(), permissive_merger(), D, IGNORE)
  image = random_image(40, 70)
  maps, strides, num_clusters = visualize_clusters.cluster_maps(predictor, image)
  # The stand-in's two "layers" sit on stride-8 and stride-4 grids of the 65x97 input.
  assert strides == [8, 4] and num_clusters == 6
  assert [m.shape for m in maps] == [(6, 10), (11, 19)]
  outputs, _, _ = predictor.run_model(image)
  np.testing.assert_array_equal(maps[1], outputs["cluster_assignments"][1][0, :11, :19])


def test_real_model_figure(tmp_path):
  """The real decoder: one assignment map per k-means layer at strides 32/16/8."""
  import gin
  from deeplab2_kmax import backbones  # noqa: F401  (gin configurables)
  from deeplab2_kmax.model import build_model

  gin_path = tmp_path / "tiny.gin"
  gin_path.write_text(TINY_GIN)
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(gin_path)], [], skip_unknown=True)
  model = build_model(num_classes=3)
  merger = permissive_merger()
  gin.clear_config()
  predictor = predictor_lib.PanopticPredictor(model, merger, D, IGNORE)
  image = random_image(50, 70, seed=4)
  maps, strides, num_clusters = visualize_clusters.cluster_maps(predictor, image)
  assert strides == [32, 16, 8] and num_clusters == 16
  assert [m.shape for m in maps] == [(3, 4), (5, 6), (8, 10)]
  assert all(m.min() >= 0 and m.max() < 16 for m in maps)
  out = tmp_path / "fig" / "clusters.png"
  visualize_clusters.draw(predictor, _info(), image, str(out))
  with Image.open(out) as png:
    assert png.format == "PNG" and png.size[0] >= 600


@pytest.mark.slow  # restores a real tiny checkpoint through the CLI: ~20 s on 2 cores
def test_cli(tmp_path):
  gin_path, prefix, info_path = write_tiny_checkpoint(tmp_path)
  image_path = tmp_path / "photo.jpg"
  Image.fromarray(random_image(60, 45)).save(image_path)
  # --dataset_info defaults to dataset_info.json beside the checkpoint.
  out = run_cli(visualize_clusters, [f"--gin_file={gin_path}", f"--checkpoint={prefix}",
                                     f"--image={image_path}",
                                     f"--output={tmp_path / 'c.png'}"])
  with Image.open(out) as png:
    assert png.format == "PNG"


def test_cli_errors(tmp_path):
  with pytest.raises(ValueError, match="--image=.*no such file"):
    run_cli(visualize_clusters, [f"--image={tmp_path / 'x.jpg'}", "--output=o.png"])
  with pytest.raises(ValueError, match="--dataset_info: required"):
    visualize_clusters.default_dataset_info(str(tmp_path / "ckpt-1"))
