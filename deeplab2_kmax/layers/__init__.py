"""Building blocks of kMaX-DeepLab (keras.ops only, backend-agnostic).

normalization (BN factory, sync BN, activations), convolutions (ConvBN, DenseBN,
DepthwiseSeparableConv), drop_path, resize (align-corners bilinear), axial_attention
(AxialAttention1D/2D, AxialBlock), bottleneck (BottleneckBlock), attention
(AttentionOperation), kmeans_cross_attention (cluster assignment + center update), tracking
(TrackListHeldLayers: checkpoint sub-layers kept in lists), policy_sharing (one dtype
policy for a layer and its sub-layers). The decoder layer that
combines them with a prediction head is `deeplab2_kmax/transformer_layer.py`.

Faster forms of the same math (BN folding, fused BN, depthwise and atrous conv forms,
native resize, fused GeLU) live in `deeplab2_kmax.kernels`, behind one switch.
"""
