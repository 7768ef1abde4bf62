"""The random-seed rule every dialect shares.

A client that sends no seed (0, or -1 where a dialect says so) gets a random one, and the seed the
server reports back must be one the same API accepts: Stability v1 and A1111 take 0..4294967295,
so a random base seed leaves room for `seed + i` of every image of the job.
"""

from __future__ import annotations

import secrets

MAX_SEED = 4_294_967_295
ROOM = 64  # more than any job's image count


def random_seed() -> int:
    """A seed in 1..MAX_SEED - ROOM: never 0 (which asks for a random one), and seed + i stays valid."""
    return secrets.randbelow(MAX_SEED - ROOM) + 1
