"""Which Ray a command runs on: the cluster it is told to join, else a private local Ray of its own.

``ray.init()`` without an address attaches to the latest cluster that ``ray start`` left on the machine (Ray's
documented rule): on a shared lab server that is a colleague's cluster, and in a test suite another test's.
So vaanet joins a cluster only when ``--address`` or ``RAY_ADDRESS`` names one; otherwise it starts a new
local Ray (``address="local"``), which ends with the command.

A local Ray has token authentication on (Ray's default), with the token in ``~/.ray/auth_token`` (or
``RAY_AUTH_TOKEN_PATH``). Ray writes that file with the default umask (0644): anyone who can read it can run
code as the user. :func:`private_token` creates it at mode 600, or narrows an existing one, before Ray starts.
What a local Ray listens on (Ray 2.60): its gRPC servers (GCS, raylet, workers) bind every interface, which
Ray does not let a caller restrict, guarded by that token; the dashboard is off unless asked for, and then,
like the dashboard agent's HTTP port, on loopback (and the node's address for the agent).
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def token_path() -> Path:
    """The token file Ray reads: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def private_token() -> Path | None:
    """Make sure the token a local Ray will use is readable by this user alone: create the token file at
    mode 600 when missing, narrow it to 600 when others can read it. Returns the file, or None when no
    file is involved (token in ``RAY_AUTH_TOKEN``, or token authentication disabled by ``RAY_AUTH_MODE``)."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return None
    path = token_path()
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            if path.stat().st_uid != os.getuid():
                raise PermissionError(f"{path} (the Ray token) is readable by others and owned by another user; "
                                      "remove it or set RAY_AUTH_TOKEN_PATH to a file of your own")
            path.chmod(mode & 0o700)
        return path
    if not os.environ.get("RAY_AUTH_TOKEN_PATH"):  # ~/.ray: created private, as ssh does ~/.ssh
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # what Ray's own generator writes: 256 bits as hex
    return path


def init_ray(address: str | None = None, **kwargs) -> str:
    """``ray.init`` on the cluster at ``address`` or ``RAY_ADDRESS``; without either, on a new private local
    Ray (never one that is already running). Returns "local" or the address joined."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        private_token()
        ray.init(address="local", **kwargs)
        return "local"
    ray.init(address=address, **kwargs)
    return address
