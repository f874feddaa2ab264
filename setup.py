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
    # The exported tool catalog (manifests/tools.json's twin): `flexus-ops mcp` answers tools/list from it
    # while the SDK loads (mcp_fast.py).
    package_data={"flexus_ops": ["mcp_catalog.json"]},
)
