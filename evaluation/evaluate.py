"""`python evaluation/evaluate.py`: the command of deeplab2_kmax/app/evaluate.py (usage
there, or --help): PQ, mIoU and instance AP of a checkpoint on a TFRecord split."""

from deeplab2_kmax.app import evaluate

if __name__ == "__main__":
  evaluate.entry()
