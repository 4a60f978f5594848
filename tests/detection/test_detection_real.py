"""Detection on real images at real sizes: the NEON aerial tree crowns inside the deepforest
wheel, read as Pascal VOC (``raynas data real-trees``) and as DeepForest's CSV; tiles and the
sliding window whose merged boxes are scored on the whole image; crowd regions; images of
several sizes through the ``input_scale`` resize; bad input in one line; one search on tiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from raynas.cli import main
from raynas.config import SearchConfig, Tracking
from raynas.errors import DataError
from raynas.estimation import load_space
from raynas.experiment.driver import search
from raynas.models import build_model
from raynas.tasks.detection.bench import baseline_arch
from raynas.tasks.detection.boxes import Picture, Tiling, detect_tiled, tiles
from raynas.tasks.detection.data import load_detection, read_boxes, read_coco, write_synthetic
from raynas.tasks.detection.formats import TREES_TEST, TREES_TRAIN, deepforest_data
from raynas.tasks.detection.metric import BoxMAP
from raynas.tasks.detection.train import evaluate, trainable

SMALL_YELL = "2019_YELL_2_541000_4977000_image_crop"


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trees") / "trees"
    assert main(["data", "real-trees", str(root)]) == 0
    return root


def test_real_trees_read_as_voc_train_on_yellowstone_test_elsewhere(trees):
    found, tiling = read_boxes(f"voc:{trees}")
    assert tiling is None and found.classes == ("background", "Tree")
    sizes = {p.path.stem: (p.width, p.height, len(p.boxes)) for p in found.pictures}
    assert sizes == {TREES_TRAIN[0]: (2299, 2472, 574), TREES_TRAIN[1]: (1249, 1035, 279)}
    held = {p.path.stem: (p.width, p.height, len(p.boxes)) for p in found.held_out}
    assert held == {"OSBS_029": (400, 400, 61), "SOAP_061": (400, 400, 37)}
    first = next(p for p in found.held_out if p.path.stem == "OSBS_029")
    assert first.boxes[0] == (203.0, 67.0, 227.0, 90.0)  # the XML's first <bndbox>


def test_deepforest_csv_reads_as_its_xml(trees):
    data = deepforest_data()
    from_csv = read_boxes(f"csv:{data / 'OSBS_029.csv'}")[0]
    [p] = from_csv.pictures
    assert (p.path.name, p.width, p.height) == ("OSBS_029.tif", 400, 400)
    voc = next(q for q in read_boxes(f"voc:{trees}")[0].held_out if q.path.stem == "OSBS_029")
    assert sorted(p.boxes) == sorted(voc.boxes) and from_csv.classes == ("background", "Tree")
    multi = read_boxes(f"csv:{data / 'testfile_multi.csv'}")[0]
    assert multi.classes == ("background", "Alive", "Dead")


def test_tiles_clip_boxes_drop_slivers_and_cover_every_crown(trees):
    [small] = [p for p in read_boxes(f"voc:{trees}")[0].pictures if p.path.stem == SMALL_YELL]
    tiling = Tiling(400)
    cut = tiles(small, tiling)
    assert len(cut) == len(tiling.starts(1249)) * len(tiling.starts(1035)) == 16
    assert tiling.starts(1249) == [0, 300, 600, 849]  # the last flush with the edge
    for t in cut:
        b = torch.tensor(t.boxes).reshape(-1, 4)
        assert (t.width, t.height) == (400, 400)
        assert (b >= 0).all() and (b <= 400).all() and (b[:, 2] > b[:, 0]).all()
    # every crown lies whole in some tile (the overlap, 100 pixels, exceeds any crown here)
    whole = set()
    for t in cut:
        x, y = t.origin
        whole |= {(b[0] + x, b[1] + y, b[2] + x, b[3] + y) for b in t.boxes}
    assert whole >= set(small.boxes)
    # a crown cut by a tile's edge with under 40% of it inside is left out of that tile
    sliver = Picture(small.path, 500, 400, ((390.0, 10.0, 420.0, 40.0),), (1,))
    assert [len(t.boxes) for t in tiles(sliver, tiling)] == [0, 1]
    data = load_detection(f"voc:{trees}?tile=400")
    assert data.input_shape == (3, 400, 400) and data.test.window == tiling
    image, target = data.train[0]
    assert image.shape == (3, 400, 400)
    assert len(target["boxes"]) == len(data.train.pictures[0].boxes)


class Truth:
    """A 'detector' that finds, in any window, the true boxes as far as they are inside it:
    what a perfect detector trained on tiles sees."""

    def __init__(self, boxes: torch.Tensor, tiling: Tiling, width: int, height: int) -> None:
        self.boxes, self.tiling = boxes, tiling
        self.windows = iter(tiling.windows(width, height))

    def __call__(self, crops: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for _ in crops:
            x, y = next(self.windows)
            b = self.boxes - torch.tensor([x, y, x, y], dtype=torch.float32)
            b = b.clamp(0, self.tiling.size)
            seen = (b[:, 2] - b[:, 0] > 0) & (b[:, 3] - b[:, 1] > 0)
            out.append({"boxes": b[seen], "scores": torch.full((int(seen.sum()),), 0.9),
                        "labels": torch.ones(int(seen.sum()), dtype=torch.int64)})
        return out


def test_a_box_cut_by_two_tiles_comes_back_once():
    tiling = Tiling(100, overlap=0.5)
    box = torch.tensor([[80.0, 20.0, 110.0, 50.0]])  # windows x 0-100 and 50-150 both see it
    found = detect_tiled(Truth(box, tiling, 200, 100), torch.zeros(3, 100, 200), tiling, 100)
    assert found["boxes"].tolist() == box.tolist()
    assert torch.equal(found["labels"], torch.tensor([1]))


def test_merged_tiles_score_a_whole_real_image_perfectly(trees):
    [small] = [p for p in read_boxes(f"voc:{trees}")[0].pictures if p.path.stem == SMALL_YELL]
    tiling = Tiling(400)
    truth = torch.tensor(small.boxes)
    found = detect_tiled(Truth(truth, tiling, small.width, small.height),
                         torch.zeros(3, small.height, small.width), tiling, limit=1000)
    assert len(found["boxes"]) == len(truth) == 279
    assert sorted(map(tuple, found["boxes"].tolist())) == sorted(small.boxes)


def test_a_detection_on_a_crowd_region_is_no_false_alarm(tmp_path):
    hit, on_crowd = [10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]
    prediction = {"boxes": torch.tensor([on_crowd, hit]), "scores": torch.tensor([0.9, 0.5]),
                  "labels": torch.tensor([1, 1])}
    target = {"boxes": torch.tensor([hit, on_crowd]), "labels": torch.tensor([1, 1]),
              "iscrowd": torch.tensor([False, True])}
    crowd = BoxMAP()
    crowd.update([prediction], [target])
    dropped = BoxMAP()  # the crowd region left out: its detection, ranked first, is a false alarm
    dropped.update([prediction], [{"boxes": target["boxes"][:1], "labels": target["labels"][:1]}])
    assert crowd.compute()["map_50"] == 1.0 and dropped.compute()["map_50"] == 0.5
    # coco:DIR keeps iscrowd annotations as such: in the targets, but not trained on
    root = write_synthetic(tmp_path / "crowd", count=20, size=64)
    doc = json.loads((root / "annotations.json").read_text())
    doc["annotations"][0]["iscrowd"] = 1
    (root / "annotations.json").write_text(json.dumps(doc))
    image_id = doc["annotations"][0]["image_id"]
    [p] = [p for p in read_coco(f"coco:{root}").pictures
           if p.path.name == f"img{image_id - 1:04d}.png"]
    assert p.crowd_flags[0] and not any(p.crowd_flags[1:])
    data = load_detection(f"coco:{root}", test_fraction=0.5)
    split, index = next((s, i) for s in (data.train, data.val, data.test)
                        for i, q in enumerate(s.pictures) if q.path == p.path)
    _, target = split[index]
    assert target["iscrowd"].tolist() == list(p.crowd_flags)
    assert len(trainable(target, torch.device("cpu"))["boxes"]) == len(p.boxes) - 1


def test_images_of_several_sizes_are_resized_and_boxes_mapped_back(trees):
    space = load_space("detection_tiles")
    arch = baseline_arch(space, 0.5)
    model = build_model(space, arch, (3, 400, 400), 2).eval()
    assert (model.transform.min_size, model.transform.max_size) == ((200,), 200)
    found, _ = read_boxes(f"voc:{trees}")
    small = next(p for p in found.pictures if p.path.stem == SMALL_YELL)  # 1249 x 1035
    images = [torch.rand(3, 400, 400), torch.rand(3, small.height, small.width)]
    target = {"boxes": torch.tensor(small.boxes[:3]), "labels": torch.ones(3, dtype=torch.int64)}
    resized, targets = model.transform(images[1:], [target])
    # the 1249 x 1035 image fits 200 x 200 (its longer side to 200), its boxes with it
    assert resized.image_sizes == [(165, 200)]
    ratio = torch.tensor([200 / 1249, 165 / 1035] * 2)
    assert torch.allclose(targets[0]["boxes"], target["boxes"] * ratio)
    with torch.no_grad():
        out = model(images)
    for image, one in zip(images, out, strict=True):
        _, h, w = image.shape
        assert (one["boxes"][:, 2] <= w).all() and (one["boxes"][:, 3] <= h).all()
    assert out[1]["boxes"][:, 2].max() > 400  # in the large image's own pixels


@pytest.mark.parametrize(("case", "message"), [
    ("missing image", r"SOAP_061\.xml names image .*/JPEGImages/SOAP_061\.png, which does not "
                      r"exist"),
    ("empty box", r"OSBS_029\.xml, object 1: box \[203\.0, 67\.0, 203\.0, 90\.0\] has xmax "
                  r"<= xmin"),
    ("csv column", r"boxes\.csv has no column 'ymax' \(it needs image_path,xmin,ymin,xmax,ymax,"
                   r"label\)"),
    ("tile too large", r"tile size 4000 is larger than every image \(the largest is "
                       r"2299x2472\)"),
])
def test_bad_box_files_are_one_line_exit_2(trees, tmp_path, capsys, case, message):
    bad = tmp_path / "bad"
    shutil.copytree(trees, bad)
    spec = f"voc:{bad}"
    if case == "missing image":
        (bad / "JPEGImages" / "SOAP_061.png").unlink()
    elif case == "empty box":
        xml = bad / "Annotations" / "OSBS_029.xml"
        xml.write_text(xml.read_text().replace("<xmax>227</xmax>", "<xmax>203</xmax>", 1))
    elif case == "csv column":
        (bad / "boxes.csv").write_text("image_path,xmin,ymin,xmax,label\n"
                                       "JPEGImages/OSBS_029.png,1,2,3,Tree\n")
        spec = f"csv:{bad / 'boxes.csv'}"
    else:
        spec = f"voc:{bad}?tile=4000"
    with pytest.raises(DataError, match=message):
        load_detection(spec)
    assert main(["search", "--space", "detection", "--dataset", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raynas: error: ")


def test_whole_test_images_are_scored_through_the_window(trees):
    data = load_detection(f"voc:{trees}?tile=400")
    assert {p.path.stem for p in data.test.pictures} == set(TREES_TEST)
    truths = iter(data.test[i][1] for i in range(len(data.test)))

    def perfect(crops: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        # one 400x400 window per 400x400 test image: its true boxes, confidently
        out = []
        for crop in crops:
            assert crop.shape == (3, 400, 400)
            t = next(truths)
            out.append({"boxes": t["boxes"].as_subclass(torch.Tensor),
                        "scores": torch.ones(len(t["labels"])), "labels": t["labels"]})
        return out

    assert evaluate(perfect, data.test) == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}


@pytest.mark.e2e
def test_one_search_on_real_tiles(ray_local, tracking, tmp_path, trees):
    small = tmp_path / "small"  # the smaller Yellowstone crop alone, to train quickly
    shutil.copytree(trees, small)
    (small / "Annotations" / f"{TREES_TRAIN[0]}.xml").unlink()
    space = {"name": "trees_tiny", "model": "detection", "space": {
        "stem_channels": 16, "layers": {"repeat": [2, 3], "block": {
            "op": "conv_3x3", "channels": 32, "stride": 2, "connection": "series"}},
        "levels": 1, "neck": "none", "neck_channels": 32, "head": {"choice": ["fcos", "ssdlite"]},
        "anchor_scale": 4, "input_scale": 0.25,
        "train": {"lr": 0.003, "weight_decay": 1e-4, "batch_size": 8, "optimizer": "adam"}}}
    (tmp_path / "trees_tiny.yaml").write_text(json.dumps(space))  # JSON is YAML
    result = search(SearchConfig(
        space=str(tmp_path / "trees_tiny.yaml"), dataset=f"voc:{small}?tile=512",
        strategy="random", num_trials=2, max_epochs=1, retrain_epochs=1,
        tracking=Tracking(tracking_uri=tracking, storage=str(tmp_path / "ray"))))
    assert result.num_failed == 0 and result.num_trials == 2
    assert result.best["arch"]["input_scale"] == 0.25
    assert result.best["test_accuracy"] == result.best["test_map"]
