"""`gsp-hub index build | search`: embed a gallery into a faiss index, then query it with an image.

    gsp-hub index build --model runs/gsp-r50 --images gallery/ --out gallery.index
    gsp-hub index build --model runs/gsp-r50 --images new_photos/ --out gallery.index --append
    gsp-hub index search --index gallery.index --query query.jpg -k 10 --grid neighbours.png
    gsp-hub index search --index gallery.index --query query.jpg --json

``--images`` is a folder of image files (labels from ``root/<class>/<image>``) or a data set that
``gsp_hub.data.load_image_dataset`` reads (Hub-layout / parquet folder, ``.parquet`` file, Hub id; pick a split with
``--split``). ``--model`` is any ``gsp_hub.load_model`` spec (a run or export folder, a Hub id, a zoo model, a timm
name with ``--weights`` or with its own pretrained weights); ``search`` reloads the model the index records unless
``--model`` is given, and refuses a model whose fingerprint differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gsp_hub.cli import add_model_arguments, locate_model_argument

__all__ = ["add_parser"]

_DATA_FILE_SUFFIXES = (".parquet", ".arrow", ".csv", ".json", ".jsonl")


def _load_gallery_source(images: str, split: str | None) -> tuple[Any, str | None, str | None]:
    """(folder path or datasets.Dataset, dataset name, split) for ``--images``."""
    from gsp_hub.data import load_image_dataset
    from gsp_hub.index.embedding import IMAGE_EXTENSIONS

    path = Path(images).expanduser()
    if path.is_dir():
        files = [file for file in path.rglob("*") if file.is_file()]
        has_images = any(file.suffix.lower() in IMAGE_EXTENSIONS for file in files)
        if has_images and not any(file.suffix.lower() in _DATA_FILE_SUFFIXES for file in files):
            if split is not None:
                raise ValueError(f"--split {split!r} applies to data sets; {path} is a folder of image files.")
            return path, None, None
    dataset = load_image_dataset(images, split=split, verify_images=False, progress=False)
    if len(dataset) != 1:
        raise ValueError(f"--images {images!r} has the splits {list(dataset)}; choose one with --split.")
    (name, rows), = dataset.items()
    return rows, images, name


def _model_id(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.absolute()) if path.is_dir() else spec


def _settings(args: argparse.Namespace) -> Any:
    from gsp_hub.index.structures import IndexSettings

    return IndexSettings(kind=args.kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                         ef_search=args.ef_search, ivf_lists=args.ivf_lists, nprobe=args.nprobe)


def _build(args: argparse.Namespace) -> int:
    from gsp_hub.index.gallery import GalleryIndex, check_save_target

    out = Path(args.out).expanduser()
    if args.append and args.overwrite:
        raise ValueError("--append and --overwrite exclude each other: --append keeps the index and adds images.")
    existing = None
    if args.append:
        existing = GalleryIndex.load(out)  # a corrupt / foreign index fails here, before any image is embedded
        if args.kind_given and args.kind != existing.settings.kind:
            raise ValueError(f"--kind {args.kind} but the index at {out} is {existing.settings.kind!r}; appending "
                             "keeps the index's structure (rebuild without --append to change it).")
    elif out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists; pass --append to add images to it or --overwrite to replace it "
                              "(only a gallery index is ever replaced).")
    else:
        check_save_target(out, overwrite=args.overwrite)  # a foreign folder is refused before any work
    settings = None if existing else _settings(args)  # validates the faiss options before loading anything
    model_source = locate_model_argument(args.model, args.weights)
    source, dataset_name, split = _load_gallery_source(args.images, args.split)
    model = model_source.load()
    options = dict(batch_size=args.batch_size, progress=not args.no_progress, dataset_name=dataset_name, split=split)
    if existing is not None:
        added = existing.append(model, source, **options)
        index = existing
    else:
        index = GalleryIndex.build(model, source, model_id=_model_id(args.model), settings=settings,
                                   input_size=args.input_size, **options)
        added = len(index)
    folder = index.save(out, overwrite=existing is not None or args.overwrite)
    summary = {"index": str(folder), "added": added, "count": len(index), "dim": index.dim,
               "kind": index.settings.kind, "model_id": index.model_id, "config_hash": index.config_hash,
               "recall_vs_exact": index.recall}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        recall = index.recall
        quality = "exact search" if recall is None else (
            f"approximate, recall@{recall['k']} vs exact = {recall['recall']:.4f} over {recall['queries']} queries")
        print(f"indexed {added} images ({len(index)} in total, {index.dim}-d, {index.settings.kind}: {quality}) "
              f"-> {folder}")
    return 0


def _gallery_image(neighbour: Any, datasets_cache: dict[tuple[str, str], Any]) -> Any:
    """The neighbour's image (RGB PIL), or None when its file / data set is no longer readable."""
    from gsp_hub.data import decode_image, load_image_dataset

    try:
        if neighbour.path is not None:
            return decode_image({"path": neighbour.path, "bytes": None})
        if neighbour.dataset is not None and neighbour.row is not None:
            key = (neighbour.dataset, neighbour.split)
            if key not in datasets_cache:
                loaded = load_image_dataset(neighbour.dataset, split=neighbour.split, verify_images=False,
                                            progress=False)
                datasets_cache[key] = next(iter(loaded.values()))
            return decode_image(datasets_cache[key][neighbour.row]["image"])
    except (OSError, ValueError):
        return None
    return None


def _search(args: argparse.Namespace) -> int:
    query_path = Path(args.query).expanduser()
    if not query_path.is_file():
        raise FileNotFoundError(f"--query {query_path} is not an image file.")
    if args.grid is not None and Path(args.grid).suffix.lower() != ".png":
        raise ValueError(f"--grid must be a .png file, got {args.grid!r}.")
    from gsp_hub.data import decode_image  # after the checks: bad input is reported without loading torch
    from gsp_hub.index.gallery import GalleryIndex
    from gsp_hub.viz.retrieval_grid import plot_retrieval_grid

    index = GalleryIndex.load(args.index)
    model_source = locate_model_argument(args.model or index.model_id, args.weights)
    query = decode_image({"path": str(query_path), "bytes": None})
    model = model_source.load()
    neighbours = index.search_images(model, [query], k=args.k)[0]
    grid = None
    if args.grid is not None:
        cache: dict[tuple[str, str], Any] = {}
        grid = plot_retrieval_grid(
            query,
            [_gallery_image(neighbour, cache) for neighbour in neighbours],
            [neighbour.score for neighbour in neighbours],
            args.grid,
            labels=[neighbour.label for neighbour in neighbours],
            query_label=args.query_label,
            title=f"{query_path.name}: top-{len(neighbours)} of {len(index)} ({index.settings.kind})",
        )
    if args.json:
        print(json.dumps({"index": str(Path(args.index).absolute()), "query": str(query_path.absolute()),
                          "model_id": index.model_id, "k": args.k,
                          "neighbours": [neighbour.to_dict() for neighbour in neighbours],
                          "grid": None if grid is None else str(grid)}, indent=2))
        return 0
    print(f"top-{len(neighbours)} neighbours of {query_path} in {args.index} ({len(index)} images):")
    print(f"{'rank':>4}  {'score':>7}  {'label':<16}  item")
    for neighbour in neighbours:
        item = neighbour.path or f"{neighbour.dataset}[{neighbour.split}] row {neighbour.row}"
        print(f"{neighbour.rank:>4}  {neighbour.score:>7.4f}  {str(neighbour.label or '-'):<16}  {item}")
    if grid is not None:
        print(f"retrieval grid: {grid}")
    return 0


class _KindAction(argparse.Action):
    """Stores --kind and remembers that it was given explicitly (for --append)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.kind_given = True


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="build and search a faiss retrieval index of gallery images",
        description="Embed a gallery of images with a model into a faiss index with a metadata table (build), "
        "and find the nearest gallery images of a query image (search).",
    )
    commands = parser.add_subparsers(dest="index_command", required=True, metavar="{build,search}")

    build = commands.add_parser(
        "build",
        help="embed a folder of images or a data set into an index folder",
        description="Embed every image of --images with --model (L2-normalised) and write an index folder "
        "(index.json, embeddings.npy, metadata.parquet[, index.faiss]) atomically. --append embeds only the new "
        "images and refuses a different model.",
    )
    add_model_arguments(build)
    build.add_argument("--images", required=True, help="folder of images (root/<class>/<image> gives labels), or "
                       "a data set: Hub-layout / parquet folder, .parquet file, Hub id")
    build.add_argument("--out", required=True, type=Path, help="index folder to write")
    build.add_argument("--split", help="data set split to index (needed when the data set has several)")
    mode = build.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add the images to the existing index at --out")
    mode.add_argument("--overwrite", action="store_true", help="replace the existing index at --out")
    build.add_argument("--kind", choices=("flat", "hnsw", "ivf"), default="flat", action=_KindAction,
                       help="flat = exact inner product (default); hnsw / ivf = approximate, recall measured")
    build.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node (default 32)")
    build.add_argument("--ef-construction", type=int, default=80, help="HNSW build beam width (default 80)")
    build.add_argument("--ef-search", type=int, default=64, help="HNSW query beam width (default 64)")
    build.add_argument("--ivf-lists", type=int, help="IVF cells (default: 4 sqrt(n), at most n / 39)")
    build.add_argument("--nprobe", type=int, default=16, help="IVF cells searched per query (default 16)")
    build.add_argument("--input-size", type=int, help="image side (default: the model's preprocessing)")
    build.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.add_argument("--json", action="store_true", help="print a JSON summary")
    build.set_defaults(func=_build, kind_given=False)

    search = commands.add_parser(
        "search",
        help="print the nearest gallery images of a query image and draw a retrieval grid",
        description="Embed --query with the index's model (or --model, which must be the same model) and print "
        "its top-k gallery neighbours with cosine scores; --grid writes a PNG of the query and its neighbours.",
    )
    search.add_argument("--index", required=True, type=Path, help="index folder written by `gsp-hub index build`")
    search.add_argument("--query", required=True, help="query image file")
    search.add_argument("-k", type=int, default=10, help="number of neighbours (default 10)")
    add_model_arguments(search, required=False, default=" (default: the model recorded in the index)")
    search.add_argument("--grid", default="retrieval_grid.png",
                        help="retrieval-grid PNG to write (default retrieval_grid.png)")
    search.add_argument("--no-grid", dest="grid", action="store_const", const=None, help="do not draw the grid")
    search.add_argument("--query-label", help="the query's label: frames neighbours green (same) or red")
    search.add_argument("--json", action="store_true", help="print the neighbours as JSON")
    search.set_defaults(func=_search)
