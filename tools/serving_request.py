r"""Client example for a kMaX-DeepLab model served by TF Serving (needs no project code).

Build the REST JSON body (and optionally POST it):

  python tools/serving_request.py --image=photo.jpg --output=request.json
  python tools/serving_request.py --image=photo.jpg --rest_server=http://localhost:8501 \
      --model_name=kmax_deeplab

Build a gRPC `PredictRequest` (needs `pip install tensorflow-serving-api==2.21.0`, the
version matching TensorFlow 2.21), write it as binary protobuf and/or send it:

  python tools/serving_request.py --image=photo.jpg --protocol=grpc --output=request.pb
  python tools/serving_request.py --image=photo.jpg --protocol=grpc \
      --grpc_server=localhost:8500 --model_name=kmax_deeplab

`--signature=serving_default` sends the encoded file bytes (input `image_bytes`, any
image size); `--signature=serve_images` sends decoded uint8 pixels (input `images`, all
images of one request must share their size). Responses carry `panoptic_map` (semantic
* label_divisor + instance), `semantic_map`, `instance_map`, `segment_*`,
`num_segments` and `image_size` (see deeplab2_kmax/export.py).
"""
import argparse
import base64
import json
import sys
import urllib.request
from typing import Dict, List, Sequence

import numpy as np

SIGNATURE_INPUTS = {"serving_default": "image_bytes", "serve_images": "images"}


def _read(paths: Sequence[str]) -> List[bytes]:
  if not paths:
    raise ValueError("--image: give at least one image file")
  data = []
  for path in paths:
    try:
      with open(path, "rb") as f:
        data.append(f.read())
    except OSError as e:
      raise ValueError(f"--image={path}: cannot read ({e})") from e
  return data


def _decoded(paths: Sequence[str]) -> np.ndarray:
  """uint8 [B, H, W, 3] for `serve_images` (decoded as the SavedModel decodes)."""
  import tensorflow as tf
  images = [tf.io.decode_image(d, channels=3, expand_animations=False).numpy()
            for d in _read(paths)]
  if len({im.shape for im in images}) != 1:
    raise ValueError("serve_images needs images of one size; got "
                     f"{sorted({im.shape[:2] for im in images})} (use serving_default)")
  return np.stack(images)


def rest_request(paths: Sequence[str], signature: str = "serving_default") -> Dict:
  """TF Serving REST predict body in the row ("instances") format; binary strings
  are base64 objects {"b64": ...} as TF Serving requires."""
  if signature == "serving_default":
    instances = [{"image_bytes": {"b64": base64.b64encode(d).decode("ascii")}}
                 for d in _read(paths)]
  elif signature == "serve_images":
    instances = [{"images": image.tolist()} for image in _decoded(paths)]
  else:
    raise ValueError(f"--signature={signature}: expected one of {sorted(SIGNATURE_INPUTS)}")
  return {"signature_name": signature, "instances": instances}


def rest_url(server: str, model_name: str, version: int = 0) -> str:
  """http://host:8501/v1/models/<name>[/versions/<v>]:predict"""
  base = server.rstrip("/")
  if "://" not in base:
    base = "http://" + base
  path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
  return base + path + ":predict"


def parse_rest_response(body: Dict) -> List[Dict[str, np.ndarray]]:
  """Row-format response {"predictions": [{name: value}, ...]} -> per-image arrays."""
  if "error" in body:
    raise RuntimeError(f"TF Serving error: {body['error']}")
  predictions = body.get("predictions")
  if not isinstance(predictions, list):
    raise ValueError(f"response has no 'predictions' list: keys {sorted(body)}")
  return [{k: np.asarray(v) for k, v in p.items()} for p in predictions]


def grpc_request(paths: Sequence[str], model_name: str,
                 signature: str = "serving_default", version: int = 0):
  """A tensorflow_serving.apis.predict_pb2.PredictRequest for the images."""
  try:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
  except ImportError as e:
    raise ImportError("--protocol=grpc needs the TF Serving protos: pip install "
                      "tensorflow-serving-api==2.21.0") from e
  if signature not in SIGNATURE_INPUTS:
    raise ValueError(f"--signature={signature}: expected one of {sorted(SIGNATURE_INPUTS)}")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature
  if version:
    request.model_spec.version.value = version
  if signature == "serving_default":
    tensor = tf.make_tensor_proto(_read(paths), dtype=tf.string)
  else:
    tensor = tf.make_tensor_proto(_decoded(paths), dtype=tf.uint8)
  request.inputs[SIGNATURE_INPUTS[signature]].CopyFrom(tensor)
  return request


def send_grpc(request, server: str, timeout: float = 60.0) -> Dict[str, np.ndarray]:
  """Sends a PredictRequest to host:port; returns the outputs as numpy arrays."""
  import grpc
  import tensorflow as tf
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  with grpc.insecure_channel(server) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout)
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def send_rest(body: Dict, url: str, timeout: float = 60.0) -> List[Dict[str, np.ndarray]]:
  data = json.dumps(body).encode("utf-8")
  req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(req, timeout=timeout) as response:
    return parse_rest_response(json.load(response))


def _summary(outputs: Dict[str, np.ndarray]) -> str:
  n = int(np.asarray(outputs["num_segments"]).reshape(-1)[0])
  return (f"panoptic_map {np.asarray(outputs['panoptic_map']).shape}, {n} segments, "
          f"classes {np.asarray(outputs['segment_classes']).reshape(-1)[:n].tolist()}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--image", action="append", required=True, help="image file (repeat)")
  parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
  parser.add_argument("--signature", default="serving_default",
                      choices=sorted(SIGNATURE_INPUTS))
  parser.add_argument("--model_name", default="kmax_deeplab")
  parser.add_argument("--model_version", type=int, default=0, help="0: the latest")
  parser.add_argument("--output", help="write the request body (.json / .pb) here")
  parser.add_argument("--rest_server", help="e.g. http://localhost:8501: POST the request")
  parser.add_argument("--grpc_server", help="e.g. localhost:8500: send the request")
  args = parser.parse_args(argv)
  if args.protocol == "rest":
    body = rest_request(args.image, args.signature)
    if args.output:
      with open(args.output, "w") as f:
        json.dump(body, f)
    if args.rest_server:
      url = rest_url(args.rest_server, args.model_name, args.model_version)
      for path, outputs in zip(args.image, send_rest(body, url)):
        print(f"{path}: {_summary(outputs)}")
  else:
    request = grpc_request(args.image, args.model_name, args.signature, args.model_version)
    if args.output:
      with open(args.output, "wb") as f:
        f.write(request.SerializeToString())
    if args.grpc_server:
      outputs = send_grpc(request, args.grpc_server)
      for i, path in enumerate(args.image):
        print(f"{path}: {_summary({k: v[i:i + 1] for k, v in outputs.items()})}")
  if not (args.output or args.rest_server or args.grpc_server):
    print("nothing to do: pass --output and/or a server", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
