"""The bytes of a text input: plain or compressed (.gz, .bz2, .zst, .xz), streamed, never to disk.

Whole compressed streams back to back (`cat a.gz b.gz`) are read whole; any
byte after the last whole stream is an error, for every codec.
"""

from __future__ import annotations

import io
from typing import IO, TYPE_CHECKING, Any

from ..location import is_local

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".xz": "xz"}


def split_compression(path: str) -> tuple[str, str | None]:
    """'a.csv.gz' -> ('a.csv', 'gzip'); 'a.csv' -> ('a.csv', None)."""
    lower = path.lower()
    for ext, codec in COMPRESSIONS.items():
        if lower.endswith(ext):
            return path[: -len(ext)], codec
    return path, None


def open_stream(fs: AbstractFileSystem, path: str) -> IO[bytes]:
    """A binary stream of the file's (decompressed) bytes; iterating it gives lines."""
    raw = fs.open(path, "rb")
    codec = split_compression(path)[1]
    if codec == "zstd":  # no zstd in Python's standard library (before 3.14): Arrow's decoder
        import pyarrow as pa

        return io.BufferedReader(pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), codec), 1 << 20)
    if codec:
        return io.BufferedReader(_Streams(raw, codec), 1 << 20)
    return raw


class TrailingData(OSError):
    """Bytes after the last whole compressed stream."""


# Any: a zlib, bz2 or lzma decompressor; they share decompress, eof and unused_data, and differ in the rest
# (zlib's unconsumed_tail, the others' needs_input), which _Streams tells apart with hasattr.
def _decompressor(codec: str, first: bool = True) -> Any:
    if codec == "gzip":
        import zlib

        return zlib.decompressobj(wbits=31)  # 16 + 15: deflate data inside a gzip header and trailer
    if codec == "bz2":
        import bz2

        return bz2.BZ2Decompressor()
    import lzma

    # The first stream: .xz, or the older .lzma format; later ones only .xz (to the auto-detector a run of
    # zero bytes is a series of empty .lzma streams).
    return lzma.LZMADecompressor(lzma.FORMAT_AUTO if first else lzma.FORMAT_XZ)


class _Streams(io.RawIOBase):
    """The decompressed bytes of a gzip, bz2 or xz file: whole streams back to back, and nothing after them.

    One policy for every codec: Arrow's gzip, bz2 and zstd readers refuse bytes
    after the last stream, while Python's lzma and bz2 modules drop them without
    a word (a damaged or appended-to file would pass for a shorter one).
    """

    def __init__(self, raw: IO[bytes], codec: str) -> None:
        super().__init__()
        self.raw, self.codec = raw, codec
        self.decoder = _decompressor(codec)
        self.offset = 0  # compressed bytes read so far
        self.stream_start, self.stream_out = 0, 0  # where the current stream starts; bytes it has given

    def readable(self) -> bool:
        return True

    # typeshed says any writable buffer, which has no slice assignment; io passes a bytearray (RawIOBase.read)
    # or a memoryview (BufferedReader).
    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._read(len(buffer)) if len(buffer) else b""
        buffer[: len(data)] = data
        return len(data)

    def _read(self, size: int) -> bytes:
        while True:
            if self.decoder.eof:  # a stream ended: the file ends too, or another stream starts
                rest = self.decoder.unused_data or self._raw()
                if not rest:
                    return b""
                self.decoder = _decompressor(self.codec, first=False)
                self.stream_start, self.stream_out = self.offset - len(rest), 0
                data = self._feed(rest, size)
            else:
                zlib_style = hasattr(self.decoder, "unconsumed_tail")  # zlib hands unread input back
                hungry = not self.decoder.unconsumed_tail if zlib_style else self.decoder.needs_input
                more = self._raw() if hungry else b""
                data = self._feed(more, size)
                if hungry and not more and not data and not self.decoder.eof:
                    if self.stream_start and not self.stream_out:
                        raise self._trailing()
                    raise EOFError("truncated compressed stream: the file ends inside it")
            if data:
                self.stream_out += len(data)
                return data

    def _raw(self) -> bytes:
        data = self.raw.read(1 << 16)
        self.offset += len(data)
        return data

    def _feed(self, data: bytes, size: int) -> bytes:
        import lzma
        import zlib

        decoder = self.decoder
        try:
            if hasattr(decoder, "unconsumed_tail"):
                return decoder.decompress(decoder.unconsumed_tail + data, size)
            return decoder.decompress(data, size)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
            if self.stream_start and not self.stream_out:  # after a whole stream, bytes that start none
                raise self._trailing() from None
            raise OSError(f"{self.codec} data is corrupt ({exc})") from None

    def _trailing(self) -> TrailingData:
        return TrailingData(f"trailing data after the compressed stream (from byte {self.stream_start:,})")

    def close(self) -> None:
        self.raw.close()
        super().close()


def _zstd_end(fh: IO[bytes], size: int) -> int | None:
    """Where the file's whole zstd frames end, from frame and block headers alone (nothing is decompressed);
    None where the file ends inside a frame."""

    def take(count: int) -> bytes:
        data = fh.read(count)
        if len(data) < count:
            raise EOFError
        return data

    def skip(count: int) -> None:
        fh.seek(count, 1)
        if fh.tell() > size:
            raise EOFError

    end = 0
    try:
        while True:
            head = fh.read(4)
            magic = int.from_bytes(head, "little")
            if len(head) == 4 and magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: its length, then any bytes
                skip(int.from_bytes(take(4), "little"))
            elif len(head) == 4 and magic == 0xFD2FB528:
                descriptor = take(1)[0]
                single_segment = descriptor >> 5 & 1
                # window descriptor, dictionary id, content size: their lengths are in the descriptor
                skip(1 - single_segment + (0, 1, 2, 4)[descriptor & 3] + (single_segment, 2, 4, 8)[descriptor >> 6])
                while True:
                    block = int.from_bytes(take(3), "little")
                    skip(1 if block >> 1 & 3 == 1 else block >> 3)  # an RLE block holds one byte
                    if block & 1:  # the frame's last block
                        break
                if descriptor >> 2 & 1:
                    skip(4)  # content checksum
            else:
                return end
            end = fh.tell()
    except EOFError:
        return None


def trailing_data(fs: AbstractFileSystem, path: str) -> str | None:
    """The reason, when a compressed file holds bytes after its last whole stream; else None.

    Run when reading a compressed file failed, so that every codec's refusal
    reads the same (Arrow's own messages differ by codec).
    """
    codec = split_compression(path)[1]
    try:
        if codec == "zstd":
            size = fs.size(path)
            with fs.open(path, "rb") as fh:
                end = _zstd_end(fh, size)
            return f"trailing data after the compressed stream (from byte {end:,})" if end and end < size else None
        if codec:
            with _Streams(fs.open(path, "rb"), codec) as stream:
                while stream.read(1 << 20):
                    pass
    except TrailingData as exc:
        return str(exc)
    except (OSError, EOFError, ValueError):
        return None
    return None


def open_for_arrow(fs: AbstractFileSystem, path: str) -> tuple[IO[bytes], _QuoteCounter | None]:
    """The stream pyarrow's readers get, and whether its quotes are counted.

    Local files (plain, gzip, bz2, zstd) open as native Arrow streams: no reader
    thread ever calls into Python, which at interpreter exit (after an error) can
    abort the process. Anything else is a Python stream through fsspec, passing
    through a quote counter (remote CSV is not given the strict check up front).
    """
    import pyarrow as pa

    codec = split_compression(path)[1]
    if is_local(fs) and codec != "xz":
        return pa.input_stream(path, compression=codec), None
    counter = _QuoteCounter(open_stream(fs, path))
    return io.BufferedReader(counter, 1 << 20), counter


class _QuoteCounter(io.RawIOBase):
    """Passes bytes through, counting `"`: an odd count at the end means a quote may never close."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self.raw, self.quotes = raw, 0

    def readable(self) -> bool:
        return True

    # typeshed says any writable buffer, which has no slice assignment; io passes a bytearray (RawIOBase.read)
    # or a memoryview (BufferedReader).
    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        self.quotes += data.count(b'"')
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()
