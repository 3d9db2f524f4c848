"""mobilellm-export: turn MobileLLM models into artifacts that run on phones.

The package is assembled from the repository's top-level folders (see pyproject.toml):
`mobilellm_export.runtimes` (runtimes/), `.model` (model/), `.quant` (quant/), `.export`
(export/) and `.benchmarks` (benchmarks/); README's "Layout" shows who imports whom. Heavy and
optional dependencies are imported where they are used, so `import mobilellm_export` stays cheap.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mobilellm-export")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
