"""The kernel's own measurement of a TCP handshake.

A user-space stopwatch around aiohttp's connector times a few hundred microseconds of Python
(happy-eyeballs, transport and protocol set-up) along with the handshake, which on a fast network
is most of what it reports. Linux measures the SYN → SYN-ACK round trip itself and keeps the
smallest RTT seen in `tcp_info.tcpi_min_rtt`; on a fresh connection that is the handshake.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

_TCP_INFO = getattr(socket, "TCP_INFO", None)
_MIN_RTT_OFFSET = 148  # struct tcp_info: __u32 tcpi_min_rtt (microseconds), Linux 4.6+
_NEEDED = _MIN_RTT_OFFSET + 4


def handshake_rtt(sock: Any) -> float | None:
    """Seconds, or None where the kernel cannot tell (not Linux, too old, not a TCP socket)."""
    if _TCP_INFO is None or sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _NEEDED)
    except (OSError, AttributeError, TypeError):
        return None
    if len(raw) < _NEEDED:
        return None
    (min_rtt_us,) = struct.unpack_from("I", raw, _MIN_RTT_OFFSET)
    if min_rtt_us in (0, 0xFFFFFFFF):  # no sample yet / unset
        return None
    return float(min_rtt_us) / 1_000_000
