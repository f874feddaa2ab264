"""Package discovery under the two roots that install as ``flexus_ops`` and ``flexus_ops.bots``.

Everything else (metadata, dependencies, entry points) is in pyproject.toml. Subpackages are found, not
listed: a listed one that someone forgot is present in an editable install and missing from a wheel.
"""

from setuptools import find_packages, setup

ROOTS = {"flexus_ops": "tools", "flexus_ops.bots": "bots"}

setup(
    packages=[
        name for root, folder in ROOTS.items() for name in (root, *(f"{root}.{p}" for p in find_packages(folder)))
    ],
    package_dir=ROOTS,
)
