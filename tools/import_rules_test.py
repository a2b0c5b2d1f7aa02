"""The layers of the project and the one direction of their imports (docs/DESIGN.md).

Every import of every project module is parsed (module level and inside functions) and
checked against the layer table: a module may import its own layer and the layers
below it (`ALLOWED`), never one above. Imports inside functions are allowed only with a
comment on the line saying why (`# lazy: ...`). The layer graph itself must be acyclic.
"""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = ("deeplab2_kmax", "data", "evaluation", "trainer", "tools", "benchmarks")

# Layer of a module path (first matching prefix wins).
LAYERS = [
    ("deeplab2_kmax/core/", "core"),
    ("deeplab2_kmax/kernels/", "kernels"),
    ("deeplab2_kmax/app/", "app"),
    ("deeplab2_kmax/tools/", "app"),
    ("deeplab2_kmax/export.py", "app"),  # `python -m` entries of app/ commands
    ("deeplab2_kmax/predict.py", "app"),
    ("deeplab2_kmax/visualize_clusters.py", "app"),
    ("deeplab2_kmax/__init__.py", "api"),
    ("deeplab2_kmax/", "model"),
    ("data/", "data"),
    ("evaluation/evaluate.py", "app"),  # the evaluation CLI entry point
    ("evaluation/", "metrics"),
    ("trainer/", "trainer"),
    ("tools/", "tools"),
    ("benchmarks/", "tools"),
]
ALLOWED = {
    "core": {"core"},
    "kernels": {"kernels"},
    "model": {"core", "kernels", "model"},
    "data": {"core", "data"},
    "metrics": {"core", "metrics"},
    "app": {"core", "kernels", "model", "data", "metrics", "app"},
    "trainer": {"core", "kernels", "model", "data", "metrics", "app", "trainer"},
    "api": {"core", "kernels", "model", "app", "api"},
    "tools": {"core", "kernels", "model", "data", "metrics", "app", "trainer", "tools",
              "api"},
}
LAZY_COMMENT = re.compile(r"#\s*lazy:")


def layer_of(path: str) -> str:
  for prefix, layer in LAYERS:
    if path == prefix or path.startswith(prefix):
      return layer
  raise AssertionError(f"{path}: no layer")


def module_path(name: str):
  """Repository path of a project module name (a module, a package, or a name defined
  in one), or None for third-party modules."""
  if name.split(".")[0] not in PROJECT:
    return None
  parts = name.split(".")
  while parts:
    base = os.path.join(*parts)
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
      if os.path.exists(os.path.join(ROOT, candidate)):
        return candidate.replace(os.sep, "/")
    parts = parts[:-1]
  return None


def sources():
  for top in PROJECT:
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      for name in sorted(files):
        if name.endswith(".py"):
          yield os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/")


def imports(path: str):
  """(line number, imported module names, inside a function, line text)."""
  with open(os.path.join(ROOT, path)) as f:
    text = f.read()
  lines = text.splitlines()
  tree = ast.parse(text, path)
  functions = [n for n in ast.walk(tree)
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  inner = {id(n) for f in functions for n in ast.walk(f)}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    yield node.lineno, names, id(node) in inner, lines[node.lineno - 1]


def violations(test_files: bool):
  found = []
  for path in sources():
    if path.endswith("_test.py") != test_files or path == "conftest.py":
      continue
    layer = layer_of(path)
    for lineno, names, in_function, line in imports(path):
      targets = {module_path(n) for n in names} - {None}
      for target in targets:
        if layer_of(target) not in ALLOWED[layer]:
          found.append(f"{path}:{lineno} ({layer}) imports {target} ({layer_of(target)})")
      if targets and in_function and not test_files and not LAZY_COMMENT.search(line):
        found.append(f"{path}:{lineno}: project import inside a function without a "
                     f"'# lazy: why' comment")
  return found


def test_the_layer_table_is_acyclic():
  order = ["core", "kernels", "model", "data", "metrics", "app", "api", "trainer", "tools"]
  for layer, allowed in ALLOWED.items():
    assert all(order.index(a) <= order.index(layer) for a in allowed), layer


def test_every_module_has_a_layer():
  for path in sources():
    layer_of(path)


def test_no_module_imports_a_layer_above_it():
  found = violations(test_files=False)
  assert not found, "\n".join(found)


def test_the_model_imports_nothing_from_data_trainer_evaluation():
  for path in sources():
    if layer_of(path) in ("model", "kernels", "core") and not path.endswith("_test.py"):
      for _, names, _, _ in imports(path):
        assert not any(n.split(".")[0] in ("data", "trainer", "evaluation")
                       for n in names), path


@pytest.mark.parametrize("layer", ["core", "kernels", "model", "data", "metrics"])
def test_lower_layers_have_no_sys_path_hacks(layer):
  for path in sources():
    if layer_of(path) == layer and not path.endswith("_test.py"):
      with open(os.path.join(ROOT, path)) as f:
        assert "sys.path.insert" not in f.read(), path
