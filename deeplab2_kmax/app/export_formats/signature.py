"""Input and output names of every non-SavedModel artifact (no TensorFlow import, so a
runtime process loads only its runtime). `serving_graph.py` documents them."""

INPUT_NAMES = ("images", "image_size")
# MaskWiseMerger key -> output name (the SavedModel adds image_size: saved_model.OUTPUT_NAMES).
OUTPUTS = {"panoptic": "panoptic_map", "semantic": "semantic_map",
           "instance": "instance_map", "segment_ids": "segment_ids",
           "segment_classes": "segment_classes", "segment_scores": "segment_scores",
           "num_segments": "num_segments"}
