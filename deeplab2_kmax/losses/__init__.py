"""kMaX-DeepLab losses: Hungarian matching, PQ-style, mask-ID, instance
discrimination and semantic losses, combined with deep supervision by KMaXLoss."""
from deeplab2_kmax.losses.hungarian_matching import hungarian_matching
from deeplab2_kmax.losses.kmax_loss import KMaXLoss

__all__ = ["KMaXLoss", "hungarian_matching"]
