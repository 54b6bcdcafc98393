"""What launch/gpu_check.sh needs beyond jax, in one place (standard library only: it runs
before they are installed).

  python -m launch.gpu_packages   # the pinned requirements of those that do not import here

gpu_check.sh installs those; launch/gpu_wheels.sh fetches their wheels (and their
dependencies') for a machine without network; tests/test_gpu_packages.py checks that the list
covers every third-party import of the product and of the tests gpu_check.sh runs.
"""

import importlib.util
import pathlib
import re

# (distribution, import name)
PACKAGES = (("tensorflow-datasets", "tensorflow_datasets"), ("array_record", "array_record"),
            ("grain", "grain"), ("ezc3d", "ezc3d"), ("ml_collections", "ml_collections"),
            ("tensorboardX", "tensorboardX"), ("absl-py", "absl"), ("chex", "chex"),
            ("flax", "flax"), ("optax", "optax"), ("orbax-checkpoint", "orbax"),
            ("scipy", "scipy"), ("matplotlib", "matplotlib"), ("pytest", "pytest"),
            ("hypothesis", "hypothesis"), ("importlib_resources", "importlib_resources"))
REQUIREMENTS = pathlib.Path(__file__).resolve().parents[1] / "requirements.txt"


def pins() -> dict[str, str]:
    """requirements.txt's `name==version` pins."""
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", REQUIREMENTS.read_text(), re.M))


def missing() -> list[str]:
    """The pinned requirement of every package of PACKAGES that does not import here."""
    pinned = pins()
    return [f"{dist}=={pinned[dist]}" if dist in pinned else dist for dist, module in PACKAGES
            if importlib.util.find_spec(module) is None]


if __name__ == "__main__":
    print(" ".join(missing()))
