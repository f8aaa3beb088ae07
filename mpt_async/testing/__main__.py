"""``python -m mpt_async.testing``: run the emulator in the foreground."""

from __future__ import annotations

from mpt_async.testing._cli import main

raise SystemExit(main())
