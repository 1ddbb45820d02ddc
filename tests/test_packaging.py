"""fleet as a user installs it: a wheel built from a clean checkout holds everything the package reads at run time,
and installed in a fresh venv by a user who is not root it answers `--version`, `--help` and draws the TUI.

The slow test installs only the wheel it built (`--no-index --no-deps`); its dependencies come from the test
interpreter's own site-packages, added to the fresh venv's path by a `.pth` file behind its own site-packages, so
the suite does not download them from PyPI every run. pyproject.toml's lower bounds were tested separately, in a
venv of exactly those versions (listed in the README, "Installing the controller only").
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fleet
from fleet.cli import main

ROOT = Path(__file__).resolve().parent.parent
USER = "fleet-test"  # a system user with no home and no login shell, created once and left for later runs


def tracked_package_files() -> list[str]:
    """Every file of the `fleet` package that git tracks, as paths relative to the checkout."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "fleet"], capture_output=True, text=True, check=True)
    return out.stdout.split()


# --- fleet --version ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_distributions_version(flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def installed(name: str) -> str:
        asked.append(name)
        return "9.8.7"

    monkeypatch.setattr(importlib.metadata, "version", installed)
    out = CliRunner().invoke(main.app, [flag, "nodes"])  # eager: answered before the command is parsed
    assert (out.exit_code, out.output) == (0, "fleet 9.8.7\n")
    assert asked == ["fleet-orchestrator"]


def test_version_from_a_checkout_without_metadata_is_the_packages_own(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    out = CliRunner().invoke(main.app, ["--version"])
    assert (out.exit_code, out.output) == (0, f"fleet {fleet.__version__}\n")


# --- what the wheel carries --------------------------------------------------------------------------------------


def package_data_globs() -> list[str]:
    """pyproject.toml's package-data patterns, for every package (`"*"`) or for `fleet`."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    return [*data.get("*", []), *data.get("fleet", [])]


def test_package_data_takes_every_non_python_file_of_the_package() -> None:
    """A data file added under fleet/ that the package-data patterns miss would be left out of the wheel."""
    data = [f for f in tracked_package_files() if not f.endswith(".py")]
    assert "fleet/tui/app.tcss" in data and "fleet/py.typed" in data
    globs = package_data_globs()
    missed = [f for f in data if not any(fnmatch.fnmatch(Path(f).name, g) for g in globs)]
    assert missed == [], f"add their patterns to [tool.setuptools.package-data] in pyproject.toml: {missed}"


# --- a wheel from a clean checkout, installed by a non-root user ----------------------------------------------------


def as_user(user: str | None, argv: list[str], home: Path, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `user` (None: as this process's user) in `home`, with a minimal environment: nothing of
    this test's virtualenv, checkout or PYTHONPATH reaches it."""
    env = ["env", "-i", f"HOME={home}", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TERM=dumb"]
    prefix = ["runuser", "-u", user, "--"] if user else []
    return subprocess.run([*prefix, *env, *argv], cwd=home, capture_output=True, text=True, timeout=timeout)


def non_root_user() -> str | None:
    """The user to install as: USER (created when missing) when this runs as root, else None (already not root)."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        pytest.skip("running as root without runuser/useradd: no way to install as another user")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        # Another run may create it at the same time: what counts is that the user exists afterwards.
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       capture_output=True, check=False)
        pwd.getpwnam(USER)
    return USER


def python_for(user: str | None, home: Path) -> str:
    """An interpreter `user` may run with this one's major.minor version (the dependencies lent to the new venv
    hold compiled extensions for it): this one unless it lies where the user cannot reach (e.g. under /root)."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), shutil.which(f"python{want}"), f"/usr/bin/python{want}",
                      "/usr/bin/python3"):
        if candidate is None or not os.path.exists(candidate):
            continue
        probe = as_user(user, [candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"], home)
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return candidate
    pytest.skip(f"no Python {want} with venv that {user or 'this user'} may run")


@pytest.fixture
def user_dir() -> Iterator[tuple[str | None, Path]]:
    """A non-root user and a fresh directory it owns (not under pytest's tmp_path: that is private to root)."""
    user = non_root_user()
    home = Path(tempfile.mkdtemp(prefix="fleet-pkg-"))
    try:
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(home, pw.pw_uid, pw.pw_gid)
        yield user, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_wheel_from_a_clean_checkout_installs_and_runs_as_a_non_root_user(
        user_dir: tuple[str | None, Path], tmp_path: Path) -> None:
    user, home = user_dir
    started = time.monotonic()
    # A clean checkout: HEAD's tracked files only, nothing from this working tree's build or caches.
    src, dist = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True,
                             check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist),
                            str(src)], capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"fleet_orchestrator-{fleet.__version__}-py3-none-any.whl"

    names = set(zipfile.ZipFile(wheel).namelist())
    # Everything of the package HEAD tracks: its modules (the node scripts are in them) and data files.
    head = set(subprocess.run(["tar", "-t", "-C", str(src)], input=archive.stdout, capture_output=True,
                              check=True).stdout.decode().split())
    tracked = {n for n in head if n.startswith("fleet/") and not n.endswith("/")}
    assert {"fleet/tui/app.tcss", "fleet/py.typed", "fleet/node/facts.py", "fleet/node/haproxy/scripts.py",
            "fleet/node/paths.py"} <= tracked
    assert tracked - names == set()

    # Install as the user, in a venv of its own, with no index: the wheel alone.
    shutil.copy(wheel, home / wheel.name)
    shutil.copy(ROOT / "tests" / "tui_first_screen.py", home / "tui_first_screen.py")
    if user is not None:
        pw = pwd.getpwnam(user)
        for f in (home / wheel.name, home / "tui_first_screen.py"):
            os.chown(f, pw.pw_uid, pw.pw_gid)
    python, venv = python_for(user, home), home / "venv"
    made = as_user(user, [python, "-m", "venv", str(venv)], home)
    assert made.returncode == 0, made.stderr
    installed = as_user(user, [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
                               "--no-deps", str(home / wheel.name)], home)
    assert installed.returncode == 0, installed.stderr
    py = str(venv / "bin" / "python")
    site = as_user(user, [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], home).stdout.strip()
    # Dependencies lent from this interpreter's site-packages, after the venv's own (see the module docstring).
    lent = Path(site) / "zz_fleet_test_dependencies.pth"
    lent.write_text(sysconfig.get_paths()["purelib"] + "\n")
    os.chmod(lent, 0o644)

    where = as_user(user, [py, "-c", "import fleet; print(fleet.__file__)"], home)
    assert where.stdout.startswith(f"{venv}/"), where.stdout + where.stderr  # the wheel's, not the checkout's

    fleet_cmd = str(venv / "bin" / "fleet")
    version = as_user(user, [fleet_cmd, "--version"], home)
    assert (version.returncode, version.stdout) == (0, f"fleet {fleet.__version__}\n"), version.stderr
    helped = as_user(user, [fleet_cmd, "--help"], home)
    assert helped.returncode == 0, helped.stderr
    assert "Usage: fleet" in helped.stdout and "ui" in helped.stdout
    screen = as_user(user, [py, str(home / "tui_first_screen.py")], home)
    assert screen.returncode == 0, screen.stderr
    assert "0/0 nodes ready" in screen.stdout, screen.stdout
    print(f"wheel {wheel.stat().st_size} bytes; built, installed and run in {time.monotonic() - started:.1f}s")
