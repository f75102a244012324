"""Command line: ``ai-metrics-exporter [serve|check-config|demo]`` with Prometheus-style flags.

Flags map onto config keys (``--web.listen-address`` → ``web.listen_address``) and win over
the environment and the file. A configuration error prints one line naming the field and
exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from exporter import config
from exporter.collectors import COLLECTORS
from exporter.config import ConfigError
from exporter.duration import parse_seconds
from exporter.logutil import configure_logging
from exporter.storage.files import StorageLockedError
from exporter.version import build_info, prefetch

EXIT_CONFIG = 2
EXIT_STORAGE_LOCKED = 1  # another exporter holds storage.path

# flag → (config key, type)
_VALUE_FLAGS: dict[str, tuple[str, type]] = {
    "--web.listen-address": ("web.listen_address", str),
    "--web.telemetry-path": ("web.telemetry_path", str),
    "--web.max-request-bytes": ("web.max_request_bytes", int),
    "--web.max-header-bytes": ("web.max_header_bytes", int),
    "--web.cors-origin": ("web.cors_origin", str),
    "--web.config.file": ("web.security.web_config_file", str),
    "--log.level": ("log.level", str),
    "--log.format": ("log.format", str),
    "--storage.path": ("storage.path", str),
    "--redis-streams.consumer": ("sources.redis_streams.consumer", str),
    "--collector.timeout": ("collectors.timeout_seconds", float),
}
_DEMO_FLAGS: dict[str, tuple[str, type]] = {
    "--demo.rate": ("demo.rate_per_second", float),
    "--demo.episode": ("demo.episode", str),
    "--demo.episode-after": ("demo.episode_after_seconds", float),
    "--demo.episode-duration": ("demo.episode_duration_seconds", float),
    "--demo.seed": ("demo.seed", int),
}


def _seconds(key: str) -> Callable[[str], float]:
    """The flag type of a ``*_seconds`` key: a plain number or a Prometheus duration
    (``500ms``, ``30s``, ``1h30m``); a bad one is a usage error (status 2) naming the flag
    and the config key."""

    def parse(text: str) -> float:
        try:
            return parse_seconds(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{key}: {exc}") from None

    return parse


def _add_common(parser: argparse.ArgumentParser, demo: bool = False) -> None:
    parser.add_argument("--config.file", dest="config_file", default=argparse.SUPPRESS,
                        help="YAML configuration file (default: none, built-in defaults)")
    flags = {**_VALUE_FLAGS, **(_DEMO_FLAGS if demo else {})}
    for flag, (key, kind) in flags.items():
        duration = key.endswith("_seconds")
        parser.add_argument(flag, dest=f"set:{key}", type=_seconds(key) if duration else kind,
                            default=argparse.SUPPRESS,
                            metavar="DURATION" if duration else None,
                            help=f"overrides config key {key}" + (
                                " (seconds, or a duration such as 500ms, 30s, 5m)"
                                if duration else ""))
    parser.add_argument("--web.enable-lifecycle", dest="set:web.enable_lifecycle",
                        action="store_const", const=True, default=argparse.SUPPRESS,
                        help="serve POST /-/reload (config key web.enable_lifecycle; off "
                             "by default; SIGHUP always reloads)")
    for name, cls in COLLECTORS.items():
        state = "enabled" if cls.default_enabled else "disabled"
        parser.add_argument(f"--collector.{name}", dest=f"collector:{name}",
                            action="store_const", const=True, default=argparse.SUPPRESS,
                            help=f"enable the {name} collector ({state} by default): "
                                 f"{cls.description}")
        parser.add_argument(f"--no-collector.{name}", dest=f"collector:{name}",
                            action="store_const", const=False, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


class _VersionAction(argparse._VersionAction):
    """``--version``, with the version looked up when the flag is given: building the parser
    on every start does not wait for the build identity (``git`` runs)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        self.version = f"ai-metrics-exporter {build_info().version}"
        super().__call__(parser, namespace, values, option_string)


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser that adds its flags the first time it parses or prints help.

    Each subcommand repeats the ~40 common flags; only the one on the command line (if
    any) needs them, so the others cost nothing at start-up. ``flags`` is set right after
    ``add_parser``.
    """

    flags: Callable[[argparse.ArgumentParser], None] | None = None

    def _complete(self) -> None:
        flags, self.flags = self.flags, None
        if flags is not None:
            flags(self)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ai-metrics-exporter",
        description="Prometheus and OTLP exporter for host and AI-agent-platform activity.")
    parser.add_argument("--version", action=_VersionAction)
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", parser_class=_Subcommand)
    commands: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
        ("serve", "serve metrics (the default)", _add_common),
        ("check-config", "validate the configuration and exit", _add_common),
        ("demo", "serve metrics fed by the built-in demo AI workload",
         lambda p: _add_common(p, demo=True)),
    )
    for name, help_text, flags in commands:
        command = sub.add_parser(name, help=help_text)
        command.flags = flags
    return parser


def flags_layer(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line layer of the configuration, as a nested dict."""
    layer: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if value is None:
            continue
        if dest.startswith("set:"):
            config.set_dotted(layer, dest[4:], value)
        elif dest.startswith("collector:"):
            config.set_dotted(layer, f"collectors.enabled.{dest[10:]}", value)
    if getattr(args, "command", None) == "demo":
        config.set_dotted(layer, "demo.enabled", True)
    return layer


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "check-config":
        prefetch()  # /metrics serves the build identity: resolve it while start-up goes on
    flags = flags_layer(args)
    config_file: str | None = getattr(args, "config_file", None)
    try:
        cfg = config.load(config_file, flags)
        from exporter.runtime import Runtime, make_loader

        if args.command == "check-config":
            Runtime.validate(cfg)
            print(f"configuration OK: {config_file or 'built-in defaults'}")
            return 0
        configure_logging(cfg.log.level, cfg.log.format)
        from exporter.hostpaths import HostPaths, pin_psutil_procfs

        # psutil's procfs root is process-wide: set once, before anything reads it.
        pin_psutil_procfs(HostPaths.from_config(cfg))
        runtime = Runtime(cfg, make_loader(config_file, flags))
    except ConfigError as exc:
        print(f"ai-metrics-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageLockedError as exc:
        print(f"ai-metrics-exporter: {exc}", file=sys.stderr)
        return EXIT_STORAGE_LOCKED
    from exporter.server import serve

    return serve(runtime)


if __name__ == "__main__":
    sys.exit(main())
