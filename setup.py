"""Package discovery for setuptools (everything else is in pyproject.toml).

Each top-level folder is the package ``mydfs.<folder>`` (the ``package-dir`` mapping in
pyproject.toml); every subpackage below it ships too, found here rather than listed by hand.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ["common", "tracker", "storage", "client", "raft_ext", "bench"]

setup(
    packages=[
        f"mydfs.{name}"
        for top in TOP_LEVEL
        for name in [top, *(f"{top}.{sub}" for sub in find_packages(top))]
    ]
)
