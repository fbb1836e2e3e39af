"""The console's pages, grouped as its menu is; each module's ``routes`` lists its own.

:mod:`~web.pages.login` (log in and out), :mod:`~web.pages.browse` (overview,
jobs, studies, destinations), :mod:`~web.pages.operations` (the operators'
actions), :mod:`~web.pages.toolbox` (C-ECHO, rule tester, self-test) and
:mod:`~web.pages.admin` (audit trail, users).  :mod:`web.app` puts them together.
"""
