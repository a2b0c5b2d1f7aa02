"""Tests for tools/serving_request.py.

No tensorflow_model_server can be installed here, so the requests are checked against
the exported SavedModel itself: the request's signature and input names must be the
SavedModel's, and feeding the request's payload (as TF Serving decodes it: base64 ->
bytes, instances stacked into a batch) to that signature must reproduce the Python
path's prediction.
"""
import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab2_kmax.app import predictor as predictor_lib
from deeplab2_kmax.app import saved_model
from deeplab2_kmax.app.export_test import _info
from deeplab2_kmax.app.predictor_test import D, IGNORE, permissive_merger, random_image, tiny_model
from tools import serving_request as client


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  base = tmp_path_factory.mktemp("serving")
  predictor = predictor_lib.PanopticPredictor(tiny_model(), permissive_merger(), D, IGNORE)
  loaded = tf.saved_model.load(saved_model.export_saved_model(predictor, _info(), str(base / "m")))
  paths = []
  for i, size in enumerate([(40, 70), (40, 70), (33, 50)]):
    paths.append(str(base / f"im{i}.png"))
    Image.fromarray(random_image(*size, seed=i)).save(paths[-1])
  return predictor, loaded, paths


def _signature_inputs(loaded, name):
  return set(loaded.signatures[name].structured_input_signature[1])


def _as_tf_serving_decodes(body):
  """Row format -> {input: batched tensor}, {"b64": s} -> bytes (TF Serving's rules)."""
  names = body["instances"][0].keys()
  columns = {}
  for name in names:
    values = [inst[name] for inst in body["instances"]]
    if isinstance(values[0], dict):
      columns[name] = tf.constant([base64.b64decode(v["b64"]) for v in values])
    else:
      columns[name] = tf.constant(np.asarray(values, np.uint8))
  return columns


def test_rest_bytes_request_runs_on_the_saved_model(served):
  predictor, loaded, paths = served
  body = json.loads(json.dumps(client.rest_request(paths, "serving_default")))
  assert body["signature_name"] == "serving_default"
  assert set(body["instances"][0]) == _signature_inputs(loaded, "serving_default")
  with open(paths[2], "rb") as f:
    assert base64.b64decode(body["instances"][2]["image_bytes"]["b64"]) == f.read()
  out = loaded.signatures["serving_default"](**_as_tf_serving_decodes(body))
  want = predictor.predict_image(np.asarray(Image.open(paths[2])))
  np.testing.assert_array_equal(out["panoptic_map"][2, :33, :50], want["panoptic"])
  assert out["num_segments"][2] == want["num_segments"] > 0


def test_rest_pixels_request_runs_on_the_saved_model(served):
  predictor, loaded, paths = served
  body = client.rest_request(paths[:2], "serve_images")
  assert set(body["instances"][0]) == _signature_inputs(loaded, "serve_images")
  out = loaded.signatures["serve_images"](**_as_tf_serving_decodes(body))
  want = predictor.predict_image(np.asarray(Image.open(paths[1])))
  np.testing.assert_array_equal(out["panoptic_map"][1], want["panoptic"])
  with pytest.raises(ValueError, match="one size"):
    client.rest_request(paths, "serve_images")
  with pytest.raises(ValueError, match="--signature"):
    client.rest_request(paths, "predict")


def test_grpc_predict_request(served):
  pytest.importorskip("tensorflow_serving.apis.predict_pb2")
  predictor, loaded, paths = served
  request = client.grpc_request(paths, "kmax", "serving_default", version=3)
  assert request.model_spec.name == "kmax" and request.model_spec.version.value == 3
  assert request.model_spec.signature_name == "serving_default"
  assert set(request.inputs) == _signature_inputs(loaded, "serving_default")
  tensor = request.inputs["image_bytes"]
  assert tensor.dtype == tf.string.as_datatype_enum
  with open(paths[0], "rb") as f:
    assert tensor.string_val[0] == f.read()
  out = loaded.signatures["serving_default"](image_bytes=tf.make_ndarray(tensor))
  want = predictor.predict_image(np.asarray(Image.open(paths[0])))
  np.testing.assert_array_equal(out["panoptic_map"][0, :40, :70], want["panoptic"])
  pixels = client.grpc_request(paths[:2], "kmax", "serve_images")
  assert tf.make_ndarray(pixels.inputs["images"]).shape == (2, 40, 70, 3)


def test_urls_responses_and_cli(served, tmp_path, capsys):
  _, _, paths = served
  assert client.rest_url("localhost:8501", "kmax") == \
      "http://localhost:8501/v1/models/kmax:predict"
  assert client.rest_url("http://h:1/", "m", 2) == "http://h:1/v1/models/m/versions/2:predict"
  parsed = client.parse_rest_response({"predictions": [{"num_segments": 2,
                                                        "panoptic_map": [[1, 2]]}]})
  assert parsed[0]["panoptic_map"].shape == (1, 2)
  with pytest.raises(RuntimeError, match="TF Serving error: boom"):
    client.parse_rest_response({"error": "boom"})
  assert client.main(["--image", paths[0], "--output", str(tmp_path / "r.json")]) == 0
  with open(tmp_path / "r.json") as f:
    assert json.load(f)["signature_name"] == "serving_default"
  assert client.main(["--image", paths[0]]) == 2
  with pytest.raises(ValueError, match="--image=.*cannot read"):
    client.rest_request([str(tmp_path / "missing.jpg")])
