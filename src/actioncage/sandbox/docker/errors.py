"""sandbox/docker/: sandbox/docker/errors.py: the one table turning docker and engine errors
into SandboxError."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from actioncage.errors import EngineUnavailableError, SandboxError
from actioncage.sandbox.docker.engine import EngineAPIError

# Errors that mean the engine could not be reached or broke off (or answered nonsense):
# EngineUnavailableError when it no longer answers a ping, else SandboxError.
UNREACHABLE = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    http.client.HTTPException,
    OSError,
)


def image_missing(image: str) -> SandboxError:
    return SandboxError(f"sandbox image {image} is missing: run `actioncage image build`")


def translate(exc: BaseException, image: str, engine_answers: Callable[[], bool]) -> BaseException:
    """Our error for an engine error ``exc`` (ours already: ``exc`` itself, or a better one);
    ``exc`` itself when it is not an engine error at all. ``engine_answers`` is asked only
    for errors that may mean the engine is gone."""
    if isinstance(exc, EngineAPIError):
        if exc.status == 404 and "image" in exc.engine_message.lower():
            return image_missing(image)
        return exc
    if isinstance(exc, SandboxError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, docker.errors.ImageNotFound):
        return image_missing(image)
    if isinstance(exc, docker.errors.APIError):
        return SandboxError(f"container engine error: {exc.explanation or exc}")
    if isinstance(exc, UNREACHABLE):
        if not engine_answers():
            return EngineUnavailableError(f"no container engine answers: {exc}")
        return SandboxError(f"container engine error: {exc}")
    return exc


@contextmanager
def engine_errors(image: str, engine_answers: Callable[[], bool]) -> Iterator[None]:
    """Raise our error for any engine error in the block, chained ``from`` the original."""
    try:
        yield
    except BaseException as exc:
        ours = translate(exc, image, engine_answers)
        if ours is exc:
            raise
        raise ours from exc
