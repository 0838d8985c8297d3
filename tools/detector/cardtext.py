"""The model card (markdown) from the figures `tools.detector.card` measured."""

from __future__ import annotations

from typing import Any

SETS = (
    ("synthetic_val", "synthetic validation (rendered Vietnamese plates, unseen seeds)"),
    ("real_val", "real validation split (fixed 20 % of plates-real, never trained on)"),
    ("real_val_small", "real validation, shrunk so plates are 12-30 px wide"),
)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def metrics_table(r: dict[str, Any]) -> list[str]:
    rows = [
        "| set | images | plates | AP50 int8 | AP50 float | drop | recall int8 | "
        "precision int8 | FP/image int8 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in SETS:
        s = r["sets"][key]
        q, f = s["int8"], s["float"]
        drop = None if q["ap50"] is None or f["ap50"] is None else f["ap50"] - q["ap50"]
        rows.append(
            f"| {label} | {q['images']} | {q['plates']} | {_pct(q['ap50'])} | "
            f"{_pct(f['ap50'])} | {_pct(drop)} | {_pct(q['recall'])} | "
            f"{_pct(q['precision'])} | {_num(q['fp_per_image'])} |"
        )
    return rows


def render(
    r: dict[str, Any],
    train_command: str,
    export_command: str,
    card_command: str,
    training: str,
) -> str:
    m, lat = r["model"], r["latency"]
    fmt = ["| format | plates | recall int8 |", "| --- | ---: | ---: |"]
    fmt += [
        f"| {k} | {v['plates']} | {_pct(v['recall'])} |"
        for k, v in r["synthetic_by_format"].items()
    ]
    lines = [
        "# plates — the bundled licence-plate detector",
        "",
        f"- file: `{m['file']}`, {m['bytes']:,} bytes, sha256 `{m['sha256']}`",
        f"- input: {m['input']} RGB (pixel / 255 with scale 1/255, zero point 0); "
        "full-integer int8 (weights and activations), int8 outputs",
        "- format: `centernet-ltrb-log/v1` (see `node/infer/models/README.md`)",
        f"- default score threshold: {r['threshold']}",
        "",
        "## Architecture",
        "",
        "A 47k-parameter MobileNet-style network (space-to-depth stem, depthwise-separable",
        "blocks, ReLU6, batch norm folded at export) down to stride 32, with a light top-down",
        "path (nearest upsample + add)",
        "back to stride 4, and two CenterNet heads: a plate-centre heat map and ln(distance/4) to",
        "the four box edges. One head at stride 4 serves every plate size: a 12 px plate still",
        "spans three cells, while the stride-32 context lets a plate that fills most of the frame",
        "be boxed from its centre. No tiling: one invoke per frame on the 960x544 detection",
        "stream. Why: the runtime matters more than the last layers (XNNPACK int8 kernels), and a",
        "single small fully-convolutional net keeps the per-frame cost inside the Pi's budget.",
        "",
        "## Data",
        "",
        "- Synthetic scenes (`tools/plates/synth.py`): every Vietnamese format (one-row car",
        "  520x110 mm, two-row car 330x165 mm, motorbike 190x140 mm; white, yellow, blue, red)",
        "  from the node's own plate renderer, on junction backgrounds from the simulator and",
        "  procedural clutter with plate-like hard negatives; perspective up to 35 degrees, motion",
        "  and focus blur, noise, low light and IR-like grey, glare, dirt, frames, JPEG artefacts,",
        "  partial occlusion, low resolution.",
        "- Real photos (`plates-real`, 297 images, CC0): a fixed split by sha256 of the path;",
        "  80 % train (random scale, crop, flip and the same degradations), 20 % validation,",
        "  never trained on.",
        f"- Training: {training}",
        "",
        "## Accuracy (AP50 and recall at the default threshold, IoU 0.5)",
        "",
        *metrics_table(r),
        "",
        "Synthetic validation, recall by plate format (int8):",
        "",
        *fmt,
        "",
        "## Latency (this development machine, 2-core x86-64 VM; the Pi is slower)",
        "",
        f"- runtime: {lat['backend']}",
        f"- mean invoke at {m['input'].split()[0]} (one pass): {lat['invoke_ms_1t']} ms on 1 "
        f"thread, {lat['invoke_ms_2t']} ms on 2",
        "- the live stage's detector time for one 1920x1080 frame, as it runs on the sim",
        f"  ({lat.get('live_passes', 'lores stream and zoom window')}; letterbox, invoke,",
        f"  decode and NMS each, and the merge): {lat['frame_1080p_ms_1t']} ms on 1 "
        f"thread, {lat['frame_1080p_ms_2t']} ms on 2",
        "- a 1920x1080 still image through the manifest's pyramid (`roadnode detect`): "
        f"{lat.get('still_pyramid_ms_1t', 'n/a')} ms on 1 thread, "
        f"{lat.get('still_pyramid_ms_2t', 'n/a')} ms on 2",
        "- measured on a quiet machine by `tools.detector.card`; `roadnode bench` measures the",
        "  same passes in the running node (docs/BENCHMARKS.md)",
        "",
        "## Reproduce",
        "",
        "```",
        train_command,
        export_command,
        card_command,
        "```",
        "",
        "## Limits",
        "",
        "- The real photos are mostly European-style single cars close up; Vietnamese plates in",
        "  the field are covered by the synthetic data only. Labels in busy real scenes are",
        "  incomplete, so some counted false positives are real, unlabelled plates.",
        "- Plates under about 10 px wide in the detection stream are not found.",
    ]
    return "\n".join(lines) + "\n"
