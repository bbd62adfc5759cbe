"""Packing grid vs a brute-force, token-by-token construction."""

import itertools

import numpy as np
import pytest

from sinks_jax.data import attention_mask_from_segments, pack_documents
from sinks_jax.data.packing import MODES

BOS, EOS, PAD = 1, 2, 0


def brute_force(docs, T, mode, intra_doc, reset_positions):
    """Per-token loops, written from the layout description only."""
    units = []  # list of [(id, doc)]
    for d, doc in enumerate(docs):
        unit = [(tok, d) for tok in doc] + [(EOS, d)]
        if mode in ("none", "concat_bos"):
            unit = [(BOS, d)] + unit
        units.append(unit)
    stream = [x for u in units for x in u]
    if mode == "none":
        windows = [u[: T + 1] for u in units]
    elif mode == "fixed_bos":
        windows = []
        for s in range(0, len(stream), T):
            chunk = stream[s : s + T]
            windows.append([(BOS, chunk[0][1])] + chunk)  # bos joins the first piece
    else:
        windows = [stream[s : s + T + 1] for s in range(0, len(stream), T + 1)]
    out = {k: [] for k in ("tokens", "targets", "segment_ids", "positions", "loss_mask")}
    for w in windows:
        toks, tgts, segs, poss, loss = [], [], [], [], []
        seg, prev_doc, start = 0, None, 0
        for t in range(T):
            real = t < len(w)
            treal = t + 1 < len(w)
            toks.append(w[t][0] if real else PAD)
            tgts.append(w[t + 1][0] if treal else PAD)
            if not real:
                segs.append(0)
                poss.append(0)
                loss.append(0)
                continue
            doc = w[t][1]
            if doc != prev_doc:
                seg += 1
                start = t
                prev_doc = doc
            segs.append(seg if intra_doc else 1)
            if not reset_positions:
                poss.append(t)
            elif mode == "fixed_bos" and seg > 1:
                poss.append(t - start + 1)
            else:
                poss.append(t - start)
            ok = treal and (not intra_doc or w[t + 1][1] == doc)
            loss.append(int(ok))
        for k, v in zip(out, (toks, tgts, segs, poss, loss)):
            out[k].append(v)
    return {k: np.array(v, dtype=np.int32).reshape(-1, T) for k, v in out.items()}, units


def random_docs(rng, n):
    return [list(rng.integers(3, 100, size=rng.integers(0, 40))) for _ in range(n)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "intra_doc,reset_positions", list(itertools.product([False, True], repeat=2))
)
def test_pack_matches_brute_force(mode, intra_doc, reset_positions):
    # A seed fixed per case (Python's hash() of a str changes between runs).
    rng = np.random.default_rng([MODES.index(mode), intra_doc, reset_positions])
    for T in (2, 5, 16):
        docs = random_docs(rng, 30)
        got = pack_documents(
            docs,
            seq_len=T,
            mode=mode,
            intra_doc=intra_doc,
            reset_positions=reset_positions,
            bos_id=BOS,
            eos_id=EOS,
            pad_id=PAD,
        )
        want, units = brute_force(docs, T, mode, intra_doc, reset_positions)
        for k in want:
            assert got[k].dtype == np.int32 and got[k].shape == want[k].shape, k
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{mode} T={T} {k}")


@pytest.mark.parametrize("mode", ["concat", "concat_bos", "fixed_bos"])
def test_no_token_lost_or_duplicated(mode):
    rng = np.random.default_rng(7)
    docs = random_docs(rng, 50)
    T = 8
    rows = pack_documents(docs, seq_len=T, mode=mode, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    # Rebuild the stream: each row's real inputs (minus the fixed <bos>) then its last real target.
    rebuilt = []
    for tok, tgt, seg in zip(rows["tokens"], rows["targets"], rows["segment_ids"]):
        n_real = int((seg > 0).sum())
        inputs = list(tok[1:n_real] if mode == "fixed_bos" else tok[:n_real])
        last_target = [tgt[n_real - 1]] if n_real and tgt[n_real - 1] != PAD else []
        rebuilt += inputs + last_target
    expected = []
    for doc in docs:
        expected += ([BOS] if mode == "concat_bos" else []) + list(doc) + [EOS]
    assert rebuilt == expected


def test_hand_built_layouts():
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34]]
    kw = dict(seq_len=6, intra_doc=True, reset_positions=True, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    r = pack_documents(docs, mode="concat_bos", **kw)
    assert r["tokens"].tolist() == [
        [1, 10, 11, 12, 2, 1],
        [21, 2, 1, 30, 31, 32],
        [34, 2, 0, 0, 0, 0],
    ]
    assert r["targets"].tolist() == [
        [10, 11, 12, 2, 1, 20],
        [2, 1, 30, 31, 32, 33],
        [2, 0, 0, 0, 0, 0],
    ]
    assert r["segment_ids"].tolist() == [[1, 1, 1, 1, 1, 2], [1, 1, 2, 2, 2, 2], [1, 1, 0, 0, 0, 0]]
    assert r["positions"].tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 0, 1, 2, 3], [0, 1, 0, 0, 0, 0]]
    assert r["loss_mask"].tolist() == [[1, 1, 1, 1, 0, 1], [1, 0, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]]
    r = pack_documents(docs, mode="fixed_bos", **kw)
    assert r["tokens"].tolist() == [
        [1, 10, 11, 12, 2, 20],
        [1, 2, 30, 31, 32, 33],
        [1, 2, 0, 0, 0, 0],
    ]
    assert r["positions"].tolist() == [[0, 1, 2, 3, 4, 1], [0, 1, 1, 2, 3, 4], [0, 1, 0, 0, 0, 0]]
    r = pack_documents(docs, mode="none", **kw)
    assert r["tokens"].tolist()[2] == [1, 30, 31, 32, 33, 34]
    assert r["targets"].tolist()[2] == [30, 31, 32, 33, 34, 2]
    r = pack_documents(docs, mode="concat", **{**kw, "intra_doc": False})
    assert r["segment_ids"].tolist() == [[1] * 6, [1] * 5 + [1]]
    assert r["loss_mask"].tolist() == [[1] * 6, [1] * 5 + [0]]


def test_masks_from_segments_vs_hand_built():
    seg = np.array([[1, 1, 2, 2, 0]])
    T = True
    F = False
    want = np.array(
        [[[T, F, F, F, F], [T, T, F, F, F], [F, F, T, F, F], [F, F, T, T, F], [F, F, F, F, T]]]
    )
    np.testing.assert_array_equal(attention_mask_from_segments(seg, False), want)
    want_g = want.copy()
    want_g[:, :, 0] = True
    np.testing.assert_array_equal(attention_mask_from_segments(seg, True), want_g)


def test_fixed_bos_key0_visible_to_every_segment():
    rng = np.random.default_rng(3)
    rows = pack_documents(
        random_docs(rng, 20),
        seq_len=32,
        mode="fixed_bos",
        intra_doc=True,
        reset_positions=True,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
    )
    assert (rows["tokens"][:, 0] == BOS).all()
    assert (rows["segment_ids"][:, 0] == 1).all()
    assert rows["segment_ids"].max() > 1  # several documents per row
    mask = attention_mask_from_segments(rows["segment_ids"], global_first_key=True)
    real = rows["segment_ids"] > 0
    assert mask[:, :, 0][real].all()
    # Without the flag the later documents cannot see the <bos>.
    mask_no = attention_mask_from_segments(rows["segment_ids"], global_first_key=False)
    assert not mask_no[:, :, 0][rows["segment_ids"] > 1].any()


def test_bad_inputs():
    with pytest.raises(ValueError, match="packing mode 'bogus'"):
        pack_documents([[3]], seq_len=4, mode="bogus")
    with pytest.raises(ValueError, match="seq_len=1"):
        pack_documents([[3]], seq_len=1, mode="concat")
    with pytest.raises(ValueError, match="negative token id"):
        pack_documents([[3, -1]], seq_len=4, mode="concat")
    with pytest.raises(ValueError, match="pad_id=-1"):
        pack_documents([[3]], seq_len=4, mode="concat", pad_id=-1)


@pytest.mark.parametrize("mode", ["fixed_bos", "concat"])
@pytest.mark.parametrize("global_first_key", [False, True])
def test_model_visible_mask_is_the_packing_mask(mode, global_first_key):
    """The segment-id rule is written twice, on purpose: here in numpy (the data's contract,
    checked by hand above) and in the model (`attention.visible_mask`, what attention
    applies). On packed rows with several documents and padding they must agree."""
    attention = pytest.importorskip("sinks_jax.model.attention")
    rng = np.random.default_rng(5)
    rows = pack_documents(
        random_docs(rng, 20), seq_len=32, mode=mode, intra_doc=True, reset_positions=True,
        bos_id=BOS, eos_id=EOS, pad_id=PAD,
    )  # fmt: skip
    seg_BxT = rows["segment_ids"]
    assert seg_BxT.max() > 1 and (seg_BxT == 0).any()  # several documents, and padding
    want = attention_mask_from_segments(seg_BxT, global_first_key)
    got = attention.visible_mask(32, seg_BxT, global_first_key)
    np.testing.assert_array_equal(np.asarray(got), want)
