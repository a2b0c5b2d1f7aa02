"""`python -m deeplab2_kmax.predict`: the command of deeplab2_kmax/app/predict.py (usage there)."""

from deeplab2_kmax.app import predict

if __name__ == "__main__":
  predict.entry()
