"""Image movement: cold, base present, warm, beside the paper's save-and-load-everywhere.

Each repetition builds a new image on the first node (the example MPI image plus a layer
of random bytes, so no node holds it by chance) and measures, in the same run:

- mpidock cold: a 3-node job with the image only on the first node (run record per node)
- mpidock warm: the same job again
- mpidock base present: personalized images removed, the base left on every node
- paper: build the personalized image, `docker save` it into the shared directory, then
  `docker load` it on every other node in parallel, as the source paper did each job

Figures are medians over repetitions; ratios compare approaches within one run.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import docker

from launcher import images
from launcher.plan import Identity
from launcher.testbed.jobs import HOME, USER, docker_on, entry_wrap, sbatch
from launcher.testbed.layout import Node

NODES = (Node(1), Node(2), Node(3))
Figures = dict[str, dict[str, Any]]  # node -> {"seconds": s, "bytes": n, "path": how}


def fresh_image(megabytes: int) -> tuple[str, str]:
    """A new image on the first node only: (tag, image ID)."""
    tag = f"mpidock/bench-{secrets.token_hex(4)}"
    text = (
        "FROM mpidock/openmpi\nUSER 0\n"
        f"RUN head -c {megabytes * 1_000_000} /dev/urandom > /payload\n"
    )
    docker_on(NODES[0], "build", "-q", "-t", tag, "-", stdin=text)
    return tag, docker_on(NODES[0], "image", "inspect", "-f", "{{.Id}}", tag)


def job_figures(tag: str) -> Figures:
    """One 3-node job; each node's image phase from the run record."""
    job = sbatch(["-N", "3"], entry_wrap(["--image", tag], "true"), timeout=1800)
    if job.state != "COMPLETED":
        raise RuntimeError(f"job {job.job_id} {job.state}: {job.output[-2000:]}")
    record = job.record()
    nodes = {record["leader"]["node"]: record["leader"], **record["workers"]}
    return {
        name: {"seconds": n["image"]["seconds"], "bytes": n["image"]["bytes"],
               "path": n["image"]["path"]}
        for name, n in nodes.items()
    }  # fmt: skip


def drop_personal(image_id: str) -> None:
    for node in NODES:
        label = f"label=org.mpidock.personal.base={image_id}"
        for image in set(docker_on(node, "images", "-q", "--filter", label).split()):
            docker_on(node, "rmi", "-f", image)


def identity_of(user: str) -> Identity:
    entry = pwd.getpwnam(user)
    gids = sorted(set(os.getgrouplist(user, entry.pw_gid)) - {entry.pw_gid})
    return Identity(
        user=user, uid=entry.pw_uid, gid=entry.pw_gid, group=grp.getgrgid(entry.pw_gid).gr_name,
        groups=tuple((grp.getgrgid(g).gr_name, g) for g in gids), home=entry.pw_dir,
        shell=entry.pw_shell,
    )  # fmt: skip


def paper(image_id: str, shared: Path) -> Figures:
    """Per job: build the personalized image, save it whole into the shared directory,
    load it on every other node (in parallel), as the source paper did."""
    drop_personal(image_id)
    started = time.monotonic()
    with closing(docker.DockerClient(base_url=NODES[0].docker_url, timeout=1800)) as client:
        personal, _ = images.ensure_personal(client, image_id, identity_of(USER), NODES[0].name)
    archive = shared / f"paper-{secrets.token_hex(4)}.tar"
    docker_on(NODES[0], "save", "-o", str(archive), personal)
    built_and_saved = time.monotonic() - started
    size = archive.stat().st_size

    def load(node: Node) -> float:
        begin = time.monotonic()
        docker_on(node, "load", "-q", "-i", str(archive))
        return time.monotonic() - begin

    with ThreadPoolExecutor(len(NODES) - 1) as pool:
        loads = dict(zip(NODES[1:], pool.map(load, NODES[1:]), strict=True))
    archive.unlink()
    figures: Figures = {NODES[0].name: {"seconds": built_and_saved, "bytes": 0}}
    for node, seconds in loads.items():
        figures[node.name] = {"seconds": built_and_saved + seconds, "bytes": size}
    for figure in figures.values():
        figure["path"] = "+load" if figure["bytes"] else "build+save"
    return figures


def remove_everywhere(tag: str, image_id: str) -> None:
    drop_personal(image_id)
    for node in NODES:
        subprocess.run(["docker", "-H", node.docker_url, "rmi", "-f", image_id],
                       capture_output=True, check=False)  # fmt: skip
    for path in (HOME / ".mpidock" / "images").glob(f"{image_id.split(':')[-1]}*"):
        path.unlink()


def one_round(megabytes: int) -> dict[str, Figures]:
    tag, image_id = fresh_image(megabytes)
    try:
        cold = job_figures(tag)
        warm = job_figures(tag)
        drop_personal(image_id)
        base_present = job_figures(tag)
        return {"cold": cold, "base present": base_present, "warm": warm,
                "paper": paper(image_id, HOME)}  # fmt: skip
    finally:
        remove_everywhere(tag, image_id)


def medians(rounds: list[dict[str, Figures]]) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    for scenario in rounds[0]:
        out[scenario] = {}
        for node in rounds[0][scenario]:
            values = [r[scenario][node] for r in rounds]
            out[scenario][node] = {
                "seconds": round(statistics.median(v["seconds"] for v in values), 3),
                "bytes": int(statistics.median(v["bytes"] for v in values)),
                "path": values[0]["path"],
            }
    return out


def summary(figures: dict[str, Figures]) -> dict[str, Any]:
    """The goals of the image phase, judged from the medians."""

    def slowest(s: str) -> float:
        return float(max(f["seconds"] for f in figures[s].values()))

    warm = figures["warm"].values()
    return {
        "cold_over_paper": round(slowest("cold") / slowest("paper"), 3),
        "base_present_over_paper": round(slowest("base present") / slowest("paper"), 3),
        "warm_max_seconds": slowest("warm"),
        "warm_bytes": sum(int(f["bytes"]) for f in warm),
        "goal_warm_le_0.2s_and_0_bytes": slowest("warm") <= 0.2
        and all(f["bytes"] == 0 for f in warm),
        "goal_cold_at_most_one_load_per_node": all(
            figures["cold"][n]["bytes"] <= figures["paper"][n]["bytes"] * 1.05 + 1e6
            for n in figures["cold"]
        ),
    }


def run(*, quick: bool, repeat: int) -> dict[str, Any]:
    """Medians over `repeat` rounds, every round, and the goals judged."""
    megabytes = 20 if quick else 200
    rounds = [one_round(megabytes) for _ in range(repeat)]
    figures = medians(rounds)
    return {"payload_mb": megabytes, "median": figures, "summary": summary(figures),
            "rounds": rounds}  # fmt: skip
