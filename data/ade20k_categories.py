"""The 150 ADE20K panoptic classes, in the order deeplab2's ADE20K checkpoints use.

Row t of the table is train id t (our class-logit / semantic channel t). The same index
is the `category_id` of the COCO-panoptic-format ADE20K annotations that Mask2Former's
`prepare_ade20k_pan_seg.py` writes (0-based ADE20K-150 scene-parsing order: 0 wall,
1 building, 2 sky, ...), and deeplab2's own semantic label is t + 1 (deeplab2 keeps 0 for
void, "other objects"). 100 thing classes (T) and 50 stuff classes (S); colours are the
usual ADE20K palette.

Label constants (docs/DESIGN.md encoding): panoptic = train_id * 1000 + instance (the
divisor deeplab2 uses for ADE20K), void = 255 * 1000. deeplab2 writes void as semantic
0 and shifts every class by one; the segments and PQ are the same.

deeplab2's transformer class head orders its channels differently: thing classes first,
then stuff classes (each by ascending id), void last. A checkpoint converter maps those
channels with `DatasetInfo.things_then_stuff_train_ids` (data/dataset_info.py).
"""
from __future__ import annotations

import re

from deeplab2_kmax.core.dataset_info import Category, DatasetInfo

DATASET_NAME = "ade20k_panoptic"
NUM_CLASSES = 150
LABEL_DIVISOR = 1000
IGNORE_LABEL = 255

# train id, name, T(hing) / S(tuff), colour (r g b)
_TABLE = """
  0  wall              S  120 120 120
  1  building          S  180 120 120
  2  sky               S    6 230 230
  3  floor             S   80  50  50
  4  tree              S    4 200   3
  5  ceiling           S  120 120  80
  6  road              S  140 140 140
  7  bed               T  204   5 255
  8  windowpane        T  230 230 230
  9  grass             S    4 250   7
 10  cabinet           T  224   5 255
 11  sidewalk          S  235 255   7
 12  person            T  150   5  61
 13  earth             S  120 120  70
 14  door              T    8 255  51
 15  table             T  255   6  82
 16  mountain          S  143 255 140
 17  plant             S  204 255   4
 18  curtain           T  255  51   7
 19  chair             T  204  70   3
 20  car               T    0 102 200
 21  water             S   61 230 250
 22  painting          T  255   6  51
 23  sofa              T   11 102 255
 24  shelf             T  255   7  71
 25  house             S  255   9 224
 26  sea               S    9   7 230
 27  mirror            T  220 220 220
 28  rug               S  255   9  92
 29  field             S  112   9 255
 30  armchair          T    8 255 214
 31  seat              T    7 255 224
 32  fence             T  255 184   6
 33  desk              T   10 255  71
 34  rock              S  255  41  10
 35  wardrobe          T    7 255 255
 36  lamp              T  224 255   8
 37  bathtub           T  102   8 255
 38  railing           T  255  61   6
 39  cushion           T  255 194   7
 40  base              S  255 122   8
 41  box               T    0 255  20
 42  column            T  255   8  41
 43  signboard         T  255   5 153
 44  chest of drawers  T    6  51 255
 45  counter           T  235  12 255
 46  sand              S  160 150  20
 47  sink              T    0 163 255
 48  skyscraper        S  140 140 140
 49  fireplace         T  250  10  15
 50  refrigerator      T   20 255   0
 51  grandstand        S   31 255   0
 52  path              S  255  31   0
 53  stairs            T  255 224   0
 54  runway            S  153 255   0
 55  case              T    0   0 255
 56  pool table        T  255  71   0
 57  pillow            T    0 235 255
 58  screen door       T    0 173 255
 59  stairway          S   31   0 255
 60  river             S   11 200 200
 61  bridge            S  255  82   0
 62  bookcase          T    0 255 245
 63  blind             S    0  61 255
 64  coffee table      T    0 255 112
 65  toilet            T    0 255 133
 66  flower            T  255   0   0
 67  book              T  255 163   0
 68  hill              S  255 102   0
 69  bench             T  194 255   0
 70  countertop        T    0 143 255
 71  stove             T   51 255   0
 72  palm              T    0  82 255
 73  kitchen island    T    0 255  41
 74  computer          T    0 255 173
 75  swivel chair      T   10   0 255
 76  boat              T  173 255   0
 77  bar               S    0 255 153
 78  arcade machine    T  255  92   0
 79  hovel             S  255   0 255
 80  bus               T  255   0 245
 81  towel             T  255   0 102
 82  light             T  255 173   0
 83  truck             T  255   0  20
 84  tower             S  255 184 184
 85  chandelier        T    0  31 255
 86  awning            T    0 255  61
 87  streetlight       T    0  71 255
 88  booth             T  255   0 204
 89  television        T    0 255 194
 90  airplane          T    0 255  82
 91  dirt track        S    0  10 255
 92  apparel           T    0 112 255
 93  pole              T   51   0 255
 94  land              S    0 194 255
 95  bannister         T    0 122 255
 96  escalator         S    0 255 163
 97  ottoman           T  255 153   0
 98  bottle            T    0 255  10
 99  buffet            S  255 112   0
100  poster            S  143 255   0
101  stage             S   82   0 255
102  van               T  163 255   0
103  ship              T  255 235   0
104  fountain          T    8 184 170
105  conveyer belt     S  133   0 255
106  canopy            S    0 255  92
107  washer            T  184   0 255
108  plaything         T  255   0  31
109  swimming pool     S    0 184 255
110  stool             T    0 214 255
111  barrel            T  255   0 112
112  basket            T   92 255   0
113  waterfall         S    0 224 255
114  tent              S  112 224 255
115  bag               T   70 184 160
116  minibike          T  163   0 255
117  cradle            S  153   0 255
118  oven              T   71 255   0
119  ball              T  255   0 163
120  food              T  255 204   0
121  step              T  255   0 143
122  tank              S    0 255 235
123  trade name        T  133 255   0
124  microwave         T  255   0 235
125  pot               T  245   0 255
126  animal            T  255   0 122
127  bicycle           T  255 245   0
128  lake              S   10 190 212
129  dishwasher        T  214 255   0
130  screen            T    0 204 255
131  blanket           S   20   0 255
132  sculpture         T  255 255   0
133  hood              T    0 153 255
134  sconce            T    0  41 255
135  vase              T    0 255 204
136  traffic light     T   41   0 255
137  tray              T   41 255   0
138  ashcan            T  173   0 255
139  fan               T    0 245 255
140  pier              S   71   0 255
141  crt screen        S  122   0 255
142  plate             T    0 255 184
143  monitor           T    0  92 255
144  bulletin board    T  184 255   0
145  shower            S    0 133 255
146  radiator          T  255 214   0
147  glass             T   25 194 194
148  clock             T  102 255   0
149  flag              T   92   0 255
"""

_ROW = re.compile(r"^\s*(\d+)\s+(\S.*?)\s+([TS])\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def _parse_table() -> list[Category]:
  cats = []
  for line in _TABLE.strip().splitlines():
    match = _ROW.match(line)
    if match is None:
      raise ValueError(f"ADE20K table: malformed row {line!r}")
    train_id, name, kind, r, g, b = match.groups()
    if int(train_id) != len(cats):
      raise ValueError(f"ADE20K table: row {line!r} is out of order")
    cats.append(Category(id=int(train_id), train_id=int(train_id), name=name,
                         isthing=int(kind == "T"), color=(int(r), int(g), int(b))))
  if len(cats) != NUM_CLASSES:
    raise ValueError(f"ADE20K table: {len(cats)} rows, expected {NUM_CLASSES}")
  return cats


CATEGORIES: tuple[Category, ...] = tuple(_parse_table())


def ade20k_info() -> DatasetInfo:
  """The ADE20K panoptic DatasetInfo (no example counts)."""
  return DatasetInfo(name=DATASET_NAME, label_divisor=LABEL_DIVISOR,
                     ignore_label=IGNORE_LABEL, categories=list(CATEGORIES))
