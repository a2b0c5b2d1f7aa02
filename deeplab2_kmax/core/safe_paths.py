"""Paths named by data stay inside the folder they belong to.

Every file name read from data (a COCO JSON `file_name`, a TFRecord's `image/filename`
or `image/id`, a prediction's `file_name`) is joined onto the folder the user gave with
`inside(folder, name, source)`. It returns the joined path when that path resolves
(symbolic links followed) to a file inside the folder, subfolders included, and raises
`PathOutsideFolderError` naming the data file and the name otherwise: absolute names,
`..` escapes, links leading out of the folder, the folder itself, empty names and
names with NUL characters are refused. Reading and writing use the same rule.
"""
from __future__ import annotations

import os

from deeplab2_kmax.core.cli import UserError


class PathOutsideFolderError(UserError):
  """A name from data points outside its folder (the message names the data file)."""


def inside(folder: str, name, source: str, what: str = "file name") -> str:
  """`folder/name`, refused unless it resolves inside `folder` (see the module doc).

  `source` is the data file that holds the name (the start of the error message).
  """
  if not isinstance(name, str) or not name or "\0" in name:
    raise PathOutsideFolderError(f"{source}: {what} {name!r} is not a valid file name")
  path = os.path.join(folder, name)
  root = os.path.realpath(folder)
  real = os.path.realpath(path)
  if os.path.isabs(name) or real == root or os.path.commonpath([root, real]) != root:
    raise PathOutsideFolderError(
        f"{source}: {what} {name!r} is outside the folder {folder}; names in data must "
        "stay inside their folder")
  return path


def inside_for_writing(folder: str, name, source: str, what: str = "file name") -> str:
  """`inside(...)`, with the file's parent folders created (subfolders allowed)."""
  path = inside(folder, name, source, what)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path
