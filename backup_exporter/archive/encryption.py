"""age encryption of archive streams (pyrage), in bounded memory, and the keys it needs.

pyrage offers only whole-stream calls that pull from a reader and push into a writer (``encrypt_io`` /
``decrypt_io``), while the runner pushes archive bytes into a sink and the archive reader pulls bytes from
a stream. So each direction runs pyrage in a thread of its own, joined to the caller by a small bounded
pipe. The pipe is hand-written: neither pyrage nor the standard library has a bounded byte pipe between two
threads that hands one side's failure to the other (``queue.Queue`` bounds items, not bytes, and cannot
wake a blocked producer when the consumer dies).

Only public keys (recipients) are needed to write a backup. Identities (private keys) are read here, at use
time, from a file or the environment; they are never logged, stored, or put in a message: messages name a
key by its fingerprint, a short sha256 of its *public* key.
"""

from __future__ import annotations

import collections
import hashlib
import io
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyrage
from pyrage import x25519

from backup_exporter.core.errors import (
    BackupError,
    ConfigError,
    DecryptionFailed,
    ExitCode,
    Interrupted,
    WrongIdentity,
)

FORMAT = "age"  # the value of the blob metadata entry METADATA_KEY
# Not "encrypted": Azure's blob listing returns a metadata entry of that name as the XML attribute
# Metadata/@Encrypted, and the SDK drops it from the listed metadata.
METADATA_KEY = "encryption"
AGE_MAGIC = b"age-encryption.org/v1\n"  # how every binary (not armored) age file starts
ENV_IDENTITY = "BACKUP_AGE_IDENTITY"  # the identity's text itself (e.g. from a Kubernetes secret)
ENV_IDENTITY_FILE = "BACKUP_AGE_IDENTITY_FILE"
PIPE_LIMIT = 4 << 20  # plaintext or ciphertext bytes held between the two threads of one stream
_JOIN_SECONDS = 60.0


def fingerprint(recipient: str) -> str:
    """Return the short name of a public key: the first 16 hex digits of sha256 of its text."""
    return hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def parse_recipient(text: str) -> x25519.Recipient:
    """Return the age X25519 recipient `text` ('age1...'). Raises ValueError saying why it is not one."""
    text = text.strip()
    if not text.startswith("age1"):
        raise ValueError(f"'{text[:20]}' is not an age public key (they start with 'age1')")
    try:
        return x25519.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise ValueError(f"'{text[:20]}...' is not a valid age public key: {exc}") from None


def recipients_in(text: str) -> list[str]:
    """Return the recipients of a recipients file's text: one per line, '#' comments and blank lines ignored."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def parse_identities(text: str, where: str) -> list[x25519.Identity]:
    """Return the age identities in an identity file's text (``AGE-SECRET-KEY-1...`` lines, '#' comments).

    Raises ConfigError naming `where` and the line number, never the line itself.
    """
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ConfigError([f"{where}: line {number} is not an age identity (expected a line "
                               f"AGE-SECRET-KEY-1..., as age-keygen writes)"]) from None
    if not identities:
        raise ConfigError([f"{where}: holds no age identity (expected a line AGE-SECRET-KEY-1..., as "
                           f"age-keygen writes)"])
    return identities


def load_identities(identity_file: Path | None, env: Mapping[str, str]) -> list[x25519.Identity] | None:
    """Return the identities to decrypt with: from `identity_file` when given, else the file named by
    $BACKUP_AGE_IDENTITY_FILE, else the text of $BACKUP_AGE_IDENTITY; None when none of them is set.

    Raises ConfigError when the file cannot be read or holds no valid identity.
    """
    path = identity_file or (Path(env[ENV_IDENTITY_FILE]) if env.get(ENV_IDENTITY_FILE) else None)
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError([f"cannot read the age identity file {path}: {reason}"]) from None
        return parse_identities(text, f"age identity file {path}")
    if env.get(ENV_IDENTITY):
        return parse_identities(env[ENV_IDENTITY], f"environment variable {ENV_IDENTITY}")
    return None


def identity_fingerprints(identities: Sequence[x25519.Identity]) -> list[str]:
    """Return the fingerprints of the identities' public keys (what the blob metadata records)."""
    return [fingerprint(str(identity.to_public())) for identity in identities]


# ------------------------------------------------------------------------------------------ the pipe


class _Aborted(Exception):
    """The other side of a pipe gave up; not an OSError, so no reader mistakes it for corrupt data."""


class _Pipe:
    """A bounded byte pipe from one producer thread to one consumer thread.

    `put` blocks while PIPE_LIMIT bytes wait (a single larger chunk is let through when the pipe is empty,
    so a big write cannot deadlock); `close` marks the end; `fail` makes both sides raise at once.
    """

    def __init__(self, limit: int = PIPE_LIMIT) -> None:
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._held = 0
        self._offset = 0  # bytes of the first chunk already handed out
        self._closed = False
        self._failure: BaseException | None = None
        self._cond = threading.Condition()

    def put(self, data: bytes) -> None:
        with self._cond:
            while self._failure is None and self._held and self._held + len(data) > self._limit:
                self._cond.wait()
            if self._failure is not None:
                raise _Aborted() from None
            self._chunks.append(data)
            self._held += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, failure: BaseException) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = failure
            self._chunks.clear()
            self._held = 0
            self._cond.notify_all()

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def _wait_for_data(self) -> bool:
        """Wait until data, the end, or a failure; return False at the end. Raises the failure."""
        while not self._chunks and not self._closed and self._failure is None:
            self._cond.wait()
        if self._failure is not None:
            raise self._failure
        return bool(self._chunks)

    def get(self) -> bytes:
        """Return the next chunk (b'' at the end). Raises the failure when the pipe failed."""
        with self._cond:
            if not self._wait_for_data():
                return b""
            chunk = self._chunks.popleft()[self._offset:]
            self._offset = 0
            self._held -= len(chunk)
            self._cond.notify_all()
            return chunk

    def readinto(self, buffer: Any) -> int:
        with self._cond:
            if not self._wait_for_data():
                return 0
            target = memoryview(buffer).cast("B")
            first = self._chunks[0]
            n = min(len(target), len(first) - self._offset)
            target[:n] = first[self._offset:self._offset + n]
            self._offset += n
            if self._offset == len(first):
                self._chunks.popleft()
                self._offset = 0
            self._held -= n
            self._cond.notify_all()
            return n


class _PipeReader(io.BufferedIOBase):
    """The consumer end of a pipe as the readable file pyrage wants."""

    def __init__(self, pipe: _Pipe) -> None:
        super().__init__()
        self._pipe = pipe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._pipe.readinto(buffer)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(self._pipe.get, b""))
        buffer = bytearray(size)
        n = self._pipe.readinto(buffer)
        return bytes(buffer[:n])

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)


class _Writer(io.BufferedIOBase):
    """A writable file for pyrage over a callable; keeps the first exception the callable raised, which
    pyrage would otherwise flatten into an EncryptError/DecryptError string."""

    def __init__(self, write: Any) -> None:
        super().__init__()
        self._write = write
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            self._write(bytes(data))
        except BaseException as exc:
            self.error = self.error or exc
            raise
        return len(data)


class _Reader(io.BufferedIOBase):
    """A readable file for pyrage over any stream with read(); keeps the first exception it raised."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return bytes(self._stream.read(-1 if size is None else size))
        except BaseException as exc:
            self.error = self.error or exc
            raise

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        data = self.read(len(target))
        target[:len(data)] = data
        return len(data)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)


# ---------------------------------------------------------------------------------------- encrypting


class EncryptingWriter:
    """A sink that age-encrypts everything written to it for `recipients` and writes the ciphertext to
    `target` from a thread of its own, hashing and counting the ciphertext (what storage holds).

    Call finish() after the last write, or abort() to give up. Holds at most PIPE_LIMIT bytes of plaintext
    plus one age chunk (64 KiB) of ciphertext.
    """

    def __init__(self, target: Any, recipients: Sequence[str]) -> None:
        if not recipients:
            # The configuration refuses this already; writing a plain archive here would be the worst outcome.
            raise BackupError("encryption is configured without any recipient: refusing to write the backup",
                              ExitCode.CONFIG)
        self.recipients = tuple(recipients)
        try:
            self._keys = [parse_recipient(r) for r in self.recipients]
        except ValueError as exc:
            raise BackupError(f"encryption: {exc}: refusing to write the backup", ExitCode.CONFIG) from None
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._pipe = _Pipe()
        self._out = _Writer(self._store)
        self._thread = threading.Thread(target=self._encrypt, name="age-encrypt", daemon=True)
        self._done = False
        self._thread.start()

    def _store(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)
        self._target.write(data)

    def _encrypt(self) -> None:
        try:
            pyrage.encrypt_io(_PipeReader(self._pipe), self._out, self._keys)
        except BaseException as exc:
            # The target's own error (e.g. StorageError) says more than pyrage's flattened copy of it.
            self._pipe.fail(self._out.error or exc)

    def write(self, data: bytes) -> None:
        """Encrypt `data` (blocks while the pipe is full). Raises what made encryption or the target fail."""
        if not data:
            return
        try:
            self._pipe.put(bytes(data))
        except _Aborted:
            raise self._error() from None

    def finish(self) -> tuple[str, int]:
        """End the age stream and wait until all of it reached the target; return (sha256 hex, size) of the
        ciphertext. Raises what made encryption or the target fail (StorageError, BackupError)."""
        self._pipe.close()
        self._thread.join()
        self._done = True
        if self._pipe.failure is not None:
            raise self._error()
        return self.sha256.hexdigest(), self.size

    def abort(self) -> None:
        """Stop encrypting and drop what is pending; never raises."""
        if not self._done:
            self._pipe.fail(_Aborted())
            self._thread.join(_JOIN_SECONDS)
            self._done = True

    def metadata(self) -> dict[str, str]:
        """Return the blob metadata that says the backup is age-encrypted, and for which public keys."""
        return {METADATA_KEY: FORMAT, "recipients": ",".join(fingerprint(r) for r in self.recipients)}

    def _error(self) -> BaseException:
        failure = self._pipe.failure
        if isinstance(failure, BackupError):
            return failure
        return BackupError(f"age encryption failed: {type(failure).__name__}: {failure}", ExitCode.SOFTWARE)


# ---------------------------------------------------------------------------------------- decrypting


def decrypted_chunks(source: Any, identities: Sequence[x25519.Identity], *, name: str,
                     recipients: Sequence[str] = ()) -> Iterator[bytes]:
    """Yield the plaintext of the age stream read from `source` (a readable, e.g. a BlobReader), decrypted
    in a thread of its own with at most PIPE_LIMIT bytes waiting. Every chunk yielded was authenticated.

    `name` and `recipients` (the fingerprints in the blob's metadata) only word the errors. Raises
    WrongIdentity when no identity opens the stream, DecryptionFailed when its bytes were changed (or are
    not age), and whatever reading `source` raised (StorageError, Interrupted). Closing the generator early
    stops the thread.
    """
    pipe = _Pipe()
    reader = _Reader(source)
    out = _Writer(pipe.put)

    def decrypt() -> None:
        try:
            pyrage.decrypt_io(reader, out, list(identities))
        except BaseException as exc:
            pipe.fail(reader.error or _decrypt_error(exc, name, identities, recipients))
        else:
            pipe.close()

    thread = threading.Thread(target=decrypt, name="age-decrypt", daemon=True)
    thread.start()
    try:
        while chunk := pipe.get():
            yield chunk
    finally:
        pipe.fail(_Aborted())  # wakes the thread if it waits to put; harmless after the end
        thread.join(_JOIN_SECONDS)


def _decrypt_error(exc: BaseException, name: str, identities: Sequence[x25519.Identity],
                   recipients: Sequence[str]) -> BackupError:
    if isinstance(exc, Interrupted | BackupError):
        return exc
    text = str(exc)
    if isinstance(exc, pyrage.DecryptError) and "no matching keys" in text.lower():
        given = ", ".join(identity_fingerprints(identities))
        meant = f"for {', '.join(recipients)}" if recipients else "for other keys"
        return WrongIdentity(f"backup {name} is encrypted {meant}; the identity given (public key {given}) "
                             f"is not one of its recipients")
    return DecryptionFailed(f"backup {name} does not decrypt: its encrypted bytes were changed or damaged "
                            f"after they were written, or are not age data (age: {text})")
