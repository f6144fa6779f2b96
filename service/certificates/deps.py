"""The signer of the running app, as a FastAPI dependency (loaded once at start-up)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.certificates.signing import Signer
from service.errors import Problem


def get_signer(request: Request) -> Signer:
    signer = getattr(request.app.state, "signer", None)
    if signer is None:  # only when the app runs without its lifespan
        raise Problem(503, "Service Unavailable", "the service is starting")
    return signer


SignerDep = Annotated[Signer, Depends(get_signer)]
