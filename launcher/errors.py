"""The exception family. Every error carries what happened and a hint for the user."""

from __future__ import annotations

from collections.abc import Sequence


class LauncherError(Exception):
    """Root of every error mpidock reports to the user.

    Attributes:
        node: the node the failure came from, when known.
        hint: one sentence telling the user how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str, *, node: str | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.node = node
        self.hint = hint

    def __str__(self) -> str:
        where = f"{self.node}: " if self.node else ""
        tail = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{self.message}{tail}"


class UsageError(LauncherError):
    """Malformed options or values."""


class MissingSlurmEnv(LauncherError):
    """slurm-entry ran outside a Slurm step, or the step's variables are inconsistent."""

    def __init__(self, names: Sequence[str], detail: str = "") -> None:
        self.names = list(names)
        what = detail or f"missing Slurm variables: {', '.join(self.names)}"
        super().__init__(
            what,
            hint="run it inside an allocation: sbatch -N 3 --wrap 'srun mpidock slurm-entry ...'",
        )


class CommandFailed(LauncherError):
    """A host command exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, hint: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{argv[0]} exited {returncode}: {last}", hint=hint)


class NodeTimeout(LauncherError):
    """A node did not become ready before the deadline."""

    def __init__(self, node: str, port: int, waited_s: float, reason: str, hint: str = "") -> None:
        self.port = port
        self.waited_s = waited_s
        self.reason = reason
        super().__init__(
            f"not ready on port {port} after {waited_s:.1f} s: {reason}", node=node, hint=hint
        )


class NodeFailed(LauncherError):
    """A node reported a failure (container start, image, sshd) or died mid-run."""


class WorkerFailed(NodeFailed):
    """A worker's own report of its failure; `at` is when it wrote it (epoch seconds)."""

    def __init__(self, message: str, *, node: str, hint: str = "", at: float | None = None):
        super().__init__(message, node=node, hint=hint)
        self.at = at


class JobEnded(LauncherError):
    """The leader ended the job while this node was still joining it; the leader says why."""


class ImageError(LauncherError):
    """An image is missing, unusable or cannot be personalized."""


class DockerUnavailable(LauncherError):
    """The Docker engine on a node cannot be reached."""


class TestbedError(LauncherError):
    """The one-machine testbed cannot be brought up, down or inspected."""

    __test__ = False


class JobDirError(LauncherError):
    """The per-job directory of keys and ssh files cannot be created, written or removed."""


class JobDirExists(JobDirError):
    """The per-job directory is already there: another launch runs, or one was killed."""

    def __init__(self, path: object) -> None:
        self.path = str(path)
        super().__init__(
            f"job directory {self.path} already exists; another launch of this job is "
            "running or a previous one was killed",
            hint="remove it or run mpidock reap",
        )
