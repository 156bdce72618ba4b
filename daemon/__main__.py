"""The `edgewatch` command line: run | validate | doctor | models | bench | infer | two-stage | workflow |
clip-compare | build-engine.

Exit codes: 0 success; 1 invalid config, bad input or startup failure (one-paragraph message on stderr);
2 usage error; 3 ran but did not shut down cleanly within shutdown_timeout_s; 4 (run) ran and stopped in
order, but a source failed or a sink delivered nothing; 130 forced by a second signal.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from daemon import inferpool
from daemon.service.statusline import CLEAR_LINE

if TYPE_CHECKING:
    from daemon.app import Daemon

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNCLEAN, EXIT_DEGRADED = 0, 1, 2, 3, 4

# Sub-command modules, each with register(subparsers); explicit so a broken one fails loudly.
COMMAND_MODULES = (
    "daemon.cli.models", "daemon.cli.embed", "daemon.cli.engine", "daemon.cli.workflow", "daemon.cli.doctor",
    "daemon.cli.modelcmd",
    "daemon.bench.main",
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record, not the stream it was created with,
    so a replaced stderr (a test's capture, a redirect) never leaves threads logging into a closed file."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(CLEAR_LINE)  # a live status line may be on screen: the log line replaces it
        super().emit(record)


def setup_logging(level: str) -> None:
    # journald stamps every line itself; JOURNAL_STREAM tells us stderr goes there.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def shipped_example(path: Path) -> bool:
    """A file in this checkout's configs/ folder: an example, whose secrets and variables exist only on a user's box."""
    examples = Path(__file__).resolve().parents[1] / "configs"
    return path.resolve().is_relative_to(examples)


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from daemon.config import ConfigError, check_config_source, effective_config
    from daemon.preflight import check

    try:
        config, notes, src = check_config_source(args.config)
        seconds = check(config, src, load_models=not args.no_load, ports=not args.no_ports).seconds  # as run
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if notes and not (args.allow_missing_secrets or shipped_example(Path(args.config))):
        print(f"{args.config}: everything else is valid, but {len(notes)} ${{...}} reference(s) did not resolve here; "
              "they must when the daemon runs. Pass --allow-missing-secrets to accept that (for example when only "
              "the systemd unit provides $CREDENTIALS_DIRECTORY).", file=sys.stderr)
        return EXIT_ERROR
    if args.show_effective:
        from daemon.control.overlay import OverlayError, effective_with_overlay

        try:  # what the daemon runs: the runtime overlay in state_dir on top of the YAML
            config, overlay_notes = effective_with_overlay(config)
        except OverlayError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_ERROR
        for note in overlay_notes:
            print(note, file=sys.stderr)
        print(yaml.safe_dump(effective_config(config), sort_keys=False), end="")
    unresolved = f", {len(notes)} unresolved references noted" if notes else ""
    loaded = "not loaded" if args.no_load else f"loaded in {seconds:.1f}s"
    print(f"{args.config}: valid ({len(config.sources)} sources, {len(config.models)} models {loaded}, "
          f"{len(config.sinks)} sinks{unresolved})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.app import Daemon
    from daemon.cli.demo import demo_config_path, demo_report, results_files
    from daemon.config import ConfigError, read_config
    from daemon.preflight import check

    try:
        path = Path(args.config) if args.config else demo_config_path()
    except (FileNotFoundError, OSError) as exc:
        print(f"edgewatch run: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        config, src = read_config(path)
        preloaded = check(config, src).models  # as validate: models load and fit their stages, ports free
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    if args.status_interval is not None:
        config.status_interval_s = args.status_interval
    demo_files = results_files(config) if not args.config else {}
    daemon = Daemon(config, config_path=path, models=preloaded)
    daemon.install_signal_handlers()
    try:
        daemon.start()
    except (OSError, ValueError, LookupError) as exc:
        print(f"{path}: cannot start: {exc}", file=sys.stderr)
        if not daemon.stop():
            leave_now(EXIT_ERROR)
        return EXIT_ERROR
    daemon.wait()
    clean = daemon.stop()
    for line in daemon.summary():
        print(line, file=sys.stderr)
    if not args.config:  # the built-in demo: what it read, per plate
        for line in demo_report(demo_files):
            print(line, file=sys.stderr)
    return run_exit_code(daemon, clean)


def run_exit_code(daemon: Daemon, clean: bool) -> int:
    """3 after an overrun shutdown, 4 when a source failed or a sink delivered nothing, else 0; the last line
    says why. After an overrun the process ends here (leave_now): threads are still running."""
    problems = daemon.problems()
    if not clean:
        unprocessed = sum(s.unprocessed for s in daemon.stats.sources.values())
        print(f"exit {EXIT_UNCLEAN}: shutdown did not finish within {daemon.config.shutdown_timeout_s:g}s; "
              f"{unprocessed} frame(s) read but not processed", *problems, sep="; ", file=sys.stderr)
        leave_now(EXIT_UNCLEAN)
    if problems:
        print(f"exit {EXIT_DEGRADED}:", "; ".join(problems), file=sys.stderr)
        return EXIT_DEGRADED
    return EXIT_OK


def leave_now(code: int) -> NoReturn:
    """End the process without interpreter finalization, after flushing the logs and the output.

    Threads the shutdown gave up on may still be inside ONNX Runtime or OpenCV; a normal exit would destroy
    their sessions under them (C++ std::terminate: "terminate called without an active exception", SIGABRT,
    rc 134). Sinks have already been flushed and closed by Daemon.stop(), so nothing is lost by skipping it.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgewatch", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="log verbosity (default info)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline config (no argument: the built-in demo)")
    run.add_argument("config", nargs="?", help="pipeline YAML; omitted: the built-in demo")
    run.add_argument("--status-interval", type=float, default=None,
                     help="seconds between live status lines (0: off); overrides the config")
    run.set_defaults(func=cmd_run)
    validate = sub.add_parser(
        "validate", help="check a config file; exit 0 if valid, 1 with the reason if not",
        description="Unresolved ${VAR}, ${cred:NAME} and ${file:PATH} are printed as notes and the rest is checked. "
        "They fail the check unless --allow-missing-secrets is given or the file is one of the shipped examples "
        "in configs/ (those name secrets that exist only on a user's box).")
    validate.add_argument("config")
    validate.add_argument("--allow-missing-secrets", action="store_true",
                          help="exit 0 when the only problems are unresolved ${...} references (printed as notes)")
    validate.add_argument("--no-load", action="store_true",
                          help="skip loading the models (faster; a model that does not load or fit its stage is "
                          "then only found by run)")
    validate.add_argument("--no-ports", action="store_true",
                          help="skip listening on http:/api: (when the running daemon holds them)")
    validate.add_argument("--show-effective", action="store_true",
                          help="print the resolved config with defaults filled in and secrets masked")
    validate.set_defaults(func=cmd_validate)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    inferpool.install()  # before any model loads: CPU sessions split batches over the usable cores
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
