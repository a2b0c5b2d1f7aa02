"""Fast forms of the model's layers, behind one switch (`policy`).

The layers (`deeplab2_kmax.layers`, backbones, heads) state the paper's math in their
`call`; each first asks this package for a faster form of the same math and runs its
plain form when none applies or fast paths are off (`KMAX_FAST_PATHS=0`, gin
`fast_paths.enabled = False`, `policy.forced(False)`):

| module | fast form | used by |
|---|---|---|
| `bn_folding` | inference BN folded into the preceding conv / dense / einsum | ConvBN, DenseBN, heads |
| `conv` | folded BN, strided-1×1 subsampling (training), centre-tap and native atrous convs | ConvBN |
| `depthwise` | shifted-slice sums under XLA, folded BN, one-conv kernel gradient | separable convs, ConvNeXt |
| `shifted_depthwise` | depthwise conv as k² shifted slices (fused by XLA) | `depthwise` |
| `depthwise_gradient` | depthwise kernel gradient as one forward depthwise conv (TF) | `depthwise` |
| `folded_attention` | axial attention with all its BNs folded (inference) | AxialAttention1D |
| `batch_norm` | TF's fused batch norm in training | normalization.BatchNormalization |
| `gelu` | lean-gradient exact GeLU; fused XLA GeLU for bfloat16 (TF) | normalization.gelu |
| `resize` | TF's native align-corners resize outside XLA | layers.resize |

Each module says what it was measured against; each has a test against the plain form,
and `fast_paths_test.py` compares whole models with the switch on and off. This package
imports nothing else of the project.
"""
