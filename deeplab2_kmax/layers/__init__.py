"""Building blocks of kMaX-DeepLab (keras.ops only, backend-agnostic).

normalization (BN factory, sync BN, activations), convolutions (ConvBN, DenseBN,
DepthwiseSeparableConv), drop_path, resize (align-corners bilinear), axial_attention
(AxialAttention1D/2D, AxialBlock), bottleneck (BottleneckBlock), attention
(AttentionOperation), kmeans_cross_attention (cluster assignment + center update),
transformer_layer (KMaXTransformerLayer with the four Table-1 interactions), tracking
(TrackListHeldLayers: checkpoint sub-layers kept in lists).

Speed paths, each tested against the plain formulation: bn_folding (inference BN folded
into the preceding linear op), fused_gelu (XLA-fused bf16/f16 GeLU, TF only),
depthwise_gradient (training depthwise conv whose kernel gradient is one depthwise conv,
TF only), xla_paths (depthwise convs as shifted-slice sums when compiled by XLA).
"""
