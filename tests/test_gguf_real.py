"""The two real GGUF files, against `transformers` loading the same files (opt-in, slow).

Run with `SINKS_JAX_MODELS=/path/to/models python -m pytest -q -m real_models
tests/test_gguf_real.py` after `sinks-jax models fetch smollm2-135m gemma3-270m --dir
/path/to/models`.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.real_models

MODELS = os.environ.get("SINKS_JAX_MODELS")
if not MODELS:
    pytest.skip("set SINKS_JAX_MODELS to the folder `sinks-jax models fetch` wrote",
                allow_module_level=True)
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sinks_jax import hf  # noqa: E402
from sinks_jax.pretrained import gguf as gg  # noqa: E402
from sinks_jax.pretrained.fetch import MODELS as SPECS  # noqa: E402
from sinks_jax.pretrained.generate import greedy_generate  # noqa: E402

TEXTS = [
    "Attention sinks appear in the first token of almost every sequence.",
    "It was the best of times, it was the worst of times;\nit was the age of wisdom.",
    "Cell membranes are made of a phospholipid bilayer (see Figure) — naïve café déjà vu!",
]


def _folder(name: str) -> str:
    folder = os.path.join(MODELS, name)
    if not os.path.exists(os.path.join(folder, SPECS[name].filename)):
        pytest.skip(f"{name} is not in {MODELS}; run `sinks-jax models fetch {name}`")
    return folder


def _transformers(name: str):
    folder = _folder(name)
    kwargs = dict(gguf_file=SPECS[name].filename)
    tok = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    return model.eval(), tok


@pytest.fixture(scope="module")
def smollm():
    return hf.load(_folder("smollm2-135m"), progress=False)


def test_smollm2_matches_transformers(smollm):
    model, tok = smollm
    ref_model, ref_tok = _transformers("smollm2-135m")
    for text in TEXTS:  # no digits: transformers' conversion drops the digit split (see docs)
        assert tok.encode(text) == ref_tok.encode(text, add_special_tokens=False)
    assert [tok._tok.id_to_token(i) for i in tok.encode(" 2024")] == ["Ġ", "2", "0", "2", "4"]
    ids = [[tok.bos_id] + tok.encode(TEXTS[0])]
    ours, _ = model(np.asarray(ids, dtype=np.int32))
    with torch.no_grad():
        ref = ref_model(torch.tensor(ids)).logits.numpy()
    # the same dequantised weights in fp32; 30 layers of sums in different orders.
    np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-3 * np.abs(ref).max(), rtol=0)


def test_smollm2_answers_a_question(smollm):
    model, tok = smollm
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(prompt)
    text = tok.decode(greedy_generate(model, ids, 8, eos_id=tok.eos_id)[len(ids):])
    assert "Paris" in text, text


def test_gemma3_config_tokenizer_and_logits():
    folder = _folder("gemma3-270m")
    config, tensors, tok = gg.read_gguf(os.path.join(folder, SPECS["gemma3-270m"].filename))
    assert config["rope_theta"] == 1e6 and config["sliding_window"] == 512
    assert config["query_pre_attn_scalar"] == 256 and config["rope_local_base_freq"] == 1e4
    assert [i for i, t in enumerate(config["layer_types"]) if t == "full_attention"] == [5, 11, 17]
    assert config["tie_word_embeddings"] and "lm_head.weight" not in tensors
    ref_model, ref_tok = _transformers("gemma3-270m")
    for text in TEXTS + ["tabs\tand  two spaces\n\nand 1234"]:
        assert tok.encode(text) == ref_tok.encode(text, add_special_tokens=False), text
    model, _ = hf.load(folder, progress=False)
    ids = [[tok.bos_id] + tok.encode(TEXTS[0])]
    ours, _ = model(np.asarray(ids, dtype=np.int32))
    with torch.no_grad():
        ref = ref_model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-3 * np.abs(ref).max(), rtol=0)
