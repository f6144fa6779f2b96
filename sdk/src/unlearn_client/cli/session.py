"""The state of one CLI run: global options, the output mode, and the client built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer

from unlearn_client.cli import config
from unlearn_client.cli.output import Output
from unlearn_client.client import Client


@dataclass
class Session:
    url: str | None = None
    api_key: str | None = None
    as_json: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            creds = config.resolve(self.url, self.api_key)
            if not creds.url:
                raise config.ConfigError(
                    "no service URL: run `unlearn-client login`, or set UNLEARN_URL (and UNLEARN_API_KEY)"
                )
            self._client = Client(creds.url, creds.api_key or "")
        return self._client

    def output(self, as_json: bool = False) -> Output:
        # --json works before the command (global) and after it (per command).
        self.as_json = self.as_json or as_json
        return Output(self.as_json)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# One per process: the entry point reads it to print an error in the mode the command asked for.
current = Session()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (errors too, as problem+json).")]
