"""The interpreters the cold-start bench runs: one venv per function holding only what that function
has on Lambda, the cems layer's requirements (shared/requirements.txt), the function's own
requirements.txt and the runtime's boto3 (bench/lambda-runtime.txt), under Python 3.13 as the
template's runtime is.

The project venv is no stand-in: it also holds moto, the SAM CLI and awscrt (which `import boto3`
loads there, about 100 ms that Lambda never spends), so its ratios flatter every function. A venv is
built once by `make bench` (never by `make test`) and kept under .cems/bench-venvs/ (gitignored),
named by a hash of its interpreter and requirements, so editing any of those files builds a new one.
Functions whose requirements are the same share a venv.

Python 3.13 is looked for in $CEMS_BENCH_PYTHON, then `python3.13` on PATH, then pyenv's versions.
Without it the venvs are built with this interpreter's base Python (fresh, not the project venv),
and Lambda.note says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cems" / "bench-venvs"
RUNTIME_REQUIREMENTS = ROOT / "bench" / "lambda-runtime.txt"
LAYER_REQUIREMENTS = ROOT / "shared" / "requirements.txt"
LAMBDA_VERSION = (3, 13)


@dataclass(frozen=True)
class Interpreter:
    """The Python the venvs are built from, and a sentence saying what it is for the bench's notes."""

    path: str
    version: str
    is_lambdas: bool

    @property
    def note(self) -> str:
        if self.is_lambdas:
            return f"Python {self.version}, as the template's python3.13 runtime"
        return (
            f"Python {self.version}: NO Python 3.13 was found ($CEMS_BENCH_PYTHON, python3.13 on PATH, "
            "pyenv), so the venvs use this older Python; the template's runtime is python3.13"
        )


def _version_of(python: str) -> tuple[int, int, str] | None:
    """(major, minor, full version) of an interpreter that runs, else None (pyenv's shims exist on
    PATH for versions that are not selected, and fail when run)."""
    try:
        done = subprocess.run(
            [python, "-c", "import platform, sys; print(*sys.version_info[:2], platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    major, minor, full = done.stdout.split()
    return int(major), int(minor), full


def find_interpreter() -> Interpreter:
    """Python 3.13 if this machine has one, else the base Python of the running interpreter."""
    pyenv_versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = [
        os.environ.get("CEMS_BENCH_PYTHON", ""),
        shutil.which("python3.13") or "",
        *sorted((str(p) for p in pyenv_versions.glob("3.13*/bin/python3.13")), reverse=True),
    ]
    for candidate in filter(None, candidates):
        found = _version_of(candidate)
        if found and found[:2] == LAMBDA_VERSION:
            return Interpreter(candidate, found[2], is_lambdas=True)
    base = getattr(sys, "_base_executable", sys.executable)
    found = _version_of(base)
    assert found is not None, f"{base} does not run"
    return Interpreter(base, found[2], is_lambdas=False)


def _requirement_files(function: str) -> list[Path]:
    return [RUNTIME_REQUIREMENTS, LAYER_REQUIREMENTS, ROOT / "functions" / function / "requirements.txt"]


def _requirements(function: str) -> list[str]:
    """The requirement lines that apply to `function` (comments and blank lines dropped), sorted."""
    lines: set[str] = set()
    for path in _requirement_files(function):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line := line.split("#", 1)[0].strip():
                lines.add(line)
    return sorted(lines)


def python_for(function: str, interpreter: Interpreter) -> str:
    """The python of `function`'s venv, built (once) if missing; its path."""
    requirements = _requirements(function)
    key = hashlib.sha256("\n".join([interpreter.version, *requirements]).encode()).hexdigest()[:12]
    home = CACHE / f"py{interpreter.version}-{key}"
    python = home / "bin" / "python"
    stamp = home / ".installed"
    if stamp.exists():
        return str(python)
    print(
        f"building the Lambda-like venv {home.relative_to(ROOT)} for {function} ...",
        file=sys.stderr,
        flush=True,
    )
    shutil.rmtree(home, ignore_errors=True)
    # The venv module of the chosen interpreter, not this one's: the venv must be of that Python.
    subprocess.run([interpreter.path, "-m", "venv", str(home)], check=True, timeout=300)
    listed = home / "requirements.txt"
    listed.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-qq", "--disable-pip-version-check", "-r", str(listed)],
        check=True,
        timeout=900,
    )
    stamp.touch()
    return str(python)


def clean() -> None:
    """Remove every cached venv (`make clean`)."""
    shutil.rmtree(CACHE, ignore_errors=True)
