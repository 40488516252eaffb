#!/usr/bin/env python3
"""Check a Fleet Console audit export offline, without the console.

    python verify_export.py audit-export.zip [--public-key BASE64]
    python verify_export.py unpacked-dir/    [--public-key BASE64]

Checks, and names the first thing wrong:
  1. manifest.sig is the console's Ed25519 signature of manifest.json (with --public-key: the key
     shown on the console's audit page, obtained independently; without it, the key inside the
     manifest is used and the output says so);
  2. every file listed has the listed SHA-256 and size, and nothing else is in the bundle;
  3. events.jsonl is an intact chain: numbers without gaps, each event's hash recomputed from its
     content, each prev_hash the hash before it, from the manifest's anchor to its last hash;
  4. events.csv holds the same events (same numbers and hashes, in order).
Needs Python 3.9+ and the `cryptography` package. Exit status 0 when intact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

FORMAT = "fleet-console-audit-export/1"


class Broken(Exception):
    pass


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(content: dict) -> str:
    return hashlib.sha256((content["prev_hash"] + canonical(content)).encode()).hexdigest()


class Bundle:
    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        self.dir = None if self.zip else path

    def names(self) -> set[str]:
        if self.zip:
            return set(self.zip.namelist())
        return {p.name for p in self.dir.iterdir() if p.is_file()}

    def open(self, name: str):
        if name not in self.names():
            raise Broken(f"{name} is missing from the bundle")
        return self.zip.open(name) if self.zip else open(self.dir / name, "rb")


def check_signature(bundle: Bundle, public_key: str | None) -> tuple[dict, str]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    with bundle.open("manifest.json") as f:
        body = f.read()
    with bundle.open("manifest.sig") as f:
        signature = base64.b64decode(f.read().strip())
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise Broken(f"manifest.json is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise Broken(f"manifest.json: unknown format {manifest.get('format')!r}")
    key_b64 = public_key or manifest.get("public_key", "")
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(key_b64)).verify(signature, body)
    except (InvalidSignature, ValueError):
        raise Broken("manifest.sig does not verify: the manifest was altered or signed by another key") from None
    how = "the key given" if public_key else "the key inside the manifest (pass --public-key to check it independently)"
    return manifest, how


def check_files(bundle: Bundle, manifest: dict) -> None:
    listed = manifest.get("files", {})
    extra = bundle.names() - set(listed) - {"manifest.json", "manifest.sig"}
    if extra:
        raise Broken(f"files not in the manifest: {', '.join(sorted(extra))}")
    for name, facts in listed.items():
        sha, size = hashlib.sha256(), 0
        with bundle.open(name) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
                size += len(chunk)
        if sha.hexdigest() != facts["sha256"] or size != facts["bytes"]:
            raise Broken(f"{name} differs from the manifest (SHA-256 or size): the file was modified")


def check_chain(bundle: Bundle, manifest: dict) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []
    prev_seq, prev_hash = None, manifest.get("anchor_prev_hash")
    with bundle.open("events.jsonl") as f:
        for number, line in enumerate(io.TextIOWrapper(f, encoding="utf-8"), 1):
            try:
                event = json.loads(line)
            except ValueError:
                raise Broken(f"events.jsonl line {number} is not JSON") from None
            stored = event.pop("hash", None)
            seq = event.get("seq")
            if prev_seq is not None and seq != prev_seq + 1:
                raise Broken(f"event {seq}: expected event {prev_seq + 1} (events missing or out of order)")
            if event.get("prev_hash") != prev_hash:
                raise Broken(f"event {seq}: prev_hash does not match the event before it (removed or inserted)")
            if event_hash(event) != stored:
                raise Broken(f"event {seq}: content does not match its hash (the event was altered)")
            seen.append((seq, stored))
            prev_seq, prev_hash = seq, stored
    if len(seen) != manifest.get("events"):
        raise Broken(f"events.jsonl holds {len(seen)} events, the manifest says {manifest.get('events')}")
    if seen and (seen[0][0], seen[-1][0], seen[-1][1]) != (
        manifest["first_seq"],
        manifest["last_seq"],
        manifest["last_hash"],
    ):
        raise Broken("events.jsonl does not start and end where the manifest says")
    return seen


def check_csv(bundle: Bundle, chain: list[tuple[int, str]]) -> None:
    with bundle.open("events.csv") as f:
        rows = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline=""))
        for number, row in enumerate(rows):
            if number >= len(chain) or (int(row["seq"]), row["hash"]) != chain[number]:
                raise Broken(f"events.csv row {number + 1} differs from events.jsonl")
        if rows.line_num - 1 != len(chain):
            raise Broken(f"events.csv holds {rows.line_num - 1} events, events.jsonl {len(chain)}")


def verify(path: Path, public_key: str | None = None) -> str:
    bundle = Bundle(path)
    manifest, how = check_signature(bundle, public_key)
    check_files(bundle, manifest)
    chain = check_chain(bundle, manifest)
    check_csv(bundle, chain)
    span = f"events {chain[0][0]}..{chain[-1][0]}" if chain else "no events (an empty period)"
    return (
        f"OK: {len(chain)} {span}, chain intact, every file as listed; signature verified with {how} "
        f"(fingerprint {manifest.get('key_fingerprint')})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the export's .zip, or a directory it was unpacked into")
    parser.add_argument("--public-key", help="the console's public key (base64), as shown on its audit page")
    args = parser.parse_args()
    try:
        print(verify(args.bundle, args.public_key))
        return 0
    except (Broken, zipfile.BadZipFile, KeyError) as exc:
        print(f"BROKEN: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
