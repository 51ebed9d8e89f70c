"""`gsp-hub explain heatmap | retrieval`: see what a model does, as PNG figures.

    gsp-hub explain heatmap --model runs/gsp --image a.jpg b.jpg --out maps/
    gsp-hub explain retrieval --model runs/gsp --dataset ../shared/data/tiny-imagenet-200 --out retrieval.png

``heatmap`` draws, for each image, a GSP model's pooling weights over the image and the prototype each feature-map
location is assigned to (the transport plan); ``retrieval`` embeds a data set split as ``gsp-hub eval`` does and
draws seeded random queries with their top-k neighbours, hits framed green and misses red. ``--model`` is any
``gsp_hub.load_model`` spec: a ``gsp-hub train`` run folder (its model/), an export folder, ``local-dir:PATH``, a
Hub id (``hf-hub:org/name``), a zoo model, or a timm name (with ``--weights``, or with its own pretrained weights).
Bad arguments are reported (exit code 2) before any image is processed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gsp_hub.cli import add_dataset_arguments, add_model_arguments, locate_model_argument

__all__ = ["add_parser"]


def _output_names(images: list[Path]) -> list[str]:
    """``<stem>_transport.png`` per image; numbered when two images share a stem."""
    stems = [image.stem for image in images]
    if len(set(stems)) == len(stems):
        return [f"{stem}_transport.png" for stem in stems]
    return [f"{number:02d}_{stem}_transport.png" for number, stem in enumerate(stems)]


def _heatmap(args: argparse.Namespace) -> int:
    from gsp_hub.data import decode_image
    from gsp_hub.viz.transport_map import check_gsp_model, explain_images

    images = [Path(image).expanduser() for image in args.image]
    for image in images:
        if not image.is_file():
            raise FileNotFoundError(f"--image {image}: no such file; pass image files (JPEG, PNG, ...).")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; --out is the folder the PNGs are written to (one per image).")
    if args.img_size < 0:
        raise ValueError(f"--img-size must be >= 0 (0 = the model's preprocessing), got {args.img_size}.")
    model = locate_model_argument(args.model, args.weights).load()
    try:
        check_gsp_model(model)
    except ValueError as error:
        raise ValueError(f"--model {args.model}: {error}") from error
    pictures = [decode_image({"path": str(image), "bytes": None}) for image in images]
    paths = explain_images(model, pictures, [out / name for name in _output_names(images)],
                           input_size=args.img_size or None, titles=[image.name for image in images])
    for image, path in zip(images, paths, strict=True):
        print(f"{image} -> {path}")
    return 0


def _retrieval(args: argparse.Namespace) -> int:
    from gsp_hub.data import DEFAULT_DATASET_NAME, load_image_dataset, make_splits
    from gsp_hub.viz.png import check_png_path
    from gsp_hub.viz.retrieval import leave_one_out_rows
    from gsp_hub.viz.retrieval_grid import plot_retrieval_rows

    out = check_png_path(args.out, "--out")
    for flag, value in (("--num-queries", args.num_queries), ("--k", args.k), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}.")
    if args.img_size < 0:
        raise ValueError(f"--img-size must be >= 0 (0 = the model's preprocessing), got {args.img_size}.")
    model_source = locate_model_argument(args.model, args.weights)
    dataset = load_image_dataset(args.dataset, image_column=args.image_column, label_column=args.label_column,
                                 verify_images=False, progress=False)
    rows = getattr(make_splits(dataset, args.split_protocol), args.split)
    if args.num_queries > len(rows) or args.k > len(rows) - 1:
        raise ValueError(f"the {args.split} split has {len(rows)} images: --num-queries (got {args.num_queries}) can "
                         f"be at most {len(rows)} and --k (got {args.k}) at most {len(rows) - 1}.")
    model = model_source.load()
    examples = leave_one_out_rows(model, rows, num_queries=args.num_queries, k=args.k, seed=args.seed,
                                  input_size=args.img_size or None, batch_size=args.batch_size,
                                  progress=not args.no_progress)
    name = args.dataset or DEFAULT_DATASET_NAME
    plot_retrieval_rows(examples, out, title=f"{args.model} on {name} ({args.split} split, {len(rows)} images): "
                        f"top-{args.k} neighbours, green = same label (hit), red = miss")
    hits = sum(label == row.query_label for row in examples for label in row.labels)
    total = sum(len(row.labels) for row in examples)
    print(f"{len(examples)} queries of {name} ({args.split} split, {len(rows)} images), top-{args.k}: "
          f"{hits}/{total} hits ({hits / total:.1%}) -> {out}")
    return 0


def _add_model_and_output_options(parser: argparse.ArgumentParser, out_default: str, out_help: str) -> None:
    """--model, --weights, --out and --img-size, shared by both figures."""
    add_model_arguments(parser)
    parser.add_argument("--out", default=out_default, help=f"{out_help} (default: {out_default})")
    parser.add_argument("--img-size", type=int, default=0,
                        help="input size in pixels (default: the model's exported preprocessing)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `gsp-hub explain heatmap` and `gsp-hub explain retrieval`."""
    parser = subparsers.add_parser(
        "explain",
        help="draw what a model does: GSP transport-plan heatmaps and retrieval grids (PNG)",
        description="Figures that explain a model: `heatmap` shows where a GSP model pools from and which "
        "prototype each location goes to; `retrieval` shows queries of a data set with their top-k neighbours.",
    )
    commands = parser.add_subparsers(dest="explain_command", required=True, metavar="{heatmap,retrieval}")

    heatmap = commands.add_parser(
        "heatmap",
        help="GSP pooling weights and prototype assignments over images",
        description="For each image: the model input, the GSP pooling weights of the feature-map locations "
        "upsampled over it (a heatmap), and the prototype each location is assigned to by the transport plan. "
        "One PNG per image in --out. Needs a model with pool='gsp'.",
    )
    _add_model_and_output_options(heatmap, "explain", "folder for the PNGs, <image stem>_transport.png")
    heatmap.add_argument("--image", required=True, nargs="+", metavar="IMAGE", help="image file(s) to explain")
    heatmap.set_defaults(func=_heatmap)

    retrieval = commands.add_parser(
        "retrieval",
        help="queries of a data set with their top-k neighbours, hits and misses marked",
        description="Embed a data set split as `gsp-hub eval` does, pick --num-queries seeded random images as "
        "queries and draw each with its --k nearest other images of the split (cosine); a neighbour with the "
        "query's label is a hit (green frame), any other a miss (red). Prints the hit count.",
    )
    _add_model_and_output_options(retrieval, "retrieval_grid.png", "PNG to write")
    add_dataset_arguments(retrieval, "search")
    retrieval.add_argument("--num-queries", type=int, default=8, help="query rows in the figure (default: 8)")
    retrieval.add_argument("-k", "--k", type=int, default=5, help="neighbours per query (default: 5)")
    retrieval.add_argument("--seed", type=int, default=0, help="seed of the query choice (default: 0)")
    retrieval.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    retrieval.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    retrieval.set_defaults(func=_retrieval)
