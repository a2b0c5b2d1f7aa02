"""The facts every part of the project shares; imports nothing else of the project.

* `dataset_info`: the category table and label constants of a converted dataset
  (`dataset_info.json`: classes, train ids, label divisor, ignore label).
* `geometry`: input sizes (32k + 1 crops and padding) and the one eval input size.
* `output_keys`: the names of the model's outputs (the keys of its output dict).
* `cli`: how every command-line tool refuses bad input (one line, exit status 2).
* `safe_paths`: names taken from data stay inside their folder.
"""
