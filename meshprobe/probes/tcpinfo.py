"""The kernel's view of a probe's TCP connection: a diagnostic beside the duration, never in it.

Linux keeps per-connection statistics in `struct tcp_info`. Two of them tell a user *why* a
latency went up: the smoothed RTT (`tcpi_rtt`) and the retransmitted segments
(`tcpi_total_retrans`, which counts a retransmitted SYN too). Latency up with retransmits up means
loss on the path; latency up with retransmits flat means a slow server or gateway. They are read
from each fresh connection while it is still open; elsewhere than Linux they are absent.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from meshprobe.model import TCPStats

__all__ = ["SUPPORTED", "read_tcp_info"]

_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
SUPPORTED = _TCP_INFO is not None  # the tcp diagnostics families exist only where this holds

# Offsets in struct tcp_info (include/uapi/linux/tcp.h); stable ABI since Linux 2.6 for these.
_RTT_OFFSET = 68  # __u32 tcpi_rtt, microseconds, smoothed
_TOTAL_RETRANS_OFFSET = 100  # __u32 tcpi_total_retrans, segments over the connection's life
_NEEDED = _TOTAL_RETRANS_OFFSET + 4


def read_tcp_info(sock: Any) -> TCPStats | None:
    """The kernel's statistics of a connected socket (a `socket.socket`, asyncio's TransportSocket
    or uvloop's pseudo-socket), or None where the kernel cannot tell."""
    if _TCP_INFO is None or sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _NEEDED)
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    if not isinstance(raw, bytes) or len(raw) < _NEEDED:
        return None
    (rtt_us,) = struct.unpack_from("I", raw, _RTT_OFFSET)
    (retrans,) = struct.unpack_from("I", raw, _TOTAL_RETRANS_OFFSET)
    return TCPStats(rtt=rtt_us / 1_000_000 if rtt_us else None, retransmits=retrans)
