"""`python -m deeplab2_kmax.export`: the command of deeplab2_kmax/app/export.py (usage there)."""

from deeplab2_kmax.app import export

if __name__ == "__main__":
  export.entry()
