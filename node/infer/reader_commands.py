"""`roadnode read` and `roadnode eval-reader`: the plate reader from the command line.

    roadnode read [--json] [--model M] [--detector D] [--threshold T] IMAGE...
    roadnode eval-reader --labels LABELS.jsonl [--detect] [--json]

`read` detects the plates in each image with the detector, then reads each one; with
`--json` it prints one line per image: {"image", "width", "height", "plates": [{"box",
"score", "text", "raw", "rows", "valid", "reason", "confidence", "char_conf"}]}. An
unreadable image gets an error line ({"image", "error"}) and the rest go on (exit 1).

`eval-reader` reads the labelled plates of a labels file (the detector's format with a
`plate_text` list beside `boxes`: one plate number per box, null for a plate nobody could
read, which is skipped) and prints exact-match accuracy and character error rate (edit
distance over the labelled characters, letters and digits only). By default it reads the
labelled boxes (the reader alone); `--detect` runs the detector first and reads what it
finds, matched to the labels at IoU 0.5 (a missed plate counts as read wrong, every
character lost).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    from node.cli import _model_args

    read = sub.add_parser("read", help="detect and read the plates in image files")
    read.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    read.add_argument("--json", action="store_true", help="one JSON line per image")
    _reader_args(read)
    _model_args(read)
    read.set_defaults(handler=cmd_read)

    ev = sub.add_parser("eval-reader", help="measure the plate reader on labelled images")
    ev.add_argument(
        "--labels", type=Path, required=True, help="labels (JSON lines) with plate_text"
    )
    ev.add_argument("--detect", action="store_true", help="detect first (end to end)")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    _reader_args(ev)
    _model_args(ev)
    ev.set_defaults(handler=cmd_eval_reader)

    hh = sub.add_parser(
        "hotlist-hash", help="write a hotlist with HMAC digests in place of plate numbers"
    )
    hh.add_argument("source", type=Path, help="plain hotlist (JSON)")
    hh.add_argument("output", type=Path, help="hashed hotlist to write (mode 0600)")
    hh.add_argument("--salt-file", type=Path, required=True, help="the fleet's HMAC key file")
    hh.set_defaults(handler=cmd_hotlist_hash)


def cmd_hotlist_hash(args: argparse.Namespace) -> int:
    """`roadnode hotlist-hash SOURCE OUTPUT --salt-file KEY`: the hashed form of a hotlist,
    written atomically (temporary file, fsync, rename) with mode 0600."""
    import os

    from node.plates.hotlist import HotlistError, hashed_document, read_salt

    try:
        raw = json.loads(args.source.read_text(encoding="utf-8"))
        doc = hashed_document(raw, read_salt(args.salt_file), str(args.source))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        print(f"roadnode: {args.source}: cannot read hotlist: {e}", file=sys.stderr)
        return 1
    except HotlistError as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    tmp = args.output.with_name(args.output.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.output)
    except OSError as e:
        print(f"roadnode: {args.output}: cannot write: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{args.output}: {len(doc['entries'])} entries, hashed")
    return 0


def _reader_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reader", type=Path, metavar="MANIFEST", help="reader manifest (.json)")


def _load(args: argparse.Namespace, need_detector: bool) -> tuple[Any, Any]:
    from node.infer.detector import PlateDetector
    from node.infer.manifest import DEFAULT_MANIFEST
    from node.infer.reader import DEFAULT_READER_MANIFEST, PlateReader

    reader = PlateReader(args.reader or DEFAULT_READER_MANIFEST)
    detector = None
    if need_detector:
        detector = PlateDetector(args.model or DEFAULT_MANIFEST, threshold=args.threshold)
    return reader, detector


def _plate_json(box: Any, score: float | None, read: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"box": [round(float(v), 1) for v in box]}
    if score is not None:
        out["score"] = round(float(score), 3)
    out.update(read.as_dict())
    return out


def cmd_read(args: argparse.Namespace) -> int:
    from node.infer.detector import read_image
    from node.infer.runtime import ModelError

    try:
        reader, detector = _load(args, True)
    except ModelError as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    failed = 0
    for path in args.images:
        try:
            image = read_image(path)
            found = detector.detect(image)
            plates = []
            for d in found:
                try:
                    plates.append(_plate_json(d.box, d.score, reader.read(image, d.box)))
                except ValueError:  # a box too small or off the image: reported unread
                    plates.append(
                        {
                            "box": [round(float(v), 1) for v in d.box],
                            "score": round(d.score, 3),
                            "text": None,
                        }
                    )
        except (OSError, ValueError) as e:
            failed += 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(e)}), flush=True)
            else:
                print(f"roadnode: {e}", file=sys.stderr, flush=True)
            continue
        h, w = image.shape[:2]
        if args.json:
            line = {"image": str(path), "width": w, "height": h, "plates": plates}
            print(json.dumps(line), flush=True)
        else:
            print(f"{path}  {w}x{h}  {len(plates)} plate{'' if len(plates) == 1 else 's'}")
            for p in plates:
                text = p.get("text") or "(unread)"
                flag = "" if p.get("valid", True) else "  [not a valid plate]"
                conf = f"{p['confidence']:.2f}" if "confidence" in p else "-"
                print(f"  {p['score']:.3f}  {text:<14} {conf}{flag}", flush=True)
    return 1 if failed else 0


def read_plate_texts(path: Path, count: int) -> list[list[str | None]]:
    """The `plate_text` list of each non-blank line of the labels file at `path`."""
    from node.infer.evaluate import LabelError

    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != count:
        raise LabelError(f"{path}: changed while being read")
    out: list[list[str | None]] = []
    for number, line in enumerate(lines, start=1):
        raw = json.loads(line)
        texts = raw.get("plate_text")
        boxes = raw.get("boxes") or []
        if texts is None:
            out.append([None] * len(boxes))
            continue
        if not isinstance(texts, list) or len(texts) != len(boxes):
            raise LabelError(
                f"{path} line {number}: 'plate_text' must be a list with one entry per box"
            )
        if not all(t is None or isinstance(t, str) for t in texts):
            raise LabelError(f"{path} line {number}: 'plate_text' entries must be strings or null")
        out.append(list(texts))
    return out


def cmd_eval_reader(args: argparse.Namespace) -> int:
    import numpy as np

    from node.infer.decode import iou_matrix
    from node.infer.detector import read_image
    from node.infer.evaluate import LabelError, read_labels
    from node.infer.runtime import ModelError
    from node.plates.grammar import edit_distance, normalize

    try:
        labels = read_labels(args.labels)
        texts = read_plate_texts(args.labels, len(labels))
        reader, detector = _load(args, args.detect)
    except (LabelError, ModelError, OSError, UnicodeDecodeError) as e:
        print(f"roadnode: {e}", file=sys.stderr)
        return 1
    plates = exact = chars = errors = valid = failed = 0
    for item, plate_texts in zip(labels, texts, strict=True):
        wanted = [(box, normalize(t)) for box, t in zip(item.boxes, plate_texts, strict=True) if t]
        if not wanted:
            continue
        try:
            image = read_image(item.image)
        except (OSError, ValueError) as e:
            print(f"roadnode: {e}", file=sys.stderr)
            failed += 1
            continue
        boxes = [box for box, _ in wanted]
        if detector is not None:
            found = [d.box for d in detector.detect(image)]
            matched: list[Any] = [None] * len(boxes)
            if found:
                ious = iou_matrix(np.asarray(boxes, np.float64), np.asarray(found, np.float64))
                for k in range(len(boxes)):
                    j = int(ious[k].argmax())
                    if ious[k, j] >= 0.5:
                        matched[k] = found[j]
            boxes = matched
        for box, truth in zip(boxes, (t for _, t in wanted), strict=True):
            plates += 1
            chars += len(truth)
            got = ""
            if box is not None:
                try:
                    read = reader.read(image, box)
                    got = read.raw
                    valid += read.valid
                except ValueError:
                    got = ""
            exact += got == truth
            errors += edit_distance(got, truth)
    figures = {
        "labels": str(args.labels),
        "reader": reader.manifest.label,
        "mode": "detect+read" if args.detect else "labelled boxes",
        "plates": plates,
        "exact_match": round(exact / plates, 4) if plates else None,
        "cer": round(errors / chars, 4) if chars else None,
        "grammar_valid": round(valid / plates, 4) if plates else None,
        "failed_images": failed,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>14}: {value}")
    return 1 if failed else 0
