"""The batching engine: requests generated together give what each gives alone (greedy: transformers' own
generate on that prompt; sampled: the same seed gives the same text whatever else is in the batch)."""

from __future__ import annotations

import pytest
import torch

from llmfoundry.serve.engine import Engine, Request, Sampling, generate_group
from llmfoundry.serve.loading import load
from tests.e2e.test_serve import PROMPTS, _export, _references


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, gpt2_tokenizer_dir):
    path = _export(tmp_path_factory.mktemp("engine") / "tiny", gpt2_tokenizer_dir)
    return path, load(path)


def _ids(loaded, prompt: str) -> list[int]:
    return loaded.tokenizer(prompt)["input_ids"]


def test_a_padded_group_gives_each_prompt_its_own_greedy_text(tiny):
    path, loaded = tiny
    prompts = PROMPTS[:6] + ["A much longer prompt about aspirin, the heart and the risk of stroke in adults"]
    pieces: dict[int, list[str]] = {i: [] for i in range(len(prompts))}
    requests = [Request(_ids(loaded, p), Sampling(max_tokens=8, temperature=0),
                        on_text=lambda t, i=i: pieces[i].append(t)) for i, p in enumerate(prompts)]
    results = generate_group(loaded.model, loaded.tokenizer, requests)
    assert [r.text for r in results] == _references(path, prompts, 8)
    assert all("".join(pieces[i]) == r.text and len(pieces[i]) > 1 for i, r in enumerate(results))
    assert all(r.finish_reason == "length" and r.completion_tokens == 8 for r in results)


def test_rows_keep_their_own_seed_settings_and_limits(tiny):
    _, loaded = tiny
    sampled = Sampling(max_tokens=10, temperature=1.0, top_p=0.9, seed=5)
    alone = generate_group(loaded.model, loaded.tokenizer, [Request(_ids(loaded, "The heart"), sampled)])[0]
    crowd = [Request(_ids(loaded, "Risk of"), Sampling(max_tokens=3, temperature=0.7, seed=1)),
             Request(_ids(loaded, "The heart"), sampled),
             Request(_ids(loaded, "We report"), Sampling(max_tokens=6, temperature=0))]
    together = generate_group(loaded.model, loaded.tokenizer, crowd)
    assert together[1].text == alone.text  # same seed, same text, whatever else is in the batch
    assert [r.completion_tokens for r in together] == [3, 10, 6]
    other = generate_group(loaded.model, loaded.tokenizer,
                           [Request(_ids(loaded, "The heart"), Sampling(max_tokens=10, temperature=1.0, seed=6))])[0]
    assert other.text != alone.text


def test_stop_strings_end_a_row_and_are_not_streamed(tiny):
    _, loaded = tiny
    full = generate_group(loaded.model, loaded.tokenizer,
                          [Request(_ids(loaded, "Aspirin reduces"), Sampling(max_tokens=12, temperature=0))])[0].text
    stop = full[len(full) // 2:][:4]
    streamed: list[str] = []
    cut = generate_group(loaded.model, loaded.tokenizer,
                         [Request(_ids(loaded, "Aspirin reduces"), Sampling(max_tokens=12, temperature=0, stop=[stop]),
                                  on_text=streamed.append)])[0]
    assert cut.text == full[:full.index(stop)] and cut.finish_reason == "stop"
    assert "".join(streamed) == cut.text


def test_engine_groups_waiting_requests(tiny):
    _, loaded = tiny
    engine = Engine(loaded.model, loaded.tokenizer, max_batch=8, gather_s=0.5)
    done: list = []
    try:
        for prompt in PROMPTS[:8]:
            engine.submit(Request(_ids(loaded, prompt), Sampling(max_tokens=4, temperature=0), on_done=done.append))
    finally:
        engine.close()  # works off the queue (the requests, then its stop marker) and joins the thread
    assert len(done) == 8 and max(engine.groups) > 1
    assert torch.tensor(engine.groups).sum() == 8


def test_a_run_folder_loads_as_its_export(tmp_path, gpt2_tokenizer_dir):
    """chat/serve on a run folder export its `latest` checkpoint on the fly: the same greedy text as the
    exported directory of that model, and a run folder without a tokenizer is a one-line user error."""
    from llmfoundry.checkpoint.reader import save_model_checkpoint
    from llmfoundry.config import build
    from llmfoundry.errors import UserError
    from llmfoundry.models import ModelConfig, build_model

    raw = {"name": "mpt", "preset": "mpt-tiny", "vocab_size": 50257, "init_config": {"name": "normal_", "init_std": 0.1}}
    torch.manual_seed(0)
    model = build_model(build(ModelConfig, raw))
    model.init_weights()
    save_model_checkpoint(model, {"model": raw, "tokenizer": {"name": str(gpt2_tokenizer_dir)}},
                          tmp_path / "run" / "checkpoints" / "step-00000003")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-00000003\n")
    loaded = load(tmp_path / "run")
    assert loaded.name == "run" and loaded.window == model.args.max_seq_len
    exported = _export(tmp_path / "hf", gpt2_tokenizer_dir)  # the same seed and init: the same weights
    prompts = PROMPTS[:3]
    results = generate_group(loaded.model, loaded.tokenizer,
                             [Request(_ids(loaded, p), Sampling(max_tokens=6, temperature=0)) for p in prompts])
    assert [r.text for r in results] == _references(exported, prompts, 6)
    save_model_checkpoint(model, {"model": raw}, tmp_path / "bare" / "checkpoints" / "step-00000001")
    (tmp_path / "bare" / "checkpoints" / "latest").write_text("step-00000001\n")
    with pytest.raises(UserError, match="names no tokenizer"):
        load(tmp_path / "bare")
