"""Check that an ASCII-armored OpenPGP public key file holds exactly one primary key, with the expected
fingerprint; exit 1 naming the difference otherwise.

Used by the Dockerfile to pin MongoDB's APT signing key by fingerprint without installing GnuPG into the
image: a v4 fingerprint is SHA-1 over 0x99, the two-byte length and the body of the public-key packet
(RFC 4880, section 12.2). The standard library is enough, and a reviewer can read all of it here.

    python openpgp_fingerprint.py KEY.asc E58830201F7DD82CD808AA84160D26BB1785BA38
"""

from __future__ import annotations

import base64
import hashlib
import sys

PUBLIC_KEY_TAG = 6


def dearmor(text: str) -> bytes:
    lines = text.strip().splitlines()
    begin = lines.index("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    end = lines.index("-----END PGP PUBLIC KEY BLOCK-----")
    body = lines[begin + 1:end]
    body = body[body.index("") + 1:] if "" in body else body  # skip armor headers
    return base64.b64decode("".join(line for line in body if not line.startswith("=")))


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """Return (tag, body) of every packet (old and new formats, definite lengths as keys use)."""
    found, i = [], 0
    while i < len(data):
        head = data[i]
        if not head & 0x80:
            raise ValueError(f"not an OpenPGP packet at byte {i}")
        if head & 0x40:  # new format
            tag, i = head & 0x3F, i + 1
            first = data[i]
            if first < 192:
                length, i = first, i + 1
            elif first < 224:
                length, i = ((first - 192) << 8) + data[i + 1] + 192, i + 2
            elif first == 255:
                length, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
            else:
                raise ValueError("partial body lengths are not used by public keys")
        else:
            tag, size = (head >> 2) & 0x0F, [1, 2, 4][head & 0x03] if head & 0x03 != 3 else 0
            if not size:
                raise ValueError("indeterminate packet lengths are not used by public keys")
            length, i = int.from_bytes(data[i + 1:i + 1 + size], "big"), i + 1 + size
        found.append((tag, data[i:i + length]))
        i += length
    return found


def main(path: str, expected: str) -> int:
    with open(path, encoding="ascii") as f:
        keys = [body for tag, body in packets(dearmor(f.read())) if tag == PUBLIC_KEY_TAG]
    if len(keys) != 1:
        print(f"{path}: {len(keys)} primary keys, expected exactly 1", file=sys.stderr)
        return 1
    body = keys[0]
    fingerprint = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()  # noqa: S324
    if fingerprint != expected.replace(" ", "").upper():
        print(f"{path}: key fingerprint {fingerprint}, expected {expected}", file=sys.stderr)
        return 1
    print(f"{path}: OpenPGP key {fingerprint} as pinned")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
