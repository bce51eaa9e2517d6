#!/usr/bin/env python3
"""Refresh the vendored xterm.js files from the npm registry (maintainers only; stdlib only).

    python tools/refresh_xterm.py                        # latest xterm 6.x, latest fit addon
    python tools/refresh_xterm.py --xterm 6.0.0 --fit 0.11.0

The browser console ships xterm.js inside the wheel so that nothing needs node at install time.
This script downloads each package's tarball named by the registry, checks it against the
registry's ``integrity`` field (SHA-512, Subresource Integrity format) before reading anything
from it, copies the few files a page needs and the package's LICENSE into
``pyprocserv/_web/static/xterm/``, and rewrites ``VERSIONS`` there: one line per file with its
SHA-256, package, version and tarball URL (tests/test_webserve.py checks the files against it).
Files are read from the tarball by name, never extracted, so no path in it can escape.
Without a version it takes the newest release that is not a pre-release (6.x for xterm).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import sys
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
DEST = Path(__file__).resolve().parent.parent / "pyprocserv" / "_web" / "static" / "xterm"
XTERM_MAJOR = 6
# package -> {path in its tarball: name in DEST}
FILES = {
    "@xterm/xterm": {"package/lib/xterm.js": "xterm.js", "package/css/xterm.css": "xterm.css",
                     "package/LICENSE": "LICENSE.xterm"},
    "@xterm/addon-fit": {"package/lib/addon-fit.js": "addon-fit.js", "package/LICENSE": "LICENSE.addon-fit"},
}
HEADER = ("# xterm.js files vendored from the npm registry by tools/refresh_xterm.py: do not edit.\n"
          "# file  sha256  package  version  tarball\n")
STABLE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class RefreshError(Exception):
    """Something the registry sent is not what we can vendor; the message says what."""


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https registry)
        return response.read()


def newest(versions: list[str], major: int | None = None) -> str:
    """The highest stable ``X.Y.Z`` of ``versions`` (of ``major`` when given)."""
    stable = [tuple(map(int, m.groups())) for v in versions if (m := STABLE.match(v))]
    stable = [v for v in stable if major is None or v[0] == major]
    if not stable:
        raise RefreshError(f"no stable release{f' of major version {major}' if major else ''} in the registry")
    return ".".join(map(str, max(stable)))


def check_integrity(data: bytes, integrity: str, what: str) -> None:
    """Raise unless ``data`` matches the registry's SHA-512 ``integrity`` (``sha512-<base64>``)."""
    wanted = [item.split("-", 1)[1] for item in integrity.split() if item.startswith("sha512-")]
    if not wanted:
        raise RefreshError(f"{what}: the registry gives no sha512 integrity ({integrity!r})")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual not in wanted:
        raise RefreshError(f"{what}: the tarball's SHA-512 is {actual}, the registry says {wanted[0]}")


def files_of(tarball: bytes, wanted: dict[str, str], what: str) -> dict[str, bytes]:
    """{name in DEST: content} of the ``wanted`` regular files, read by name from ``tarball``."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for path, name in wanted.items():
            try:
                member = tar.getmember(path)
            except KeyError:
                raise RefreshError(f"{what}: the tarball has no {path}") from None
            if not member.isfile():
                raise RefreshError(f"{what}: {path} in the tarball is not a regular file")
            found[name] = tar.extractfile(member).read()
    return found


def versions_text(rows: list[tuple[str, str, str, str, str]]) -> str:
    """VERSIONS: HEADER, then ``file sha256 package version tarball`` per file, sorted by file."""
    return HEADER + "".join(" ".join(row) + "\n" for row in sorted(rows))


def parse_versions(text: str) -> dict[str, tuple[str, str, str, str]]:
    """file -> (sha256, package, version, tarball) of a VERSIONS text."""
    rows = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 5:
            raise RefreshError(f"VERSIONS line {number}: expected 5 fields, got {line!r}")
        rows[fields[0]] = tuple(fields[1:])
    return rows


def refresh(versions: dict[str, str | None], dest: Path, registry: str = REGISTRY) -> list[tuple[str, ...]]:
    """Download, verify and write every package's files into ``dest``; return VERSIONS' rows."""
    rows = []
    contents: dict[str, bytes] = {}
    for package, version in versions.items():
        meta = json.loads(fetch(f"{registry}/{urllib.parse.quote(package, safe='@')}"))
        if version is None:
            version = newest(list(meta["versions"]), XTERM_MAJOR if package == "@xterm/xterm" else None)
        if version not in meta["versions"]:
            raise RefreshError(f"{package} has no version {version} in the registry "
                               f"(newest stable: {newest(list(meta['versions']))})")
        dist = meta["versions"][version]["dist"]
        tarball = fetch(dist["tarball"])
        check_integrity(tarball, dist.get("integrity", ""), f"{package} {version}")
        for name, data in files_of(tarball, FILES[package], f"{package} {version}").items():
            contents[name] = data
            rows.append((name, hashlib.sha256(data).hexdigest(), package, version, dist["tarball"]))
        print(f"{package} {version}: {dist['tarball']} verified", file=sys.stderr)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.is_file() and old.name not in contents and old.name != "VERSIONS":
            old.unlink()  # a file the new versions no longer ship
    for name, data in contents.items():
        (dest / name).write_bytes(data)
    (dest / "VERSIONS").write_text(versions_text(rows))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--xterm", metavar="VERSION", help=f"@xterm/xterm version (default: newest {XTERM_MAJOR}.x)")
    parser.add_argument("--fit", metavar="VERSION", help="@xterm/addon-fit version (default: newest)")
    parser.add_argument("--dest", type=Path, default=DEST, help="where the files go (default: %(default)s)")
    parser.add_argument("--registry", default=REGISTRY)
    args = parser.parse_args()
    try:
        refresh({"@xterm/xterm": args.xterm, "@xterm/addon-fit": args.fit}, args.dest, args.registry)
    except (RefreshError, OSError) as exc:
        print(f"refresh_xterm: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.dest / 'VERSIONS'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
