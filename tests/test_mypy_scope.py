"""mypy's strict scope in pyproject.toml: every --strict flag on pipelines/ and the frame path, and only there."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy.main import process_options
from mypy.options import PER_MODULE_OPTIONS, Options

ROOT = Path(__file__).resolve().parents[1]
# The frame path (DESIGN.md): source -> capture -> queue -> worker -> payload -> fan-out -> sinks, and its values.
FRAME_PATH = (
    "daemon.frames", "daemon.capture", "daemon.queues", "daemon.worker", "daemon.boundary", "daemon.trackhooks",
    "daemon.payload", "daemon.fanout",
)
FRAME_PATH_FOLDERS = ("daemon/sources", "daemon/sinks")
OUTSIDE = ("daemon.app", "daemon.cli.embed", "daemon.bench.main", "daemon.web.app")


def modules_under(folder: str) -> list[str]:
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted((ROOT / folder).rglob("*.py"))]


def strict_flags() -> dict[str, object]:
    """What --strict changes, asked of mypy itself: the flag list grows with mypy versions."""
    _, plain = process_options(["--config-file", "", "-c", "pass"])
    _, strict = process_options(["--config-file", "", "--strict", "-c", "pass"])
    names = [n for n in dir(strict) if not n.startswith("_") and not callable(getattr(strict, n))]
    return {n: getattr(strict, n) for n in names if getattr(plain, n) != getattr(strict, n)}


@pytest.fixture(scope="module")
def configured() -> Options:
    """The options `mypy` runs with in the checkout (as `make test` calls it, from the root)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        _, options = process_options(["--config-file", str(ROOT / "pyproject.toml")])
    return options


def test_strict_has_flags_to_compare() -> None:
    flags = strict_flags()
    assert {"disallow_any_generics", "warn_return_any", "disallow_untyped_defs"} <= set(flags)


@pytest.mark.parametrize(
    "module", [*modules_under("pipelines"), *FRAME_PATH, *(m for f in FRAME_PATH_FOLDERS for m in modules_under(f))]
)
def test_pipelines_and_the_frame_path_are_checked_with_every_strict_flag(configured: Options, module: str) -> None:
    options = configured.clone_for_module(module)
    missing = {flag: value for flag, value in strict_flags().items() if getattr(options, flag) != value}
    assert not missing, f"{module} is not checked as --strict would: set {missing} in [tool.mypy]"


@pytest.mark.parametrize("module", OUTSIDE)
def test_the_strict_scope_does_not_spread_to_other_modules(configured: Options, module: str) -> None:
    # `strict = true` inside an override would turn strict on everywhere (mypy issue #11401)
    options = configured.clone_for_module(module)
    per_module = {flag: value for flag, value in strict_flags().items() if flag in PER_MODULE_OPTIONS}
    assert any(getattr(options, flag) != value for flag, value in per_module.items()), f"{module} is strict too"
