"""Log set-up shared by every process: one format, UIDs and ids only.

Nothing the node logs carries patient data; pynetdicom (the node's SCU) is
told not to log request or response identifiers (see :mod:`dicom_node.scu`)
and its own chatter is limited to warnings.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``; third-party libraries at WARNING."""
    logging.basicConfig(level=level.upper(), format=FORMAT, force=True)
    for noisy in ("pynetdicom", "highdicom", "celery", "kombu", "alembic", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
