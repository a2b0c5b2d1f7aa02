"""ONNX / LiteRT / OpenVINO artifacts with the mask-wise merging inside
(`python -m deeplab2_kmax.export --format=saved_model,onnx,litert,openvino`).

* `serving_graph.py`: the exported function (uint8 images + image_size -> the
  SavedModel's outputs), the model traced under `kernels/portable_ops.portable_graph()`;
* `dense_merger.py`, `dense_upsampling.py`: `MaskWiseMerger`'s rule with static shapes;
* `onnx_format.py`, `litert_format.py`, `openvino_format.py`: convert + run, one each;
* `artifacts.py` (layout, loading), `metadata.py` (labels inside the files),
  `signature.py` (names), `runtimes.py` (optional packages);
* `artifact_predictor.py` (one image of any size, as the Python path), `verify.py`
  (agreement), `export_command.py` (the CLI's part).
"""
