"""Box formats beside COCO's: ``voc:DIR`` (Pascal VOC XML) and ``csv:FILE`` (one box a row, as
annotation tools and DeepForest export), and ``raynas data real-trees DIR``, which lays out the
real aerial images with tree crowns that ship inside the ``deepforest`` wheel as ``voc:DIR``.

``voc:DIR`` reads ``DIR/Annotations/*.xml``, each naming its image (``<filename>``) in
``DIR/JPEGImages/``. If ``DIR/ImageSets/Main/test.txt`` lists image ids (the XML files' stems),
those images are the test split. ``<difficult>1</difficult>`` objects are ignore regions, as
VOC's evaluation treats them (``Picture.crowd``).

``csv:FILE`` reads the columns ``image_path,xmin,ymin,xmax,ymax,label`` (others are ignored),
the images relative to the file's folder; a row whose box is ``0,0,0,0`` marks an image
without boxes (DeepForest's convention).

Both check every box against its image and name the file and row or object that is wrong. The
XML is read with the standard library's ``ElementTree``: torchvision's ``VOCDetection`` reads
only VOC's own downloads (fixed years and folders) and checks nothing.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from raynas.errors import DataError
from raynas.tasks.detection.boxes import TOLERANCE, Annotated, Box, Picture, image_size, picture

VOC_ANNOTATIONS, VOC_IMAGES, VOC_TEST = "Annotations", "JPEGImages", "ImageSets/Main/test.txt"
CSV_COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")
DEEPFOREST_INSTALL = "pip install --no-deps 'deepforest==2.1.*'"
#: The deepforest wheel's NEON images: trained on (tiles of) the two large Yellowstone crops,
#: tested on the two small ones of other forests (Florida's OSBS, California's SOAP).
TREES_TRAIN = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
TREES_TEST = ("OSBS_029", "SOAP_061")
TREE = "Tree"


def check_box(spec: str, where: str, box: Box, width: int, height: int) -> None:
    """A one-line DataError unless ``box`` (XYXY) has an area and lies in its image."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise DataError(f"{spec}: {where}: box {list(box)} has xmax <= xmin or ymax <= ymin")
    if x0 < -TOLERANCE or y0 < -TOLERANCE or x1 > width + TOLERANCE or y1 > height + TOLERANCE:
        raise DataError(f"{spec}: {where}: box {list(box)} is out of its {width}x{height} image")


def _clip(box: Box, width: int, height: int) -> Box:
    return max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])


def _folder(spec: str, kind: str) -> Path:
    found, _, rest = spec.partition(":")
    if found != kind or not rest:
        raise DataError(f"{spec}: expected {kind}:PATH")
    return Path(rest).expanduser().absolute()  # trials read the images from other folders


def _image(spec: str, where: str, path: Path) -> tuple[int, int]:
    if not path.is_file():
        raise DataError(f"{spec}: {where} names image {path}, which does not exist")
    return image_size(spec, path)


def read_voc(spec: str) -> Annotated:
    """Read and check ``voc:DIR``."""
    root = _folder(spec, "voc")
    files = sorted((root / VOC_ANNOTATIONS).glob("*.xml"))
    if not files:
        raise DataError(f"{spec}: no {root / VOC_ANNOTATIONS}/*.xml (Pascal VOC: "
                        f"DIR/{VOC_ANNOTATIONS}/*.xml, DIR/{VOC_IMAGES}/)")
    parsed = {f.stem: _read_xml(spec, f, root / VOC_IMAGES) for f in files}
    names = sorted({n for _, objects in parsed.values() for _, n, _ in objects})
    label = {n: k for k, n in enumerate(names, start=1)}
    pictures = {stem: picture(path, w, h, [(b, label[n], c) for b, n, c in objects])
                for stem, ((path, w, h), objects) in parsed.items()}
    test_file = root / VOC_TEST
    test: list[str] = test_file.read_text().split() if test_file.is_file() else []
    for stem in test:
        if stem not in pictures:
            raise DataError(f"{spec}: {test_file} lists {stem!r}, which has no "
                            f"{VOC_ANNOTATIONS}/{stem}.xml")
    held_out = tuple(pictures[s] for s in test)
    rest = tuple(p for s, p in pictures.items() if s not in set(test))
    if not any(not c for p in rest for c in p.crowd_flags):
        raise DataError(f"{spec}: no box outside the test images to train on")
    return Annotated(spec, rest, ("background", *names), held_out)


def _read_xml(spec: str, file: Path, images: Path
              ) -> tuple[tuple[Path, int, int], list[tuple[Box, str, bool]]]:
    """One VOC file: its image (path, width, height) and its objects (box, class, difficult)."""
    try:
        doc = ET.parse(file).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{spec}: malformed XML in {file} ({exc})") from None
    name = doc.findtext("filename")
    if not name:
        raise DataError(f"{spec}: {file.name} has no <filename>")
    path = images / name.strip()
    width, height = _image(spec, file.name, path)
    size = (doc.findtext("size/width"), doc.findtext("size/height"))
    if all(size) and (int(size[0]), int(size[1])) != (width, height):
        raise DataError(f"{spec}: {path.name} is {width}x{height}, {file.name} says "
                        f"{size[0]}x{size[1]}")
    objects = []
    for i, obj in enumerate(doc.iter("object"), start=1):
        where = f"{file.name}, object {i}"
        cls = (obj.findtext("name") or "").strip()
        try:
            box = tuple(float(obj.findtext(f"bndbox/{k}") or "")
                        for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DataError(f"{spec}: {where} has no <bndbox> of four numbers") from None
        if not cls:
            raise DataError(f"{spec}: {where} has no <name>")
        check_box(spec, where, box, width, height)
        objects.append((_clip(box, width, height), cls,
                        (obj.findtext("difficult") or "0").strip() == "1"))
    return (path, width, height), objects


def read_csv(spec: str) -> Annotated:
    """Read and check ``csv:FILE``; the images are split at random (``load_detection``)."""
    file = _folder(spec, "csv")
    if not file.is_file():
        raise DataError(f"{spec}: file not found: {file}")
    with file.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        columns = rows[0].keys() if rows else ()
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{spec}: {file.name} has no column {missing[0]!r} (it needs "
                        f"{','.join(CSV_COLUMNS)})")
    sizes: dict[Path, tuple[int, int]] = {}
    found: dict[Path, list[tuple[Box, str]]] = {}
    for row_number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{file.name}, line {row_number}"
        path = file.parent / row["image_path"]
        if path not in sizes:
            sizes[path] = _image(spec, where, path)
        try:
            box = tuple(float(row[k]) for k in CSV_COLUMNS[1:5])
        except (TypeError, ValueError):
            raise DataError(f"{spec}: {where}: xmin, ymin, xmax, ymax must be numbers") from None
        boxes = found.setdefault(path, [])
        if box == (0.0, 0.0, 0.0, 0.0):  # DeepForest's row for an image without boxes
            continue
        if not row["label"]:
            raise DataError(f"{spec}: {where} has no label")
        check_box(spec, where, box, *sizes[path])
        boxes.append((_clip(box, *sizes[path]), row["label"]))
    if not any(found.values()):
        raise DataError(f"{spec}: {file.name} has no boxes")
    names = sorted({n for boxes in found.values() for _, n in boxes})
    label = {n: k for k, n in enumerate(names, start=1)}
    pictures: tuple[Picture, ...] = tuple(
        picture(path, *sizes[path], [(b, label[n], False) for b, n in boxes])
        for path, boxes in found.items())
    return Annotated(spec, pictures, ("background", *names))


def deepforest_data(spec: str = "raynas data real-trees") -> Path:
    """The ``data`` folder inside the installed deepforest wheel, found without importing it
    (its own dependencies are not needed), or a one-line DataError."""
    found = importlib.util.find_spec("deepforest")
    if found is None or not found.submodule_search_locations:
        raise DataError(f"{spec}: the tree images ship inside the deepforest wheel, which is not "
                        f"installed: {DEEPFOREST_INSTALL}")
    return Path(next(iter(found.submodule_search_locations))) / "data"


def write_real_trees(root: Path) -> tuple[int, int]:
    """Lay out deepforest's four NEON images and their crowns as ``voc:ROOT``: the two
    Yellowstone crops to train on, the OSBS and SOAP images as the test split. Every box is
    one class, ``Tree``: SOAP's ``Dead`` and ``Alive`` are trees too, and the training images
    know no other class. Returns the number of images and boxes."""
    source = deepforest_data()
    for folder in (VOC_ANNOTATIONS, VOC_IMAGES, "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    boxes = 0
    for stem in (*TREES_TRAIN, *TREES_TEST):
        doc = ET.parse(source / f"{stem}.xml")
        # OSBS_029.xml names its .tif; the .png beside it holds the same pixels
        doc.getroot().find("filename").text = f"{stem}.png"
        for obj in doc.getroot().iter("object"):
            obj.find("name").text = TREE
            boxes += 1
        doc.write(root / VOC_ANNOTATIONS / f"{stem}.xml")
        shutil.copyfile(source / f"{stem}.png", root / VOC_IMAGES / f"{stem}.png")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(TREES_TRAIN) + "\n")
    (root / VOC_TEST).write_text("\n".join(TREES_TEST) + "\n")
    return len(TREES_TRAIN) + len(TREES_TEST), boxes


def real_trees_command(args) -> None:
    """``raynas data real-trees DIR``."""
    images, boxes = write_real_trees(Path(args.folder))
    print(f"wrote {images} NEON aerial images with {boxes} tree crowns to {args.folder} "
          f"(train: {len(TREES_TRAIN)} Yellowstone crops; test: {', '.join(TREES_TEST)}); "
          f"search them on tiles with --dataset 'voc:{args.folder}?tile=400'")
