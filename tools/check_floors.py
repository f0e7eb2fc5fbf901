"""Install the lowest versions ``pyproject.toml`` allows in a throwaway venv and run the tests.

    python tools/check_floors.py [--keep torch,torchvision] [--pytest-args "-m 'not slow'"]

Every ``name>=X`` of the core dependencies and the dev and serve extras (read from the installed
maskclf's metadata, i.e. ``pyproject.toml``: run it from the project's venv) is pinned to
``X`` through a constraints file, so a floor lower than what the code uses fails here
instead of on a user's machine. ``--keep`` leaves the named packages unpinned (the newest
that fits), e.g. torch when the disk cannot hold a second build of it. Prints the pinned
versions, the install time and the test result; exits with pytest's status.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import requires
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def floors(keep: set[str]) -> dict[str, str]:
    """name -> lowest allowed version of every requirement with a ``>=`` floor."""
    requirements = [r for r in requires("maskclf") or []  # as installed from pyproject.toml
                    if "extra ==" not in r or any(f'extra == "{extra}"' in r
                                                  for extra in ("dev", "serve"))]
    pinned = {}
    for requirement in requirements:
        match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*[^>]*>=\s*([0-9][^,;\s]*)",
                         requirement)
        if match and match.group(1).lower() not in keep:
            pinned[match.group(1).lower()] = lowest_release(match.group(1), match.group(3))
    return pinned


def lowest_release(name: str, floor: str) -> str:
    """The oldest version of ``name`` on the package index that is >= ``floor`` (``timm>=1.0``
    is 1.0.3 if no 1.0.0 was released)."""
    listing = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name],
                             capture_output=True, text=True, check=True).stdout
    versions = [Version(v) for v in re.search(r"Available versions: (.*)", listing)
                .group(1).split(", ")]
    return str(min(v for v in versions if v >= Version(floor) and not v.is_prerelease))


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", shlex.join(command), flush=True)
    return subprocess.run(command, check=False, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default="", help="comma-separated packages left unpinned")
    parser.add_argument("--pytest-args", default="-q -x -m 'not slow'")
    args = parser.parse_args()
    pinned = floors({name.strip().lower() for name in args.keep.split(",") if name.strip()})
    with tempfile.TemporaryDirectory(prefix="maskclf-floors-") as tmp:
        venv, constraints = Path(tmp) / "venv", Path(tmp) / "floors.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in pinned.items()))
        print("pinned:", ", ".join(f"{n}=={v}" for n, v in pinned.items()))
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        started = time.monotonic()
        install = run([python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]",
                       "-c", str(constraints)])
        print(f"install: exit {install.returncode} in {time.monotonic() - started:.0f}s")
        if install.returncode != 0:
            sys.exit(install.returncode)
        run([python, "-m", "pip", "list", "--format=freeze"], stdout=sys.stdout)
        tests = run([python, "-m", "pytest", *shlex.split(args.pytest_args)], cwd=ROOT)
        print(f"tests at the floors: exit {tests.returncode}")
        sys.exit(tests.returncode)


if __name__ == "__main__":
    main()
