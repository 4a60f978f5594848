"""``coco:DIR``: the demo images written by ``raynas data synth-detection`` and read back as
COCO (boxes as ``tv_tensors.BoundingBoxes``, box-aware augmentation, a seeded split by image,
DataLoader batches), in either layout (``annotations.json`` or COCO's ``instances_*.json``), and
bad input refused with one line naming the culprit."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from raynas.cli import main
from raynas.errors import DataError
from raynas.tasks.detection.data import (
    ANNOTATIONS,
    SHAPES,
    collate,
    load_detection,
    read_coco,
    write_synthetic,
)


def test_synthetic_images_read_back_as_coco(shapes):
    doc = json.loads((shapes / ANNOTATIONS).read_text())
    coco = read_coco(f"coco:{shapes}")
    assert coco.classes == ("background", *SHAPES) and coco.num_classes == 4
    assert len(coco.pictures) == len(doc["images"]) == 200
    assert sum(len(p.boxes) for p in coco.pictures) == len(doc["annotations"])
    first = doc["annotations"][0]
    x, y, w, h = first["bbox"]
    picture = next(p for p in coco.pictures if p.path.name == doc["images"][
        first["image_id"] - 1]["file_name"])
    assert picture.boxes[0] == (x, y, x + w, y + h)  # COCO's XYWH became XYXY
    assert picture.labels[0] == first["category_id"]
    data = load_detection(f"coco:{shapes}")
    image, target = data.val[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert target["labels"].tolist() == list(data.val.pictures[0].labels)


def test_split_is_by_image_and_seeded(shapes):
    spec = f"coco:{shapes}"
    data = load_detection(spec, seed=0)
    names = [{p.path.name for p in s.pictures} for s in (data.train, data.val, data.test)]
    assert [len(n) for n in names] == [140, 30, 30]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    again = load_detection(spec, seed=0)
    assert [p.path for p in again.test.pictures] == [p.path for p in data.test.pictures]
    other = load_detection(spec, seed=1)
    assert {p.path.name for p in other.test.pictures} != names[2]
    assert data.summary() == f"{spec}: 140 train / 30 val / 30 test images, 3 classes"


def test_training_augmentation_moves_the_boxes_with_the_pixels(shapes):
    data = load_detection(f"coco:{shapes}")
    flipped = kept = 0
    torch.manual_seed(0)
    for i in range(40):
        picture = data.train.pictures[i]
        image, target = data.train[i]
        boxes = torch.tensor(picture.boxes)
        mirrored = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
            [64, 0, 64, 0])
        got = target["boxes"].as_subclass(torch.Tensor)
        if torch.equal(got, boxes):
            kept += 1
        else:
            assert torch.equal(got, mirrored), (picture.path.name, got, boxes)
            flipped += 1
        assert target["labels"].tolist() == list(picture.labels)
        assert image.shape == (3, 64, 64)
    assert flipped and kept  # RandomHorizontalFlip flips about half


def test_dataloader_batches_lists_of_images_and_targets(shapes):
    data = load_detection(f"coco:{shapes}")
    images, targets = next(iter(DataLoader(data.train, batch_size=5, collate_fn=collate)))
    assert len(images) == len(targets) == 5
    assert all(len(t["boxes"]) == len(t["labels"]) >= 1 for t in targets)


def test_synth_detection_command(tmp_path, capsys):
    assert main(["data", "synth-detection", str(tmp_path / "demo"), "--count", "12", "--size",
                 "32"]) == 0
    assert f"coco:{tmp_path / 'demo'}" in capsys.readouterr().out
    coco = read_coco(f"coco:{tmp_path / 'demo'}")
    assert len(coco.pictures) == 12 and {(p.width, p.height) for p in coco.pictures} == {(32, 32)}
    assert main(["data", "synth-detection", str(tmp_path / "coco"), "--count", "12",
                 "--layout", "instances"]) == 0
    assert "(instances layout)" in capsys.readouterr().out
    coco = read_coco(f"coco:{tmp_path / 'coco'}")
    assert (len(coco.pictures), len(coco.held_out)) == (10, 2)
    for args, message in ((["--count", "12"], "exists and is not an empty folder"),
                          (["--size", "8"], "--size: must be >= 16")):
        target = tmp_path / ("demo" if "--count" in args else "new")
        assert main(["data", "synth-detection", str(target), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 demo images in COCO's layout: 34 in instances_train.json, 6 in instances_val.json."""
    return write_synthetic(tmp_path_factory.mktemp("coco") / "instances", count=40,
                           layout="instances")


def test_instances_layout_holds_out_the_val_file_as_test(instances):
    spec = f"coco:{instances}"
    data = load_detection(spec, seed=0, test_fraction=0.5)  # the val file decides the test
    assert data.summary() == f"{spec}: 29 train / 5 val / 6 test images, 3 classes"
    assert {p.path.parent.name for p in data.test.pictures} == {"val"}
    assert {p.path.parent.name for p in (*data.train.pictures, *data.val.pictures)} == {"train"}
    val_file = json.loads((instances / "annotations" / "instances_val.json").read_text())
    assert sorted(p.path.name for p in data.test.pictures) == sorted(
        im["file_name"] for im in val_file["images"])
    assert sum(len(p.boxes) for p in data.test.pictures) == len(val_file["annotations"])
    other = load_detection(spec, seed=1)
    assert {p.path for p in other.val.pictures} != {p.path for p in data.val.pictures}
    assert [p.path for p in other.test.pictures] == [p.path for p in data.test.pictures]
    image, target = data.test[0]
    assert image.shape == (3, 64, 64) and len(target["boxes"]) == len(target["labels"]) >= 1


def test_instances_layout_with_coco_names_or_no_val_file(instances, tmp_path):
    root = shutil.copytree(instances, tmp_path / "coco2017")
    for split in ("train", "val"):  # the names COCO 2017 comes with
        (root / "annotations" / f"instances_{split}.json").rename(
            root / "annotations" / f"instances_{split}2017.json")
        (root / split).rename(root / f"{split}2017")
    data = load_detection(f"coco:{root}")
    assert (len(data.train), len(data.val), len(data.test)) == (29, 5, 6)
    assert {p.path.parent.name for p in data.test.pictures} == {"val2017"}
    (root / "annotations" / "instances_val2017.json").unlink()
    data = load_detection(f"coco:{root}")  # the train file alone: split as annotations.json
    assert (len(data.train), len(data.val), len(data.test)) == (24, 5, 5)
    assert {p.path.parent.name for p in data.test.pictures} == {"train2017"}


def confused(instances: Path, shapes: Path, root: Path, case: str) -> Path:
    """A copy of the demo data in COCO's layout, made ambiguous or broken as ``case`` says."""
    shutil.copytree(instances, root)
    notes = root / "annotations"
    if case == "both layouts":
        shutil.copy(shapes / ANNOTATIONS, root / ANNOTATIONS)
    elif case == "two train files":
        shutil.copy(notes / "instances_train.json", notes / "instances_train2017.json")
    elif case == "two val files":
        shutil.copy(notes / "instances_val.json", notes / "instances_val2017.json")
    elif case == "val file alone":
        (notes / "instances_train.json").unlink()
    elif case == "no image folder":
        shutil.rmtree(root / "val")
    elif case == "other categories":
        doc = json.loads((notes / "instances_val.json").read_text())
        doc["categories"][0]["name"] = "box"
        (notes / "instances_val.json").write_text(json.dumps(doc))
    elif case == "missing val image":
        next((root / "val").iterdir()).unlink()
    elif case == "too few to split":
        doc = json.loads((notes / "instances_train.json").read_text())
        doc["images"] = doc["images"][:3]
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] <= 3]
        (notes / "instances_train.json").write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize(("case", "message"), [
    ("both layouts", r"both .*/annotations\.json and .*/annotations/instances_train\.json: keep "
                     r"one layout"),
    ("two train files", r"2 train files in .*/annotations \(instances_train\.json, "
                        r"instances_train2017\.json\); keep one"),
    ("two val files", r"2 val files in .*/annotations \(instances_val\.json, "
                      r"instances_val2017\.json\); keep one"),
    ("val file alone", r"instances_val\.json but no instances_train\*\.json beside it"),
    ("no image folder", r"no image folder .*/val/ for instances_val\.json"),
    ("other categories", r"instances_val\.json and instances_train\.json list different "
                         r"categories"),
    ("missing val image", r"image file not found: .*/val/img\d+\.png \(1 of 6 images are "
                          r"missing\)"),
    ("too few to split", r"cannot split the train file's 3 images into train and val \(15% val\)"),
])
def test_ambiguous_or_broken_instances_layout_is_one_line(instances, shapes, tmp_path, case,
                                                          message):
    root = confused(instances, shapes, tmp_path / "bad", case)
    with pytest.raises(DataError) as exc:
        load_detection(f"coco:{root}")
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and text.startswith(f"coco:{root}: ")
    assert re.search(message, text), text


def broken(source: Path, root: Path, case: str) -> Path:
    """A copy of the demo data broken as ``case`` says."""
    shutil.copytree(source, root)
    file = root / ANNOTATIONS
    doc = json.loads(file.read_text())
    if case == "missing image":
        (root / "images" / doc["images"][3]["file_name"]).unlink()
    elif case == "out of bounds":
        doc["annotations"][5]["bbox"][0] = 60
    elif case == "no area":
        doc["annotations"][2]["bbox"][3] = 0
    elif case == "no annotations":
        doc["annotations"] = []
    elif case == "unknown category":
        doc["annotations"][1]["category_id"] = 9
    elif case == "unknown image":
        doc["annotations"][1]["image_id"] = 999
    elif case == "bad bbox":
        doc["annotations"][4]["bbox"] = [1, 2, 3]
    elif case == "no list":
        del doc["categories"]
    elif case == "not an image":
        (root / "images" / doc["images"][7]["file_name"]).write_text("not a PNG")
    elif case == "other size":
        doc["images"][7]["width"] = 80
    if case == "malformed":
        file.write_text(json.dumps(doc)[:-5])
    elif case == "no file":
        file.unlink()
    else:
        file.write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize(("case", "message"), [
    ("missing image", r"image file not found: .*/images/img0003\.png \(1 of 200 images are "
                      r"missing\)"),
    ("out of bounds", r"annotation 6: box \[60, .*\] is out of the bounds of image \d+ "
                      r"\(64x64\)"),
    ("no area", r"annotation 3: box \[.*, 0\] has no area"),
    ("no annotations", r"annotations\.json has no annotations"),
    ("unknown category", r"annotation 2 has category 9, which .* does not list"),
    ("unknown image", r"annotation 2 is of image 999, which .* does not list"),
    ("bad bbox", r"annotation 5: bbox must be 4 numbers \[x, y, width, height\], got \[1, 2, 3\]"),
    ("no list", r"needs lists 'images', 'annotations' and 'categories'"),
    ("malformed", r"malformed JSON in .*annotations\.json"),
    ("no file", r"no .*annotations\.json \(expected DIR/annotations\.json in COCO format and the "
                r"images in DIR/images/, or COCO's DIR/annotations/instances_train\*\.json"),
    ("not an image", r"cannot read .*/images/img0007\.png as an image \(cannot identify"),
    ("other size", r"img0007\.png is 64x64, image 8 in .*annotations\.json says 80x64"),
])
def test_bad_coco_is_one_line_naming_the_culprit(shapes, tmp_path, case, message):
    root = broken(shapes, tmp_path / "bad", case)
    with pytest.raises(DataError) as exc:
        load_detection(f"coco:{root}")
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and text.startswith(f"coco:{root}: ")
    assert re.search(message, text), text
