"""Shared helpers of the gateway suite: the authz suite's (paths, the
admin client, wait_until), loaded without its session fixtures."""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "authz_conftest_gw", os.path.join(os.path.dirname(__file__), "..", "authz", "conftest.py"))
_az = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_az)

BIN = _az.BIN
REPO = _az.REPO
Client = _az.Client
wait_until = _az.wait_until
