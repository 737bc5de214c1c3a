"""The operator surface over HTTP (SPEC 7): ``/metrics``, ``/healthz`` and ``/readyz`` for
machines, and the authenticated ``/v1`` API for people and their tools.

``auth`` decides who is calling and what their role allows; ``routes`` builds the FastAPI
application over a ``Backend`` (what the running service offers it); ``server`` runs it with
uvicorn inside the service's event loop.
"""
