"""The serve side's scheduling: when a study is stable, which jobs it gets, what is queued again.

``stability`` watches for studies that stopped receiving, ``dispatch`` routes
them to jobs and runs the recovery sweep, ``multiseries`` waits for the other
series a multi-series pipeline needs.  It runs in ``ainode serve``; workers
never import it.
"""
