"""The image's HEALTHCHECK: what "healthy" means depends on the container's WATCH_ROLE.

- ``webserver``: ``/server_info`` answers on the webserver port;
- ``daemon``: ``dagster-daemon liveness-check`` (every daemon heartbeat is recent);
- ``code-server``: the gRPC code server answers its health check;
- anything else (a run worker): the environment imports.
Exit 0 healthy, 1 unhealthy, with one line saying why.
"""

import os
import subprocess
import sys
import urllib.request


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")


# Starting a dagster CLI takes seconds of CPU; on a busy host (2 cores, load 13) the daemon's
# liveness check took 33 s, so both limits leave room for that (the HEALTHCHECK allows 60 s).
_CHECK_TIMEOUT_S = 50


def _run(*cmd: str) -> int:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _say(f"{cmd[0]} gave no answer within {_CHECK_TIMEOUT_S} s")
        return 1
    if proc.returncode:
        _say((proc.stdout + proc.stderr).strip()[-500:] or f"{cmd[0]} failed")
    return 1 if proc.returncode else 0


def main() -> int:
    """Check this container's role; return the exit code."""
    role = os.environ.get("WATCH_ROLE", "")
    if role == "webserver":
        port = os.environ.get("WATCH_WEBSERVER_PORT", "3000")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=10) as r:
                return 0 if r.status == 200 else 1
        except OSError as exc:
            _say(f"webserver not answering on port {port}: {exc}")
            return 1
    if role == "daemon":
        return _run("dagster-daemon", "liveness-check")
    if role == "code-server":
        port = os.environ.get("WATCH_CODE_SERVER_PORT", "4000")
        return _run("dagster", "api", "grpc-health-check", "--host", "127.0.0.1", "--port", port)
    try:
        import watch_pipeline  # noqa: F401
    except ImportError as exc:
        _say(f"watch_pipeline does not import: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
