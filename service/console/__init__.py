"""The web console at ``/console``: a small static app (HTML, ES modules, CSS) served by the API.

The console holds no state and no privilege of its own: the browser calls the same JSON API with
the API key the user pasted (``Authorization: Bearer``), so scopes apply exactly as for any
client. This package only serves the files, under a strict Content-Security-Policy.
"""
