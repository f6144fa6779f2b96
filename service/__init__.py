"""Unlearning as a service: the HTTP API, its data layer and the job machinery."""
