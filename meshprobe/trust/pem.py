"""Reading a PEM file we were told to trust, safely: a FIFO, a device, a directory or a huge file
named by mistake must fail at once with a reason, not hang the daemon or fill its memory. Every
trust file goes through here: the bundle at start and when it changes, a target's `ca_file`,
`meshprobe probe --ca-file`."""

from __future__ import annotations

import os
import stat

__all__ = ["MAX_PEM_BYTES", "read_pem_file", "shown"]

# A trust bundle is a few roots (the whole Mozilla bundle is about 200 KiB); anything bigger is a
# wrong file, and reading it whole would let one bad mount push the pod over its memory limit.
MAX_PEM_BYTES = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


def shown(path: str) -> str:
    """A file name as it may be printed: as written when it is plain text, else quoted and
    escaped (repr escapes control characters and lone surrogates alike)."""
    return path if path.isprintable() else repr(path)


def read_pem_file(path: str, *, limit: int = MAX_PEM_BYTES) -> bytes:
    """The file's bytes, refusing what is not a regular file of sane size; ValueError says why.

    Opened non-blocking and checked with fstat before reading: a FIFO or a device named by
    mistake (`/dev/zero`) must fail at once, not hang `check` or fill memory.
    """
    name = shown(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot open: {exc.strerror or exc}") from None
    except ValueError:  # NUL in the name, or characters the file system cannot encode
        raise ValueError(f"{name}: not a usable file name") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ValueError(f"{name}: is a directory, expected a PEM file")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{name}: not a regular file, expected a PEM file")
        too_big = f"{name}: larger than {limit // 1024 // 1024} MiB, not a PEM bundle"
        if info.st_size > limit:
            raise ValueError(too_big)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew after fstat
                raise ValueError(too_big)
        return b"".join(chunks)
    except OSError as exc:
        raise ValueError(f"{name}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
