import numpy as np
import pytest
import torch

from frugalformers.data.shards import TokenLoader, pack_sequences, pad_batch
from frugalformers.data.tasks import DataError, exact_match, load_user_rows, macro_f1, score, token_f1


def test_loader_resume_yields_the_same_next_batches():
    tokens = np.arange(10_000, dtype=np.uint16)
    words = np.arange(10_000, dtype=np.uint32) * 2
    a = TokenLoader(tokens, 16, 8, seed=3, words=words)
    for _ in range(100):  # crosses an epoch boundary (78 batches per epoch)
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(5)]
    b = TokenLoader(tokens, 16, 8, seed=3, words=words)
    b.load_state_dict(state)
    for e in expected:
        got = b.next_batch()
        assert torch.equal(got["input_ids"], e["input_ids"]) and torch.equal(got["word_ids"], e["word_ids"])


def test_loader_epochs_cover_every_window_once_and_reshuffle():
    tokens = np.arange(64 * 10, dtype=np.uint16)
    loader = TokenLoader(tokens, 10, 8, seed=0)
    first = torch.cat([loader.next_batch()["input_ids"][:, 0] for _ in range(8)])
    assert sorted(first.tolist()) == list(range(0, 640, 10))
    second = torch.cat([loader.next_batch()["input_ids"][:, 0] for _ in range(8)])
    assert sorted(second.tolist()) == sorted(first.tolist()) and second.tolist() != first.tolist()


def test_loader_ranks_are_disjoint():
    tokens = np.arange(64 * 10, dtype=np.uint16)
    r0 = TokenLoader(tokens, 10, 4, rank=0, world=2)
    r1 = TokenLoader(tokens, 10, 4, rank=1, world=2)
    a = {int(x) for _ in range(8) for x in r0.next_batch()["input_ids"][:, 0]}
    b = {int(x) for _ in range(8) for x in r1.next_batch()["input_ids"][:, 0]}
    assert not a & b and len(a | b) == 64


def test_loader_rejects_too_little_data():
    with pytest.raises(ValueError, match="fewer than one batch"):
        TokenLoader(np.arange(10, dtype=np.uint16), 8, 4)


def test_pad_and_pack():
    ids, mask = pad_batch([[1, 2, 3], [4]], 0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pack_sequences([[5, 6], [7, 8, 9]], 3, 1).tolist() == [[5, 6, 1], [7, 8, 9]]


def test_csv_errors_name_the_line(tmp_path):
    good = tmp_path / "ok.csv"
    good.write_text('text,label\nhello world,pos\n"multi\nline",neg\n')
    assert load_user_rows(good) == [{"text": "hello world", "label": "pos"}, {"text": "multi\nline", "label": "neg"}]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,pos\n,neg\n")
    with pytest.raises(DataError, match=r"bad.csv:3: `text` is missing"):
        load_user_rows(bad)
    extra = tmp_path / "extra.csv"
    extra.write_text("text,label\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"extra.csv:3: more fields"):
        load_user_rows(extra)
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("sentence,label\na,b\n")
    with pytest.raises(DataError, match=r"nohead.csv:1: the header must name a `text` column"):
        load_user_rows(nohead)


def test_jsonl_errors_name_the_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": "x"\n')
    with pytest.raises(DataError, match=r"d.jsonl:3: not valid JSON"):
        load_user_rows(p)
    p.write_text('{"text": "a", "label": ""}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: `label` is empty"):
        load_user_rows(p)
    with pytest.raises(DataError, match="use a .csv"):
        load_user_rows(tmp_path / "x.txt") if (tmp_path / "x.txt").write_text("a") else None


def test_metrics():
    assert exact_match("The Paris!", "paris") == 1.0
    assert token_f1("new york city", "new york") == pytest.approx(0.8)
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert score("em_f1", ["x"], ["x"]) == {"em": 1.0, "f1": 1.0}
    with pytest.raises(ValueError, match="metric='bleu'"):
        score("bleu", [], [])


def test_unpack_adds_what_a_dataset_lacks_and_replaces_nothing(tmp_path, monkeypatch, demo_data):
    """Two packs of one dataset (say corpus with the 8k shards, then with the 32k ones) unpack into
    one folder: the second adds its files, and a file already there is never replaced."""
    import io
    import tarfile

    from frugalformers.data.pack import pack_archive, unpack_archive

    first = pack_archive(["demo"], tmp_path / "a.tar.xz", "tiny", 2.0, log=lambda *_: None)
    second = tmp_path / "b.tar.xz"
    with tarfile.open(second, "w:xz") as tar:
        for name, text in (("datasets/demo/shards/base/meta.json", "{}"), ("datasets/demo/manifest.json", "new")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    monkeypatch.setenv("FRUGAL_HOME", str(tmp_path / "home"))
    assert unpack_archive(first) == ["demo"]
    manifest = (tmp_path / "home/datasets/demo/manifest.json").read_text()
    assert unpack_archive(second) == ["demo"]
    assert (tmp_path / "home/datasets/demo/shards/base/meta.json").exists()
    assert (tmp_path / "home/datasets/demo/manifest.json").read_text() == manifest  # kept
    assert unpack_archive(second) == []  # nothing left to add
