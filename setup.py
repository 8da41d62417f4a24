"""Build hook: the wheel carries onnxruntime-web's runtime (web/vendor_runtime.py), so a pip install
has the page's on-device mode. Everything else about the package is in pyproject.toml."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithBrowserRuntime(build_py):
    def run(self):
        runpy.run_path(str(Path(__file__).resolve().parent / "web" / "vendor_runtime.py"))["vendor"]()
        super().run()


setup(cmdclass={"build_py": BuildPyWithBrowserRuntime})
