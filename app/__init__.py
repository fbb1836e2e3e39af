"""The program's top floor: the ``ainode`` command and the processes it runs.

``cli`` is the command, ``supervisor`` runs ``ainode run``'s children, ``serve``
wires the receiving side (SCP, scheduler, sweeps) and ``status`` reads the
tables ``ainode status`` prints.  Everything below may be imported from here;
nothing imports this package.
"""
