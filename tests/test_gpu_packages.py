"""launch/gpu_packages.py: what the accelerator check installs covers what its code imports."""

import ast
import importlib.util
import pathlib
import re
import sys

from launch import gpu_packages

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Imported but not installed by gpu_check.sh: the machine's own jax build brings jax, jaxlib
# and numpy; flax, orbax and tfds depend on etils; torch is the benchmark's optional reference
# (gpu_check passes --notorch).
NOT_INSTALLED = {"jax": "the machine's jax", "jaxlib": "the machine's jax",
                 "numpy": "a dependency of jax", "etils": "a dependency of flax and orbax",
                 "torch": "optional (benchmarks/torch_reference.py, --notorch)"}
LOCAL = {"gengait_jax", "tfds_gait", "benchmarks", "launch", "tests"}


def _imports(path: pathlib.Path) -> set[str]:
    """Top-level names of the absolute imports of one Python file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _checked_files() -> list[pathlib.Path]:
    """The product's modules and the tests gpu_check.sh runs, with the test helpers they
    import."""
    files = [p for d in ("gengait_jax", "tfds_gait", "benchmarks", "launch")
             for p in sorted((ROOT / d).rglob("*.py"))]
    script = (ROOT / "launch" / "gpu_check.sh").read_text()
    tests = [ROOT / t for t in re.findall(r"tests/test_\w+\.py", script)]
    assert tests, "gpu_check.sh names no test file"
    todo, seen = tests + [ROOT / "tests" / "conftest.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [ROOT / "tests" / f"{m}.py" for m in _imports(path)
                 if (ROOT / "tests" / f"{m}.py").exists()]
    return files + sorted(seen)


def test_gpu_packages_cover_every_third_party_import():
    provided = {module for _, module in gpu_packages.PACKAGES} | set(NOT_INSTALLED)
    missing = {}
    for path in _checked_files():
        for name in _imports(path) - set(sys.stdlib_module_names) - LOCAL - provided:
            if not (ROOT / "tests" / f"{name}.py").exists():
                missing.setdefault(name, path.relative_to(ROOT).as_posix())
    assert not missing, f"imported, but not in gpu_packages.PACKAGES: {missing}"


def test_gpu_packages_are_pinned_and_importable():
    pins = gpu_packages.pins()
    for dist, module in gpu_packages.PACKAGES:
        assert dist in pins, f"{dist} of gpu_packages.PACKAGES has no pin in requirements.txt"
        assert importlib.util.find_spec(module) is not None, f"{module} ({dist}) does not import"


def test_missing_gives_the_pinned_requirement_of_what_does_not_import(monkeypatch):
    monkeypatch.setattr(gpu_packages, "PACKAGES", (
        ("grain", "no_such_module_for_grain"), ("unpinned-dist", "no_such_module_either"),
        ("flax", "flax")))
    assert gpu_packages.missing() == [f"grain=={gpu_packages.pins()['grain']}", "unpinned-dist"]
