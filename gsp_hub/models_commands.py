"""`gsp-hub models`: list the registered architectures, the pretrained zoo models and the poolings.

It lives outside :mod:`gsp_hub.models` because importing that package registers the architectures with timm, which
imports torch and timm: the command line imports every command module to build its parser.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _list_models(args: argparse.Namespace) -> int:
    from gsp_hub.layers import list_pools
    from gsp_hub.models import list_gsp_models
    from gsp_hub.models.zoo import ZOO

    names = [name for name in list_gsp_models() if args.filter in name]
    print(f"{len(names)} gsp_hub timm models (timm.create_model(<name>) after `import gsp_hub`):")
    for name in names:
        print(f"  {name}")
    zoo = [entry for name, entry in ZOO.items() if args.filter in name]
    print(f"{len(zoo)} pretrained zoo models (timm.create_model(<name>, pretrained=True); Hub id gsp-hub/<name>):")
    width = max((len(entry.name) for entry in zoo), default=0)
    for entry in zoo:
        print(f"  {entry.name:<{width}}  {entry.description}")
    print("poolings (create_pool(<name>, dim) / --pool): " + ", ".join(list_pools()))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the timm models, pretrained zoo models and poolings that gsp_hub registers",
        description="List the timm architectures registered by `import gsp_hub`, the pretrained zoo models and the "
                    "pooling names.",
    )
    parser.add_argument("--filter", default="", help="only names containing this substring (e.g. gsp_)")
    parser.set_defaults(func=_list_models)
