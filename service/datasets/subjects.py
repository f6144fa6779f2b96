"""Subject ids in the sample index: stored as HMAC-SHA256 under the tenant's key, never raw.

The index is only ever searched by equality ("every sample of subject X"), so a keyed digest is
all it needs: a database dump, backup or replica then does not say who is in a training set, and
without the service secret nobody can test a guessed id (a plain hash of an e-mail address could
be tested against a list of addresses). The digest is the one ``service.privacy`` gives deletion
requests (``subject_digest``), so a request and the samples it erases match by digest.
"""

from __future__ import annotations

import hashlib
import hmac

from service.context import ServiceContext
from service.privacy import keyed_digest

SubjectId = str | int


def subject_text(subject: SubjectId) -> str:
    """The canonical text of a subject id: an int and its decimal string are the same subject."""
    return str(int(subject)) if isinstance(subject, int) else subject


def key_id(key: bytes) -> str:
    """A short fingerprint of a tenant key, stored with each version: a lookup under another key
    (a process started with a different service secret) fails loudly instead of finding nothing."""
    return hmac.new(key, b"dataset-subject-key-id", hashlib.sha256).hexdigest()[:16]


class SubjectHasher:
    """Digests of one tenant's subject ids; subjects repeat across samples, so each is hashed once."""

    def __init__(self, ctx: ServiceContext, tenant_id: str) -> None:
        self.key = ctx.tenant_key(tenant_id)
        self.key_id = key_id(self.key)
        self._cache: dict[str, str] = {}

    def __call__(self, subject: SubjectId) -> str:
        text = subject_text(subject)
        digest = self._cache.get(text)
        if digest is None:
            digest = self._cache[text] = keyed_digest(self.key, text)
        return digest
