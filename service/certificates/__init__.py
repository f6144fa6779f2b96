"""Signed deletion certificates and the service's signing key.

``verify`` (offline, no service imports) · ``signing`` (the signer) · ``keystore`` (where the key
comes from) · ``certificate`` (the pure document) · ``logic`` (facts from the database) ·
``routes`` (HTTP) · ``deps`` (the signer of a running app).
"""
