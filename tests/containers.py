"""The repository's ``Dockerfile`` and ``compose.yaml`` as the tests read them, and their commands run here.

No image is built in the tests (there may be no Docker daemon, and no registry to pull the base image from):
``Image`` is what the Dockerfile's final stage declares (parsed by ``dockerfile-parse``), and ``Container``
runs its entrypoint and command as a process of this machine, with the image's environment, then the compose
service's, and each file compose would mount at ``/run/secrets/NAME`` written to a folder of the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
SECRETS = "/run/secrets/"


@dataclass(frozen=True)
class Image:
    """The final stage of the Dockerfile: what a container of the image starts with."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    user: str
    workdir: str
    exposed: list[str]
    #: the HEALTHCHECK's exec-form command (after ``CMD``) and its options (``--interval=30s``...)
    healthcheck: list[str]
    healthcheck_options: list[str]
    #: the instructions of the final stage in order, as (INSTRUCTION, value)
    instructions: list[tuple[str, str]] = field(repr=False)
    stages: int = 1


def read_image(path: Path = DOCKERFILE) -> Image:
    parser = DockerfileParser(str(path))
    structure = parser.structure
    starts = [i for i, item in enumerate(structure) if item["instruction"] == "FROM"]
    final = [
        (item["instruction"], item["value"]) for item in structure[starts[-1] :] if item["instruction"] != "COMMENT"
    ]

    def last(instruction: str) -> str:
        values = [value for name, value in final if name == instruction]
        assert values, f"the Dockerfile's final stage has no {instruction}"
        return values[-1]

    check = last("HEALTHCHECK").split()
    at = check.index("CMD")
    return Image(
        env=dict(parser.envs),
        entrypoint=json.loads(last("ENTRYPOINT")),
        cmd=json.loads(last("CMD")),
        user=last("USER"),
        workdir=last("WORKDIR"),
        exposed=[value for name, value in final if name == "EXPOSE"],
        healthcheck=json.loads(last("HEALTHCHECK").split("CMD", 1)[1]),
        healthcheck_options=check[:at],
        instructions=final,
        stages=len(starts),
    )


def read_compose(path: Path = COMPOSE) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def as_local(command: Sequence[str]) -> list[str]:
    """A command of the image for this machine: ``trackcheck`` (the package's console script) and ``python``
    (the image's virtualenv) are this interpreter's."""
    program, *args = command
    if program == "trackcheck":
        return [sys.executable, "-m", "trackcheck", *args]
    if program == "python":
        return [sys.executable, *args]
    raise AssertionError(f"the image runs {program!r}, which these tests do not know how to run here")


class Container:
    """One process started as a container of the image would start, with ``docker run -e``-like ``env`` and
    compose's ``secrets`` (name → content) written to ``folder/secrets``; ``folder`` plays the WORKDIR."""

    def __init__(
        self,
        image: Image,
        folder: Path,
        *,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.mounted = folder / "secrets"
        self.mounted.mkdir(parents=True, exist_ok=True)
        for name, content in (secrets or {}).items():
            (self.mounted / name).write_text(content, encoding="utf-8")
        outside = {k: v for k, v in os.environ.items() if not k.startswith("TRACKCHECK_")}  # PYTHONPATH, HOME...
        inside = {k: v for k, v in image.env.items() if k != "PATH"}  # PATH: the image's virtualenv
        self.env = {**outside, **inside, **{k: self.mount(v) for k, v in (env or {}).items()}}
        self.argv = as_local([self.mount(part) for part in [*image.entrypoint, *(command or image.cmd)]])
        self.log = folder / "container.log"
        self.process: subprocess.Popen[bytes] | None = None

    def mount(self, value: str) -> str:
        """``/run/secrets/NAME`` → the file of this container's secrets folder holding NAME."""
        return str(self.mounted / value.removeprefix(SECRETS)) if value.startswith(SECRETS) else value

    def start(self) -> Container:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def exec(self, command: Sequence[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """``docker exec``: a command of the image in this container's environment (a healthcheck)."""
        return subprocess.run(
            as_local([self.mount(part) for part in command]),
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.argv} still runs after {timeout} s:\n{self.text()[-3000:]}") from None

    def health(self, url: str, until: Callable[[httpx.Response], bool], timeout: float = 60) -> httpx.Response:
        """GET ``url`` until ``until(response)`` holds; AssertionError with the log if the process exits first."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, f"exited:\n{self.text()[-3000:]}"
            try:
                answer = httpx.get(url, timeout=5)
            except httpx.HTTPError as exc:
                last = exc
            else:
                if until(answer):
                    return answer
                last = f"{answer.status_code} {answer.text}"
            time.sleep(0.2)
        raise AssertionError(f"{url} never answered as expected (last: {last}):\n{self.text()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        """``docker stop``: SIGTERM to the process (PID 1 in a container), its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """Whatever is left of its session (a failed test's cleanup)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
