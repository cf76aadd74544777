"""`ad-runtime predict`: the fields of `adcore predict`, map pictures, and user errors without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from contract_graphs import expected
from PIL import Image

from ad_runtime.cli import main
from ad_runtime.overlay import HEADER, SIDE


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def test_predict_json_has_the_fields_of_adcore_predict(make_export, images, capsys) -> None:
    code, out, _ = _run(capsys, "predict", str(make_export()), str(images), "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 5
    for row in rows:
        assert set(row) == {"path", "score", "normalized_score", "label", "threshold"}
        want = expected(np.asarray(Image.open(row["path"]).convert("RGB")), 24, 32)
        assert row["score"] == pytest.approx(want["score"], abs=1e-6)
        assert row["label"] == int(want["label"]) and row["threshold"] == 0.5
    assert [row["label"] for row in rows] == [0, 0, 1, 0, 1]


def test_predict_table_and_summary(make_export, images, capsys) -> None:
    code, out, _ = _run(capsys, "predict", str(make_export()), str(images / "img2.png"), str(images / "img0.png"))
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["image", "score", "score", "0-1", "label", "map"]
    assert "anomalous" in lines[2] and "img2.png" in lines[2]
    assert "normal" in lines[3] and "img0.png" in lines[3]
    assert lines[-1] == "1 of 2 image(s) anomalous at the stored threshold"


def test_predict_writes_map_pictures_at_the_images_size(make_export, images, tmp_path, capsys) -> None:
    maps = tmp_path / "maps"
    code, out, _ = _run(capsys, "predict", str(make_export()), str(images), "--json", "--maps", str(maps))
    rows = json.loads(out)
    assert code == 0
    assert [Path(r["map"]).relative_to(maps).as_posix() for r in rows] == [
        "img0_anomaly.png", "img1_anomaly.png", "img2_anomaly.png", "img3_anomaly.png", "sub/img4_anomaly.png"]
    for row in rows:
        source = Image.open(row["path"])
        picture = Image.open(row["map"])
        assert picture.size == (source.width + SIDE, source.height + HEADER)
    dark = np.asarray(Image.open(rows[0]["map"]).convert("RGB"))[HEADER + 5, 5]
    bright = np.asarray(Image.open(rows[2]["map"]).convert("RGB"))[HEADER + 5, 5]
    assert bright[0] > dark[0] and dark[2] > bright[2]  # red where the 0-1 map is high, blue where low


def test_an_unreadable_image_fails_the_run_but_the_others_are_scored(make_export, images, capsys) -> None:
    (images / "broken.png").write_bytes(b"nope")
    code, out, err = _run(capsys, "predict", str(make_export()), str(images), "--json")
    rows = json.loads(out)
    assert code == 1
    assert len([r for r in rows if "score" in r]) == 5
    assert [r for r in rows if "error" in r][0]["path"].endswith("broken.png")
    assert "1 image(s) could not be read" in err


def test_a_missing_input_is_a_usage_error(make_export, tmp_path, capsys) -> None:
    code, _, err = _run(capsys, "predict", str(make_export()), str(tmp_path / "absent.png"))
    assert code == 2 and "no such file or folder" in err


def test_a_bad_export_folder_is_one_line_without_traceback(tmp_path, images) -> None:
    script = Path(sys.executable).with_name("ad-runtime")
    done = subprocess.run([str(script), "predict", str(tmp_path), str(images)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "no model.json" in done.stderr
    assert "Traceback" not in done.stderr
