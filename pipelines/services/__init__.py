"""Services: plain typed functions that compose ``siamese``, ``faces``, ``index`` and ``storage``.

They take the caller's session factory and settings, never import Prefect, and are what the
flows, the command line and the HTTP API call.
"""
