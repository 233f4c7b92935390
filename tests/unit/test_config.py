"""Configuration without Docker or Slurm: layers, sources, errors with lines, templates."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent

import pytest

from launcher import config, config_command
from launcher.cli import parse
from launcher.config import Config, ConfigError, Template, key_line
from launcher.errors import UsageError
from launcher.identity import current_identity
from launcher.plan import Options
from launcher.submit import own_parser

Golden = Callable[[str, str], None]
HOME = "/home/ada"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """The site and user files, not yet written."""
    return tmp_path / "site.toml", tmp_path / "user.toml"


@pytest.fixture
def env(files: tuple[Path, Path]) -> dict[str, str]:
    return {"MPIDOCK_SITE_CONFIG": str(files[0]), "MPIDOCK_USER_CONFIG": str(files[1])}


def write(path: Path, text: str) -> str:
    path.write_text(dedent(text).lstrip("\n"))
    return str(path)


# --- layers and sources --------------------------------------------------------------------


def test_without_files_every_value_is_the_default(env: dict[str, str]) -> None:
    cfg = config.load(env, {}, HOME)
    files = ((env["MPIDOCK_SITE_CONFIG"], False), (env["MPIDOCK_USER_CONFIG"], False))
    assert cfg == Config(
        job_root="/home/ada/.mpidock/jobs", image_store="/home/ada/.mpidock/images",
        port_range=(20000, 29999), mounts=(), iface=None, registry="", image_cleanup="keep",
        ready_timeout=120.0, grace=10.0, mpi="auto", containerize_base="debian:bookworm",
        sources=dict.fromkeys(config.KEYS, "default"),
        templates={}, files=files,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("layers", "value", "source"),
    [(0, 10.0, "default"), (1, 1.0, "site.toml:2"), (2, 2.0, "user.toml:1"),
     (3, 3.0, "env MPIDOCK_GRACE"), (4, 4.0, "option --grace")],
)  # fmt: skip
def test_each_layer_wins_over_the_ones_before(
    files: tuple[Path, Path], env: dict[str, str], layers: int, value: float, source: str
) -> None:
    if layers >= 1:
        write(files[0], "# site\ngrace = 1\n")
    if layers >= 2:
        write(files[1], "grace = 2.0\n")
    if layers >= 3:
        env["MPIDOCK_GRACE"] = "3"
    cfg = config.load(env, {"grace": 4.0} if layers >= 4 else {}, HOME)
    assert cfg.grace == value
    assert cfg.sources["grace"].removeprefix(str(files[0].parent) + "/") == source


def test_every_key_reports_where_it_came_from(
    files: tuple[Path, Path], env: dict[str, str]
) -> None:
    site = write(files[0], """
        job_root = "/shared/jobs"
        image_store = "/shared/images"
        port_range = [21000, 21999]
        mounts = ["/scratch"]
    """)  # fmt: skip
    user = write(files[1], """
        port_range = "22000-22999"
        iface = "ib0"
        registry = "registry.example.org:5000"
    """)  # fmt: skip
    env |= {"MPIDOCK_IMAGE_CLEANUP": "remove", "MPIDOCK_MOUNTS": "/a, /b:/c:ro,"}
    cfg = config.load(env, {"mpi": "mpich", "ready_timeout": 30.0, "iface": None}, HOME)
    assert (cfg.job_root, cfg.image_store, cfg.port_range) == ("/shared/jobs", "/shared/images",
                                                                (22000, 22999))  # fmt: skip
    assert (cfg.mounts, cfg.iface) == (("/a", "/b:/c:ro"), "ib0")
    assert cfg.registry == "registry.example.org:5000"
    assert (cfg.image_cleanup, cfg.mpi, cfg.ready_timeout) == ("remove", "mpich", 30.0)
    assert cfg.sources == {
        "job_root": f"{site}:1", "image_store": f"{site}:2", "port_range": f"{user}:1",
        "mounts": "env MPIDOCK_MOUNTS", "iface": f"{user}:2", "registry": f"{user}:3",
        "image_cleanup": "env MPIDOCK_IMAGE_CLEANUP", "mpi": "option --mpi",
        "ready_timeout": "option --ready-timeout", "grace": "default",
        "containerize_base": "default", "engine": "default", "podman_root": "default",
        "host_mpi": "default", "podman_image_store": "default", "launch": "default",
    }  # fmt: skip
    assert cfg.files == ((site, True), (user, True))


@pytest.mark.parametrize(
    ("environ", "site", "user"),
    [({}, "/etc/mpidock/config.toml", "/home/ada/.config/mpidock/config.toml"),
     ({"XDG_CONFIG_HOME": "/xdg"}, "/etc/mpidock/config.toml", "/xdg/mpidock/config.toml"),
     ({"XDG_CONFIG_HOME": "/xdg", "MPIDOCK_USER_CONFIG": "/u.toml"}, "/etc/mpidock/config.toml",
      "/u.toml"),
     ({"MPIDOCK_SITE_CONFIG": "/s.toml"}, "/s.toml", "/home/ada/.config/mpidock/config.toml"),
     ({"MPIDOCK_SITE_CONFIG": "", "XDG_CONFIG_HOME": ""}, "/etc/mpidock/config.toml",
      "/home/ada/.config/mpidock/config.toml")],
)  # fmt: skip
def test_where_the_files_are(environ: dict[str, str], site: str, user: str) -> None:
    assert (config.site_path(environ), config.user_path(environ, HOME)) == (site, user)


def test_paths_may_start_at_home(files: tuple[Path, Path], env: dict[str, str]) -> None:
    write(files[1], 'job_root = "~/jobs"\nimage_store = "~"\n')
    cfg = config.load(env, {}, "/home/ada/")
    assert (cfg.job_root, cfg.image_store) == ("/home/ada/jobs", "/home/ada")


@pytest.mark.parametrize(
    "text", ['"30000-30100"', '" 30000 - 30100 "', "[30000, 30100]", '"30000-30000"']
)
def test_port_range_forms(files: tuple[Path, Path], env: dict[str, str], text: str) -> None:
    write(files[0], f"port_range = {text}\n")
    assert config.load(env, {}, HOME).port_range[0] == 30000


def test_an_empty_variable_counts_as_unset(env: dict[str, str]) -> None:
    env |= {config.env_name(key): "" for key in config.KEYS}
    assert set(config.load(env, {}, HOME).sources.values()) == {"default"}


def test_options_are_already_parsed_values(env: dict[str, str]) -> None:
    given = {"port_range": (30000, 30100), "mounts": ["/data:/d:ro"], "ready_timeout": 5}
    cfg = config.load(env, given, HOME)
    assert (cfg.port_range, cfg.mounts, cfg.ready_timeout) == ((30000, 30100), ("/data:/d:ro",), 5)
    assert cfg.sources["mounts"] == "option --mount"


# --- errors in files name the file and the line --------------------------------------------

FILE_ERRORS = [
    ('registry = "r:5000"\nready_timout = 5\n', 2, "unknown key 'ready_timout'",
     ["did you mean ready_timeout?", "job_root", "grace"]),
    ('# timeouts\n\nready_timeout = "120"\n', 3, "ready_timeout: expected a number",
     ["ready_timeout takes"]),
    ("grace = -1\n", 1, "0 seconds or more", ["grace takes"]),
    ("grace = true\n", 1, "got boolean True", ["seconds"]),
    ('iface = "ib0"\nport_range = "30000-20000"\n', 2, "bad port range 30000-20000",
     ["1024 <= LOW <= HIGH <= 65535"]),
    ('port_range = "80-90"\n', 1, "bad port range 80-90", ["LOW-HIGH"]),
    ('port_range = "x-y"\n', 1, "expected LOW-HIGH or [LOW, HIGH]", ["20000-29999"]),
    ("port_range = [20000]\n", 1, "expected LOW-HIGH", ["LOW-HIGH"]),
    ('port_range = [20000, "x"]\n', 1, "expected LOW-HIGH", ["LOW-HIGH"]),
    ('image_cleanup = "delete"\n', 1, "got string 'delete'", ["one of: keep, remove"]),
    ('mpi = "lam"\n', 1, "expected one of auto, openmpi, mpich", ["one of: auto, openmpi, mpich"]),
    ('mounts = [\n  "/ok",\n  "relative",\n]\n', 1, "bad mount 'relative'", ["SRC[:DST][:ro]"]),
    ('mounts = "/scratch"\n', 1, "expected an array of strings", ["SRC[:DST][:ro]"]),
    ('job_root = "jobs"\n', 1, "expected an absolute path", ["/shared/mpidock/jobs"]),
    ('registry = "https://r"\n', 1, "expected HOST[:PORT]", ["registry.example.org:5000"]),
    ('[templates.small]\nimage = "a"\n\n[templates.big]\nnodes = 3\n', 4,
     "template 'big' has no image", ["[templates.NAME]", "image ="]),
    ('[templates.big]\nimage = "a"\ngpu = 1\n', 3, "unknown key 'gpu'",
     ["did you mean gpus?", "cpus_per_node"]),
    ('[templates.big]\nimage = "a"\nnodes = 0\n', 3, "nodes: expected a whole number >= 1",
     ["nodes takes"]),
    ('[templates.big]\nimage = "a"\nmemory = "16GB"\n', 3, "expected a size", ['"16G"']),
    ('[templates.big]\nimage = "a"\ntime = "2h"\n', 3, "expected a Slurm time", ['"2:00:00"']),
    ('[templates.big]\nimage = "a"\nmemory = "\u0663G"\n', 3, "expected a size", ['"16G"']),
    ('[templates.big]\nimage = "a"\ntime = "\u00b2"\n', 3, "expected a Slurm time", ["2:00:00"]),
    ('port_range = "\u00b2-3"\n', 1, "expected LOW-HIGH or [LOW, HIGH]", ["20000-29999"]),
    ('[templates.big]\nimage = "a"\niface = "ib0"\n', 3, "'iface' is not a template key",
     ["above the first [table]"]),
    ('templates = "big"\n', 1, "templates: expected tables", ["[templates.NAME]"]),
    ('[templates."a b"]\nimage = "a"\n', 1, "bad template 'a b'", ["letters, digits"]),
    ('[templates]\nsmall = { image = "a" }\nbig = { image = "b", nodes = 0 }\n', 3,
     "nodes: expected", ["nodes takes"]),
    ('grace = 1\ntemplates.big.image = 3\n', 2, "image: expected a string, got integer 3",
     ["image name"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "message", "hints"), FILE_ERRORS)
def test_a_bad_file_names_the_file_and_the_line(
    files: tuple[Path, Path],
    env: dict[str, str],
    text: str,
    line: int,
    message: str,
    hints: list[str],
) -> None:
    path = write(files[1], text)
    with pytest.raises(ConfigError) as info:
        config.load(env, {}, HOME)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in info.value.message
    assert all(h in info.value.hint for h in hints), info.value.hint


def test_a_toml_syntax_error_gives_tomllib_line_and_column(
    files: tuple[Path, Path], env: dict[str, str]
) -> None:
    path = write(files[0], 'grace = 1\nmpi = "auto\n')
    with pytest.raises(ConfigError) as info:
        config.load(env, {}, HOME)
    assert info.value.message.startswith(f"{path}: invalid TOML: ")
    assert "line 2, column" in info.value.message


def test_an_unreadable_file_is_named(files: tuple[Path, Path], env: dict[str, str]) -> None:
    files[0].mkdir()
    with pytest.raises(ConfigError, match=f"^{files[0]}: cannot read the configuration: "):
        config.load(env, {}, HOME)


def test_a_file_not_in_utf8_is_named(files: tuple[Path, Path], env: dict[str, str]) -> None:
    files[1].write_bytes(b'comment = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        config.load(env, {}, HOME)
    assert info.value.where == str(files[1])


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("MPIDOCK_GRACE", "soon", "expected a number of seconds, got string 'soon'"),
     ("MPIDOCK_READY_TIMEOUT", "0", "expected 1 seconds or more"),
     ("MPIDOCK_READY_TIMEOUT", "inf", "expected a number of seconds"),
     ("MPIDOCK_PORT_RANGE", "1-2", "bad port range 1-2"),
     ("MPIDOCK_PORT_RANGE", "\u00b2-3", "expected LOW-HIGH or [LOW, HIGH]"),
     ("MPIDOCK_PORT_RANGE", "\u0662\u0660\u0660\u0660\u0660-30000", "expected LOW-HIGH"),
     ("MPIDOCK_IMAGE_CLEANUP", "delete", "expected one of keep, remove"),
     ("MPIDOCK_MPI", "lam", "expected one of auto, openmpi, mpich"),
     ("MPIDOCK_MOUNTS", "/a,rel", "bad mount 'rel'"),
     ("MPIDOCK_JOB_ROOT", "rel", "expected an absolute path"),
     ("MPIDOCK_IFACE", "ib 0", "expected an interface"),
     ("MPIDOCK_REGISTRY", "https://r", "expected HOST[:PORT]")],
)  # fmt: skip
def test_a_bad_variable_is_named(env: dict[str, str], name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(env | {name: value}, {}, HOME)
    assert str(info.value).startswith(f"env {name}: {message}")
    assert info.value.hint.startswith(f"{name} takes ")


@pytest.mark.parametrize(
    ("given", "start"),
    [({"port_range": "x"}, "option --port-range: expected LOW-HIGH"),
     ({"mounts": ["rel"]}, "option --mount: bad mount 'rel'"),
     ({"colour": "red"}, "option --colour: unknown key 'colour'")],
)  # fmt: skip
def test_a_bad_option_is_named(env: dict[str, str], given: dict[str, object], start: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(env, given, HOME)
    assert str(info.value).startswith(start)


# --- where a key is written ----------------------------------------------------------------

KEYED = '''\
# a comment: grace = 1
grace = 1
note = """
iface = "not a key"
"""
"quoted key" = 2

[templates.big]
image = "a"   # templates.big.image
[ templates . "two words" ]
image = "b"
[templates]
small = { image = "c", nodes = 0 }
dotted.image = "d"
'''


@pytest.mark.parametrize(
    ("keys", "line"),
    [(("grace",), 2), (("note",), 3), (("iface",), None), (("quoted key",), 6),
     (("templates",), 8), (("templates", "big"), 8), (("templates", "big", "image"), 9),
     (("templates", "two words", "image"), 11), (("templates", "small"), 13),
     (("templates", "small", "nodes"), 13), (("templates", "dotted", "image"), 14),
     (("templates", "big", "nodes"), 8), (("nothing", "here"), None)],
)  # fmt: skip
def test_key_line_finds_the_key_else_its_table(keys: tuple[str, ...], line: int | None) -> None:
    assert key_line(KEYED, keys) == line


# --- templates -----------------------------------------------------------------------------

SITE_TEMPLATES = """
    [templates.small]
    image = "site/small"

    [templates.big]
    image = "site/big"
    nodes = 8
"""
USER_TEMPLATES = """
    [templates.big]
    image = "user/big"

    [templates.alpha]
    image = "user/alpha"
"""


def test_user_templates_replace_site_ones_by_name(
    files: tuple[Path, Path], env: dict[str, str]
) -> None:
    site, user = write(files[0], SITE_TEMPLATES), write(files[1], USER_TEMPLATES)
    templates = config.load(env, {}, HOME).templates
    assert templates == {
        "small": Template("small", "site/small", f"{site}:1"),
        "big": Template("big", "user/big", f"{user}:1"),
        "alpha": Template("alpha", "user/alpha", f"{user}:4"),
    }


def test_an_unknown_template_lists_the_valid_ones_sorted(
    files: tuple[Path, Path], env: dict[str, str]
) -> None:
    write(files[0], SITE_TEMPLATES)
    write(files[1], USER_TEMPLATES)
    cfg = config.load(env, {}, HOME)
    assert config.template(cfg, "small").image == "site/small"
    with pytest.raises(UsageError, match="unknown template 'huge'") as info:
        config.template(cfg, "huge")
    assert info.value.hint.startswith("valid templates: alpha, big, small")


def test_an_unknown_template_without_any_says_so(env: dict[str, str]) -> None:
    with pytest.raises(UsageError) as info:
        config.template(config.load(env, {}, HOME), "big")
    assert info.value.hint.startswith("no templates are configured")


@pytest.mark.parametrize(
    ("fields", "options"),
    [({"nodes": 3, "cpus_per_node": 2, "gpus": 1, "memory": "16G", "time": "2:00:00"},
      ["-N", "3", "--ntasks-per-node", "2", "--gres", "gpu:1", "--mem", "16G",
       "--time", "2:00:00"]),
     ({}, []),
     ({"gpus": 0, "time": "1-12:00", "comment": "x"}, ["--time", "1-12:00"]),
     ({"cpus_per_node": 4, "memory": "512M"}, ["--ntasks-per-node", "4", "--mem", "512M"])],
)  # fmt: skip
def test_template_defaults_are_sbatch_options(
    fields: dict[str, object], options: list[str]
) -> None:
    t = Template("t", "img:1", "site.toml:1", **fields)  # type: ignore[arg-type]
    assert config.template_defaults(t) == (options, "img:1")


# --- hand-over to the launch ---------------------------------------------------------------


def test_given_options_are_those_set() -> None:
    args = argparse.Namespace(image="i", port_range=None, mounts=[], grace=3.0, iface="ib0")
    assert config.given_options(args) == {"grace": 3.0, "iface": "ib0"}


def test_option_fields_fill_launch_options(env: dict[str, str]) -> None:
    cfg = config.load(env | {"MPIDOCK_IMAGE_CLEANUP": "remove"}, {"mounts": ["/d"]}, HOME)
    opts = Options(image="i", command=("./app",), **config.option_fields(cfg))
    assert (opts.keep_image, opts.mounts, opts.job_root) == (False, ("/d",), cfg.job_root)
    assert (opts.port_range, opts.grace) == ((20000, 29999), 10.0)


# --- the commands --------------------------------------------------------------------------


def run_command(argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    parser = argparse.ArgumentParser(prog="mpidock")
    config_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    return capsys.readouterr().out.replace(str(tmp_path), "<tmp>")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The process environment the commands read: only the two files and a home."""
    for key in config.KEYS:
        monkeypatch.delenv(config.env_name(key), raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", HOME)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("cli_env")
def test_config_command_table(
    files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    golden: Golden,
) -> None:
    # Every default path is under the passwd home, which differs by who runs the test.
    write(files[0], 'job_root = "/shared/jobs"\nmounts = ["/scratch", "/ref:/ref:ro"]\n')
    monkeypatch.setenv("MPIDOCK_IMAGE_STORE", "/shared/images")
    monkeypatch.setenv("MPIDOCK_GRACE", "2.5")
    golden("config.table", run_command(["config"], capsys, tmp_path))


@pytest.mark.usefixtures("cli_env")
def test_config_command_uses_the_passwd_home_not_home(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """As slurm-entry does: under srun $HOME may be the submit host's, or unset."""
    home = current_identity().home
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("MPIDOCK_USER_CONFIG")
    data = json.loads(run_command(["config", "--json"], capsys, tmp_path))
    assert data["files"][1]["path"] == f"{home}/.config/mpidock/config.toml"
    assert data["keys"]["job_root"]["value"] == f"{home}/.mpidock/jobs"
    assert data["keys"]["image_store"]["value"] == f"{home}/.mpidock/images"


@pytest.mark.usefixtures("cli_env")
def test_config_command_json(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(files[1], "port_range = [21000, 21999]\n")
    data = json.loads(run_command(["config", "--json"], capsys, tmp_path))
    assert data["files"] == [{"path": "<tmp>/site.toml", "read": False},
                             {"path": "<tmp>/user.toml", "read": True}]  # fmt: skip
    assert data["keys"]["port_range"] == {"value": [21000, 21999], "source": "<tmp>/user.toml:1"}
    assert data["keys"]["iface"] == {"value": None, "source": "default"}


@pytest.mark.usefixtures("cli_env")
def test_templates_command_table(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, golden: Golden
) -> None:
    write(files[0], """
        [templates.big]
        image = "ghcr.io/example/app:1.0"
        nodes = 3
        cpus_per_node = 2
        gpus = 1
        memory = "16G"
        time = "2:00:00"
        comment = "production runs"

        [templates.bare]
        image = "alpine"

        [templates.wide]
        image = "mpich:4"
        cpus_per_node = 4
        gpus = 2
        comment = "any number of nodes"
    """)  # fmt: skip
    write(files[1], '[templates.one]\nimage = "user/one"\nnodes = 1\ncpus_per_node = 1\n')
    golden("config.templates", run_command(["templates"], capsys, tmp_path))
    data = json.loads(run_command(["templates", "--json"], capsys, tmp_path))
    assert [t["name"] for t in data] == ["bare", "big", "one", "wide"]
    assert data[1]["source"] == "<tmp>/site.toml:1"


@pytest.mark.usefixtures("cli_env")
def test_templates_command_without_any(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = run_command(["templates"], capsys, tmp_path)
    assert out == "no templates: declare them as [templates.NAME] in <tmp>/site.toml or " \
        "<tmp>/user.toml\n"  # fmt: skip


# --- every command resolves settings one way -----------------------------------------------


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [(["images"], "image_store", "/site/images"),
     (["images", "prune", "--older-than", "7d"], "image_store", "/site/images"),
     (["images", "--image-store", "/x", "prune", "--older-than", "1d"], "image_store", "/x"),
     (["images", "prune", "--older-than", "1d", "--image-store", "/y"], "image_store", "/y"),
     (["reap"], "job_root", "/user/jobs"),
     (["reap", "--job-root", "/opt/jobs"], "job_root", "/opt/jobs"),
     (["submit", "--image-store", "/opt/z"], "image_store", "/opt/z")],
)  # fmt: skip
def test_each_command_reads_files_then_its_options(
    files: tuple[Path, Path], argv: list[str], key: str, value: str
) -> None:
    write(files[0], 'image_store = "/site/images"\njob_root = "/site/jobs"\n')
    write(files[1], 'job_root = "/user/jobs"\n')
    args = parse(argv)
    if argv[0] == "submit":  # submit sorts its words itself: its own parser reads ours
        args = own_parser().parse_args(args.words)
    assert getattr(config.for_command(args), key) == value


@pytest.mark.usefixtures("cli_env")
def test_a_bad_option_of_any_command_is_named(files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="option --image-store: expected an absolute path"):
        config.for_command(parse(["images", "--image-store", "relative"]))
