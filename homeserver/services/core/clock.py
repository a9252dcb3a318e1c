"""The wall clock the services read, in milliseconds since the epoch: the unit of
every Matrix timestamp (origin_server_ts, last_active_ago, expiry times).

Storage never reads the clock: its functions take timestamps as parameters, so the
services decide what "now" is and the arrows between the layers still point down.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
