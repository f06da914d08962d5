"""Run qemu-img so that it can read nothing but the volume it was given.

``python -m volume_image.pipeline.confine --cpu S --as BYTES --read-fd N
[--write-dir DIR] -- qemu-img ...`` sets the resource limits (as
oslo.concurrency's ``prlimit`` does), then a Landlock ruleset, then
executes the command.  Under the ruleset the process may read the system's
programs and libraries (``/usr``, ``/lib*``), the one open file it
inherits as fd ``N`` (the volume, which the caller opened once and
inspected), and write only beneath ``DIR``.  Whatever a qcow2 or vmdk
header says when qemu-img opens it, a backing file, an external data file
or an extent naming a host file cannot be opened: qemu-img fails.

Landlock needs Linux 5.13 or later with Landlock enabled.
:func:`available` tells; the caller falls back to a private copy of the
volume (:mod:`volume_image.pipeline.convert`).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import resource
import sys
from collections.abc import Sequence

__all__ = ["available", "command"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# ABI 1 rights (every kernel with Landlock has them)
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
_HANDLED = (1 << 13) - 1
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE
_WRITE = WRITE_FILE | READ_FILE | READ_DIR | MAKE_REG | REMOVE_FILE

#: what any dynamically linked program needs to start
_SYSTEM = ("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache")
#: character devices qemu-img may open, none of which holds data
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("allowed_access", ctypes.c_uint64),
        ("parent_fd", ctypes.c_int32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def available() -> bool:
    """Whether this kernel enforces Landlock for unprivileged processes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        abi = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _VERSION)
    except (OSError, AttributeError):
        return False
    return int(abi) >= 1


def command(
    argv: Sequence[str],
    *,
    cpu: int,
    address_space: int,
    read_fd: int,
    write_dir: str | None = None,
    landlock: bool = True,
) -> list[str]:
    """The command line that runs ``argv`` confined (``read_fd`` must be
    passed to the child, e.g. with ``pass_fds``); with ``landlock``
    false, under the resource limits only.
    """
    cmd = [
        sys.executable,
        # this file as a script, isolated: stdlib only, so the wrapper
        # costs no import of the package (nor its warnings) per qemu-img
        "-I",
        os.path.abspath(__file__),
        "--cpu",
        str(cpu),
        "--as",
        str(address_space),
        "--read-fd",
        str(read_fd),
    ]
    if write_dir is not None:
        cmd += ["--write-dir", write_dir]
    if not landlock:
        cmd.append("--no-landlock")
    return [*cmd, "--", *argv]


def _allow(libc: ctypes.CDLL, ruleset: int, fd: int, access: int) -> None:
    attr = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
    if libc.syscall(
        _ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(attr), 0
    ):
        raise OSError(ctypes.get_errno(), "landlock_add_rule")


def _allow_path(
    libc: ctypes.CDLL, ruleset: int, path: str, access: int
) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            access &= _FILE_RIGHTS
        _allow(libc, ruleset, fd, access)
    finally:
        os.close(fd)


def _restrict(read_fd: int, write_dir: str | None) -> None:
    libc = _libc()
    attr = _RulesetAttr(handled_access_fs=_HANDLED)
    ruleset = libc.syscall(
        _CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0
    )
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for path in _SYSTEM:
            _allow_path(libc, ruleset, path, EXECUTE | READ_FILE | READ_DIR)
        for path in _DEVICES:
            _allow_path(libc, ruleset, path, READ_FILE | WRITE_FILE)
        # the volume itself: this inode, whatever path names it now
        _allow(libc, ruleset, read_fd, READ_FILE)
        if write_dir is not None:
            _allow_path(libc, ruleset, write_dir, _WRITE)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
            raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS)")
        if libc.syscall(_RESTRICT_SELF, ruleset, 0):
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def main(argv: Sequence[str] | None = None) -> int:
    """Limit, confine, then execute the command; 126 if that fails."""
    parser = argparse.ArgumentParser(prog="confine")
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--as", dest="address_space", type=int, required=True)
    parser.add_argument("--read-fd", type=int, required=True)
    parser.add_argument("--write-dir")
    parser.add_argument("--no-landlock", action="store_true")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (args.cpu, args.cpu))
        resource.setrlimit(
            resource.RLIMIT_AS, (args.address_space, args.address_space)
        )
        if not args.no_landlock:
            _restrict(args.read_fd, args.write_dir)
        os.execvp(cmd[0], cmd)  # noqa: S606 - the caller's fixed argv
    except OSError as exc:
        print(f"confine: {cmd[0]}: {exc}", file=sys.stderr)
    return 126


if __name__ == "__main__":
    sys.exit(main())
