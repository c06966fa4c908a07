# Metadata lives in pyproject.toml; this file lets `pip install -e .` work with old tooling too.
from setuptools import setup

setup()
