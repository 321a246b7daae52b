"""What pyproject.toml cannot say: the package ``gdlseg.bundles`` is the repository's top-level
``bundles/`` folder, so that the bundle has one source and ships in the wheel and the sdist as package
data. ``gdlseg.cli.common.default_bundle`` finds it with ``importlib.resources`` in a wheel install
and in an editable one (``pip install -e .``) alike.
"""

from setuptools import find_namespace_packages, find_packages, setup

# The bundle's folders are listed as (data-only) packages: setuptools warns about folders with
# importable names that hold package data otherwise.
BUNDLE_FOLDERS = [
    f"gdlseg.bundles.{name}" for name in find_namespace_packages("bundles", exclude=["__pycache__", "*.__pycache__"])
]

setup(
    packages=[*find_packages("plugin"), "gdlseg.bundles", *BUNDLE_FOLDERS],
    package_dir={"": "plugin", "gdlseg.bundles": "bundles"},
    # Every file of a bundle, whatever it holds; never weights a developer downloaded into models/
    # (large_files.yml says where they come from).
    package_data={"gdlseg.bundles": ["**/*"]},
    exclude_package_data={"gdlseg.bundles": ["*/models/*", "*__pycache__*"]},
)
