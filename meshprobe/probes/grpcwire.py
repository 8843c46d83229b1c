"""The gRPC health service on the wire, shared by the probe and the echo's server: the path,
the status names, gRPC's message framing and the two protobuf messages.

The messages are one field each and are coded here by hand (no protobuf runtime): a
HealthCheckRequest is field 1 (string `service`), a HealthCheckResponse field 1 (enum `status`).
"""

from __future__ import annotations

__all__ = [
    "GRPC_CODES",
    "PATH",
    "SERVING_STATUS",
    "decode_request",
    "decode_status",
    "encode_request",
    "encode_response",
    "frame",
    "unframe",
]

PATH = "/grpc.health.v1.Health/Check"

GRPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
SERVING_STATUS = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe(data: bytes) -> bytes:
    """The one uncompressed message `data` frames; ValueError otherwise."""
    if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
        raise ValueError("not one uncompressed gRPC message")
    return data[5:]


def encode_request(service: str) -> bytes:
    """A framed HealthCheckRequest{service}."""
    raw = service.encode()
    return frame(b"\x0a" + _varint(len(raw)) + raw if raw else b"")


def encode_response(status: int) -> bytes:
    """A framed HealthCheckResponse{status} (the echo's answer)."""
    return frame(b"\x08" + _varint(status))


def _field_one(message: bytes, wire_type: int) -> int | bytes | None:
    """Field 1 of a protobuf message of the given wire type (0 varint, 2 bytes), the last one
    wins as in protobuf; ValueError if the bytes are not a message. Unknown fields are skipped,
    as protobuf readers must."""
    found: int | bytes | None = None
    i = 0
    while i < len(message):
        key, i = _read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(message, i)
            if number == 1 and wire_type == 0:
                found = value
        elif wire == 2:
            length, i = _read_varint(message, i)
            if number == 1 and wire_type == 2:
                found = message[i : i + length]
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(message):
            raise ValueError("truncated")
    return found


def decode_status(message: bytes) -> int:
    """The `status` of a HealthCheckResponse (0, UNKNOWN, when absent)."""
    value = _field_one(message, 0)
    return value if isinstance(value, int) else 0


def decode_request(framed: bytes) -> str:
    """The `service` of a framed HealthCheckRequest."""
    value = _field_one(unframe(framed), 2)
    try:
        return value.decode() if isinstance(value, bytes) else ""
    except UnicodeDecodeError:
        raise ValueError("service is not UTF-8") from None


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7
