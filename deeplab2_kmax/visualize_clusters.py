"""`python -m deeplab2_kmax.visualize_clusters`: the command of deeplab2_kmax/app/visualize_clusters.py (usage there)."""

from deeplab2_kmax.app import visualize_clusters

if __name__ == "__main__":
  visualize_clusters.entry()
