"""Test harness for talking to real peers (Orthanc, dcmtk, Redis, PostgreSQL).

Modules
-------
ports
    Free loopback ports and waiting for a port to accept connections.
waiting
    Condition polling with a deadline (:func:`waiting.wait_until`).
orthanc
    :class:`orthanc.OrthancServer`, a private Orthanc instance with REST helpers.
dcmtk
    Thin wrappers around the dcmtk command-line tools.
services
    Redis and PostgreSQL availability and throw-away databases.
"""
