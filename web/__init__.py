"""The ops console: server-rendered pages, operator actions, audit trail and /metrics.

Starlette + Jinja2 over the node's SQLAlchemy models; htmx (vendored under
``web/static``) refreshes the live parts.  Nothing is loaded from the internet.
"""
