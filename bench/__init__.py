"""Benchmarks of the node against real peers (dcmtk, Orthanc); run with ``make bench``."""
