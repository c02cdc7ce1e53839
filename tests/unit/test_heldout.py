"""`foundry eval-text`: held-out bits per byte against transformers' own loss, window limits, the val split."""

import json
import math

import pytest
import torch

from llmfoundry.data.convert import split_of
from llmfoundry.errors import UserError
from llmfoundry.eval.heldout import evaluate_text, held_out_documents, score_stream, token_stream

DOCS = ["Aspirin inhibits cyclooxygenase in platelets.", "Le café coûte 3 € — β-blockers lower the heart rate.",
        "Metformin lowers hepatic glucose output in type 2 diabetes."]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, gpt2_tokenizer_dir):
    """A small random GPT-2 with 64 learned positions, saved with the real GPT-2 tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gpt2")
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gpt2_tokenizer_dir).save_pretrained(out)
    return out


def _texts(tmp_path, docs):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return [str(path)]


def test_one_window_equals_transformers_loss_and_bytes_are_utf8(tmp_path, gpt2_dir):
    """One window over the whole stream: nats = HF's mean loss x predicted tokens; bytes are UTF-8 bytes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gpt2_dir).double().eval()
    stream = token_stream(AutoTokenizer.from_pretrained(gpt2_dir), DOCS[:2])
    assert len(stream) <= 64
    ids = torch.tensor([stream])
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss.item() * (len(stream) - 1)
    [score] = evaluate_text(str(gpt2_dir), _texts(tmp_path, DOCS[:2]), [63], out=str(tmp_path / "s.json"))
    assert score.tokens == len(stream) - 1 and score.documents == 2
    assert score.bytes == sum(len(d.encode()) for d in DOCS[:2]) > sum(len(d) for d in DOCS[:2])
    assert score.nats == pytest.approx(reference, rel=1e-5)
    assert score.bits_per_byte == pytest.approx(reference / math.log(2) / score.bytes, rel=1e-5)
    saved = json.loads((tmp_path / "s.json").read_text())["scores"][0]
    assert saved["bits_per_byte"] == pytest.approx(score.bits_per_byte)


def test_windows_predict_every_token_once_each_from_its_own_window(gpt2_dir):
    """seq_len 8 over a longer stream: the sum of HF's loss over windows of 9 tokens overlapping by one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    stream = token_stream(AutoTokenizer.from_pretrained(gpt2_dir), DOCS)
    expected, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, 8):
            window = torch.tensor([stream[start:start + 9]])
            n = window.shape[1] - 1
            expected += model(input_ids=window, labels=window).loss.item() * n
            count += n
    tokens, nats = score_stream(model, stream, 8, batch_size=3, device=torch.device("cpu"))
    assert (len(stream) - 1) % 8 != 0, "the stream should end in a short window"
    assert tokens == count == len(stream) - 1
    assert nats == pytest.approx(expected, rel=1e-5)


def test_learned_positions_stop_at_their_limit_others_extend(tmp_path, gpt2_dir):
    from transformers import MptConfig

    from llmfoundry.eval.heldout import window_limit

    with pytest.raises(UserError, match="learned positions \\(n_positions=64\\) cannot score 128-token windows; "
                                        "the longest it accepts is 64"):
        evaluate_text(str(gpt2_dir), _texts(tmp_path, DOCS), [128])
    config = MptConfig(max_seq_len=128)
    window_limit(config, 1024, "mpt")
    assert config.max_seq_len == 1024


def test_held_out_documents_are_convert_datasets_val_split(tmp_path):
    docs = [f"abstract number {i} about enzymes" for i in range(400)]
    held = held_out_documents(_texts(tmp_path, docs), val_fraction=0.1)
    assert held == [d for d in docs if split_of(d, 0.1) == 1] and 20 < len(held) < 60
    assert held_out_documents(_texts(tmp_path, docs), val_fraction=0.1, max_docs=5) == held[:5]
