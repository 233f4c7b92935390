"""`mpidock images [prune]`: this node's cached images and the shared store's archives."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path

import docker

from launcher import cache, config, engine_command, engines, image_import

STORE_HELP = "the shared image store (default: the image_store setting, see mpidock config)"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("images", help="list cached personalized images and archives; prune them")
    p.add_argument("--image-store", metavar="DIR", help=STORE_HELP)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    engine_command.add_option(p)
    verbs = p.add_subparsers(dest="verb", metavar="{prune,import}")
    prune = verbs.add_parser("prune", help="remove those unused for longer than --older-than")
    prune.add_argument("--older-than", required=True, metavar="DUR", help="e.g. 30m, 12h, 7d or 2w")
    prune.add_argument("--dry-run", action="store_true", help="print what would go; remove nothing")
    # SUPPRESS: without a value here, the one given before `prune` stands.
    prune.add_argument("--image-store", metavar="DIR", default=argparse.SUPPRESS, help=STORE_HELP)
    engine_command.add_option(prune, keep_earlier=True)
    image_import.add_parser(verbs)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.verb == "import":
        return image_import.run(args)
    older = cache.parse_duration(args.older_than) if args.verb == "prune" else None
    store = Path(config.for_command(args).image_store)
    node = socket.gethostname()
    with engine_command.select(args) as engine:
        client = engine.client()
        now = time.time()
        rows = _node_rows(engine, client) + cache.list_store(store, now)
        if older is None:
            return _list(rows, node, store, now, as_json=args.json)
        return _prune(client, rows, args.older_than, older, now, dry_run=args.dry_run)


def _node_rows(engine: engines.Engine, client: docker.DockerClient) -> list[cache.Row]:
    """The node's own images; those an engine reads in place from a shared store are the
    store's, not the node's, and never pruned here."""
    rows = cache.list_images(client)
    return [r for r in rows if not (engine.shared_image(r.name) or engine.shared_image(r.image))]


def _list(
    rows: list[cache.Row], node: str, store: os.PathLike[str], now: float, *, as_json: bool
) -> int:
    if as_json:
        data = {"node": node, "store": os.fspath(store), "rows": cache.rows_json(rows, now)}
        print(json.dumps(data, indent=2))
    elif rows:
        print(cache.table(rows, now))
    else:
        print(f"no cached images on {node} and no archives in {os.fspath(store)}")
    return 0


def _prune(
    client: docker.DockerClient,
    rows: list[cache.Row],
    text: str,
    older: float,
    now: float,
    *,
    dry_run: bool,
) -> int:
    remove = cache.remover(client, now - older, now, dry_run=dry_run)
    outcomes = cache.prune(cache.stale(rows, older, now), remove)
    print(cache.prune_report(outcomes, text))
    return 1 if any(o.status == "failed" for o in outcomes) else 0
