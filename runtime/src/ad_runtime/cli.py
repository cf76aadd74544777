"""`ad-runtime predict` and `ad-runtime serve`: the export's detector from the command line, without torch.

`predict` prints the fields of `adcore predict` (raw score, 0-1 score, label at the stored threshold, the map
picture's path), so a line PC's output reads like the training machine's. A user error (a bad folder, an
unreadable image, a missing extra) is one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ad_runtime.images import read_image

USER_ERRORS = (ValueError, OSError, ImportError)  # bad input or environment; anything else is a bug


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `ad-runtime` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        sys.exit(2)
    missing = [p for p in getattr(args, "inputs", []) if not p.exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(map(str, missing))}")
    try:
        status = args.handler(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ad-runtime", description="Score images with an ad-core export "
                                     "(the folder `adcore export` writes), without torch.")
    commands = parser.add_subparsers(dest="command")
    predict = commands.add_parser("predict", help="score image files or folders of images")
    predict.add_argument("export_dir", type=Path, metavar="EXPORT_DIR")
    predict.add_argument("inputs", type=Path, nargs="+", metavar="IMAGES")
    predict.add_argument("--json", dest="as_json", action="store_true", help="machine-readable output")
    predict.add_argument("--maps", type=Path, metavar="DIR", help="folder for the anomaly-map pictures")
    predict.add_argument("--batch-size", type=_positive, default=16,
                         help="images per graph call when the export's batch is dynamic (default 16)")
    _engine_options(predict)
    predict.set_defaults(handler=_predict)
    serve = commands.add_parser("serve", help="answer POST /predict, GET /health and GET /model over HTTP")
    serve.add_argument("export_dir", type=Path, metavar="EXPORT_DIR")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0,
                       help="largest upload accepted, in MB (default 20): larger ones get 413")
    serve.add_argument("--max-parallel", type=_positive, default=4,
                       help="images decoded and scored at once (default 4); further requests wait their turn")
    _engine_options(serve)
    serve.set_defaults(handler=_serve)
    return parser


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["onnxruntime", "openvino"], default="onnxruntime",
                        help="engine (openvino needs the export's model.xml and pip install 'ad-runtime[openvino]')")
    parser.add_argument("--threads", type=_positive, default=None, help="CPU threads per graph call")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _predict(args: argparse.Namespace) -> int:
    from ad_runtime.detector import Detector
    from ad_runtime.overlay import overlay_names, overlay_png, write_file

    detector = Detector.load(args.export_dir, backend=args.backend, threads=args.threads)
    unreadable: list[tuple[Path, str]] = []
    results = detector.predict(args.inputs, batch_size=args.batch_size, unreadable=unreadable)
    names = overlay_names([r.path for r in results], args.inputs) if args.maps is not None else []
    rows: list[dict[str, Any]] = []
    for i, result in enumerate(results):
        row: dict[str, Any] = {"path": str(result.path), "score": result.score,
                               "normalized_score": result.normalized_score, "label": int(result.label),
                               "threshold": result.threshold}
        if args.maps is not None and result.normalized_map is not None:
            picture = overlay_png(read_image(result.path), result.normalized_map, result.score,
                                  result.normalized_score, result.label)
            row["map"] = str(write_file(args.maps / names[i], picture))
        rows.append(row)
    failed = [{"path": str(path), "error": reason} for path, reason in unreadable]
    if args.as_json:
        print(json.dumps(rows + failed, indent=2))
    else:
        table = [[r["path"], f"{r['score']:.4g}", f"{r['normalized_score']:.3f}",
                  "anomalous" if r["label"] else "normal", r.get("map") or "-"] for r in rows]
        print(_table(table, ["image", "score", "score 0-1", "label", "map"]))
        print(f"{sum(r['label'] for r in rows)} of {len(rows)} image(s) anomalous at the stored threshold")
    for row in failed:
        print(f"error: {row['error']}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} image(s) could not be read and were not scored", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ad_runtime.detector import Detector
    from ad_runtime.server import run_server

    detector = Detector.load(args.export_dir, backend=args.backend, threads=args.threads)
    run_server(detector, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1_000_000),
               max_parallel=args.max_parallel)
    return 0


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *[line(r) for r in rows]])


if __name__ == "__main__":
    main()
