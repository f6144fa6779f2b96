"""Webhooks: tenants register callback URLs; events of their jobs, requests, erasures and versions
are delivered there, signed (Standard Webhooks), at least once, through an outbox.

Kept free of imports: ``service.audit.logic`` imports ``service.webhooks.enqueue`` on every
append, and this package's route and logic modules import the audit log in turn.
"""
