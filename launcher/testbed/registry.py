"""A site registry for the testbed: Debian's docker-registry on the host, on the bridge.

Nodes reach it at the host's bridge address; their daemons list it as an insecure
registry (plain HTTP on a private bridge), as a site registry inside a cluster would be.
"""

from __future__ import annotations

import urllib.request
from contextlib import suppress

from launcher.testbed import daemons
from launcher.testbed.layout import REGISTRY, RUN, STATE

PID = RUN / "registry.pid"
CONFIG = STATE / "registry.yml"
STORAGE = STATE / "registry"


def config_text() -> str:
    """The registry's configuration (pure): storage under the testbed's state, no auth."""
    return (
        "# Written by `mpidock testbed up`.\n"
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {STORAGE}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY}\n"
    )


def answers(timeout: float = 2) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a bridge address
    with suppress(OSError), direct.open(f"http://{REGISTRY}/v2/", timeout=timeout) as reply:
        return int(reply.status) == 200
    return False


def ensure_registry() -> bool:
    """The registry answers on the bridge; True when it had to be started."""
    if daemons.running(PID, "docker-registry") and answers():
        return False
    STORAGE.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(config_text())
    RUN.mkdir(parents=True, exist_ok=True)
    pid = daemons.spawn(["docker-registry", "serve", str(CONFIG)], "registry.log")
    PID.write_text(f"{pid}\n")
    daemons.wait_for(
        answers, timeout=30, what="the registry", hint="see /var/log/mpidock-testbed/registry.log"
    )
    return True
