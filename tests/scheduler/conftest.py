"""Fixtures the scheduler tests share with the worker tests: a spooled phantom, a fake app."""

from tests.worker.conftest import recording_app, small_phantom, spool_study  # noqa: F401
