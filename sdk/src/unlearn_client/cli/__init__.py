"""The ``unlearn-client`` command line (``pip install 'unlearn-client[cli]'``)."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from unlearn_client.cli.app import app
    except ImportError as exc:  # typer or rich missing: the SDK was installed without the extra
        sys.stderr.write(f"unlearn-client needs the cli extra: pip install 'unlearn-client[cli]' ({exc})\n")
        raise SystemExit(2) from exc
    from unlearn_client.cli.config import ConfigError
    from unlearn_client.cli.output import EXIT_USAGE, report_error
    from unlearn_client.cli.session import current
    from unlearn_client.errors import UnlearnError

    try:
        app()
    except UnlearnError as exc:
        raise SystemExit(report_error(exc, current.as_json)) from None
    except ConfigError as exc:
        report_error(exc, current.as_json)
        raise SystemExit(EXIT_USAGE) from None
    finally:
        current.close()
