"""Perplexity as lm-eval scores it (session 25): HFLM.loglikelihood_rolling (lm_eval/models/huggingface.py) scores
every token of a text, the first after the prefix token (BOS, else EOS), in rolling windows of the model's context
length (lm_eval/utils.py get_rolling_token_windows, make_disjoint_window). Ours cut a text at 256 tokens (a long
document's rest unscored), never scored its first token, and let a 128-position model read positions 128-255. Beside
it, lm-eval's wikitext metrics (word and byte perplexity, bits per byte), which compare across tokenizers: a table of
models whose tokenizers differ is headed by the byte perplexity, and says why."""

from __future__ import annotations

import math

import pytest
import torch
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from backend import evalrolling, evalscore, registry, scoretable, scorevalues
from backend.evaldevice import load_model
from backend.evaltasks import task_set
from storage.models import EvalScore
from tests.conftest import CORPUS
from tests.test_review_cli import cli

LONG = " ".join(CORPUS[:8])  # 328 tokens of the tiny tokenizer: three windows of its 128 positions
TEXTS = [LONG, CORPUS[0][:24], "Hi", LONG[:120], LONG[:300]]


def _lm_eval_reference(tok, model, text: str, window: int) -> tuple[float, int]:
    """The text's log-likelihood as lm-eval's HFLM computes it, written out: lm-eval's own windows of the text's
    tokens (tok_encode: the tokenizer's default encoding; prefix_token_id: BOS, else EOS), each scored as
    _loglikelihood_tokens scores (context, continuation): the last len(continuation) logits of their concatenation,
    at most window + 1 tokens, minus the last."""
    tokens = tok(text).input_ids
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    total = 0.0
    for context, cont in map(make_disjoint_window, get_rolling_token_windows(tokens, prefix, window, 1)):
        inp = torch.tensor([(context + cont)[-(window + 1):][:-1]])
        with torch.inference_mode():
            logp = torch.log_softmax(model(inp).logits[0].float(), -1)[-len(cont):]
        total += logp.gather(1, torch.tensor(cont)[:, None]).sum().item()
    return total, len(tokens)


@pytest.mark.parametrize("window", [1, 2, 3, 7, 16])
def test_the_windows_are_lm_evals(window):
    """Our windows of a text are lm-eval's (get_rolling_token_windows with context_len 1, made disjoint): the same
    tokens read, the same scored; every token scored once, no window wider than the model reads."""
    for n in range(0, 40):
        ids = list(range(100, 100 + n))
        theirs = [(c + t, len(t)) for c, t in map(make_disjoint_window, get_rolling_token_windows(ids, 5, window, 1))]
        ours = evalrolling.rolling_windows(ids, 5, window)
        assert ours == theirs, (n, window)
        assert sum(k for _, k in ours) == n and all(len(s) - 1 <= window for s, _ in ours)
    # no prefix token at all: the first token has nothing to follow, the rest are scored
    assert evalrolling.rolling_windows([7, 8, 9], None, 2) == [([7, 8, 9], 2)]


def test_every_token_is_scored_as_lm_evals_loglikelihood_rolling(tiny_llama):
    """A 328-token text on a 128-position model: lm-eval scores all 328 in three windows (we scored 255 and read
    positions past 128); a 24-character text with a tokenizer that adds no BOS: all its tokens, the first after the
    BOS (we scored all but the first). Equal to lm-eval's windows written out and to HFLM itself, batched or not."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    tok, model = load_model(tiny_llama)
    assert tok("Hi").input_ids[0] != tok.bos_token_id  # this tokenizer adds no BOS
    ours = evalscore.perplexity_items(tok, model, TEXTS, batch_size=3)
    want = [_lm_eval_reference(tok, model, t, 128) for t in TEXTS]
    assert [n for _, n in ours] == [n for _, n in want] == [len(tok(t).input_ids) for t in TEXTS]
    assert ours[0][1] == 328 and ours[1][1] == len(tok(CORPUS[0][:24]).input_ids)
    assert [-nll for nll, _ in ours] == pytest.approx([ll for ll, _ in want], rel=1e-5)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=2)
    assert lm.max_length == evalrolling.perplexity_window(tok, model) == 128  # the model's positions, not 256
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(TEXTS)],
                                      disable_tqdm=True)
    assert [-nll for nll, _ in ours] == pytest.approx(theirs, rel=1e-5)
    # one text at a time, and a window asked wider than the model reads (capped at its 128 positions): the same
    alone = [evalscore.perplexity_items(tok, model, [t], max_length=10_000, batch_size=1)[0] for t in TEXTS]
    assert [n for _, n in alone] == [n for _, n in ours]
    assert [x for x, _ in alone] == pytest.approx([x for x, _ in ours], rel=1e-5)
    # a narrower window rolls further (every token still scored once), and reads less of what came before
    narrow = evalscore.perplexity_items(tok, model, TEXTS, max_length=16)
    assert [n for _, n in narrow] == [n for _, n in ours]
    assert [-x for x, _ in narrow] == pytest.approx([_lm_eval_reference(tok, model, t, 16)[0] for t in TEXTS],
                                                    rel=1e-5)
    assert narrow[0][0] != pytest.approx(ours[0][0], rel=1e-3)


def test_a_tokenizer_that_adds_a_bos_scores_the_text_after_one_bos(tiny_llama):
    """A tokenizer that adds BOS itself (Llama's): the text's own tokens after one BOS, as lm-eval scores them with
    add_bos_token=False. lm-eval 0.4.13's default encodes the text with its BOS and puts the prefix BOS before it
    (BOS scored after BOS: lm-evaluation-harness issue #3333); we do not copy that."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from tokenizers.processors import TemplateProcessing

    tok, model = load_model(tiny_llama)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A", special_tokens=[
        ("<|im_start|>", tok.bos_token_id)])
    assert tok("Hi").input_ids[0] == tok.bos_token_id
    ours = evalscore.perplexity_items(tok, model, TEXTS)
    assert [n for _, n in ours] == [len(tok(t, add_special_tokens=False).input_ids) for t in TEXTS]
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, add_bos_token=False)
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(TEXTS)],
                                      disable_tqdm=True)
    assert [-nll for nll, _ in ours] == pytest.approx(theirs, rel=1e-5)


def test_word_and_byte_perplexity_are_lm_evals():
    """lm-eval's wikitext metrics over the same summed loss: per word (runs between whitespace, count_words) and per
    UTF-8 byte (count_bytes), aggregated as weighted_perplexity and bits_per_byte; the token perplexity and its
    bootstrap error as before."""
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
    from lm_eval.api.task import ConfigurableTask

    texts = ["Tokyo is in Japan.", "  東京は日本の首都です。 Zürich,\tnot Bern.\n", "one"]
    per = [(41.5, 9), (120.25, 30), (7.0, 2)]
    scores = evalscore._ppl(per, texts)
    words = [(-nll, ConfigurableTask.count_words(t)) for (nll, _), t in zip(per, texts)]
    size = [(-nll, ConfigurableTask.count_bytes(t)) for (nll, _), t in zip(per, texts)]
    assert scores["word_perplexity"] == pytest.approx(weighted_perplexity(words), rel=1e-12)
    assert scores["byte_perplexity"] == pytest.approx(weighted_perplexity(size), rel=1e-12)
    assert scores["bits_per_byte"] == pytest.approx(bits_per_byte(size), rel=1e-12)
    assert scores["perplexity"] == pytest.approx(math.exp(168.75 / 41))
    assert scores["perplexity_stderr"] == evalscore._ppl(per)["perplexity_stderr"]
    assert set(evalscore._ppl(per)) == {"perplexity", "perplexity_stderr"}  # no texts given: the token scores only


def test_the_evaluation_stores_them_with_its_window_and_tokenizer(tiny_llama):
    """`eval --perplexity-window 16`: the spec's window, capped at the model's positions, recorded in the settings
    with how the text was scored (rows of before recorded max_length 256, and are told apart so), the tokenizer in
    the details, and lm-eval's word and byte perplexities and bits per byte stored beside the perplexity."""
    registry.import_folder(tiny_llama, "tiny")
    rc, out, err = cli("eval", "tiny", "--tasks", "perplexity", "--limit", "3", "--perplexity-window", "16")
    assert rc == 0, err
    rows = {m: r for (_, _, m), r in scoretable.latest_scores().items()}
    assert set(rows) == {"perplexity", "perplexity_stderr", "word_perplexity", "byte_perplexity", "bits_per_byte",
                         "word_perplexity_stderr", "byte_perplexity_stderr"}
    r = rows["perplexity"]
    assert r.details["settings"] == {"limit": 3, "scoring": evalscore.ROLLING, "window": 16}
    tok, model = load_model(tiny_llama)
    assert r.details["tokenizer"] == evalrolling.tokenizer_id(tok) and r.details["tokenizer"].startswith("sha256:")
    texts = task_set("perplexity", 3).items
    per = evalscore.perplexity_items(tok, model, texts, max_length=16)
    nll, n = sum(x for x, _ in per), sum(k for _, k in per)
    assert r.details["tokens"] == n == sum(len(tok(t).input_ids) for t in texts)
    assert r.value == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert rows["byte_perplexity"].value == pytest.approx(math.exp(nll / sum(len(t.encode()) for t in texts)),
                                                          rel=1e-5)
    wide = evalscore.perplexity_items(tok, model, texts)  # the default window (256, capped at 128) reads more
    assert sum(k for _, k in wide) == n and sum(x for x, _ in wide) != pytest.approx(nll, rel=1e-3)
    # the table is still headed by the perplexity (one tokenizer), and says nothing of tokenizers
    latest = scoretable.latest_scores()
    assert scoretable.headline(latest)[("tiny", "perplexity")].metric == "perplexity"
    assert not any("tokenize" in n for n in scoretable.table_notes(latest, scoretable.table_rows(latest, {})))


def _rows(model: str, tokenizer: str | None, ppl: float, per_byte: float | None) -> dict:
    details = {"tokenizer": tokenizer} if tokenizer else {}
    metrics = {"perplexity": ppl, "perplexity_stderr": ppl / 10}
    if per_byte is not None:
        metrics |= {"byte_perplexity": per_byte, "word_perplexity": per_byte ** 5, "bits_per_byte": math.log2(per_byte)}
    return {(model, "perplexity", m): EvalScore(model=model, task="perplexity", metric=m, value=v, n=10,
                                                details=details) for m, v in metrics.items()}


def test_models_with_other_tokenizers_are_headed_by_byte_perplexity():
    """Two models share a tokenizer, a third has its own: a perplexity per token of one is not another's (the third
    read 5.0 against 9.0 while its byte perplexity is the worse), so the column is the byte perplexity and a note
    says why; with one tokenizer, the perplexity as before; with a score stored before byte perplexity was, the
    perplexity, and the note names the model to evaluate again."""
    latest = {**_rows("a", "sha256:x", 9.0, 1.8), **_rows("b", "sha256:x", 8.0, 1.7),
              **_rows("c", "sha256:y", 5.0, 2.1)}
    primary = scoretable.headline(latest)
    assert {m: r.metric for (m, _), r in primary.items()} == dict.fromkeys("abc", "byte_perplexity")
    rows = scoretable.table_rows(latest, {})
    assert [r["perplexity (byte_perplexity)"] for r in rows] == [1.8, 1.7, 2.1]
    # these rows store no byte_perplexity_stderr (evaluations since do: test_review_s25_ppltables)
    assert "perplexity" not in rows[0] and "perplexity (byte_perplexity) ±" not in rows[0]
    assert list(scoretable.chart_rows(latest)) == ["perplexity (byte_perplexity)"]
    notes = scoretable.table_notes(latest, rows)
    (note,) = [n for n in notes if "tokenize" in n]
    assert note.startswith("perplexity (byte_perplexity): the models tokenize the texts in 2 ways (a, b | c)")
    assert "per UTF-8 byte" in note
    from pages.figure_scores import direction

    assert direction("byte_perplexity") == direction("perplexity") == "lower is better"
    # one tokenizer: the perplexity heads, nothing said
    same = {**_rows("a", "sha256:x", 9.0, 1.8), **_rows("c", "sha256:x", 5.0, 2.1)}
    assert {r.metric for r in scoretable.headline(same).values()} == {"perplexity"}
    assert not any("tokenize" in n for n in scoretable.table_notes(same, scoretable.table_rows(same, {})))
    # c scored before tokenizers and byte perplexities were recorded: its tokenizer is not known, nothing said
    old = {**_rows("a", "sha256:x", 9.0, 1.8), **_rows("c", None, 5.0, None)}
    assert {r.metric for r in scoretable.headline(old).values()} == {"perplexity"}
    assert scorevalues.tokenizers(scoretable.headline(old)) == {}
    # a and b differ, c has no byte perplexity: the perplexity stays, and the note says whom to evaluate again
    mixed = {**_rows("a", "sha256:x", 9.0, 1.8), **_rows("b", "sha256:y", 8.0, 1.7), **_rows("c", None, 5.0, None)}
    assert {r.metric for r in scoretable.headline(mixed).values()} == {"perplexity"}
    (note,) = [n for n in scoretable.table_notes(mixed, scoretable.table_rows(mixed, {})) if "tokenize" in n]
    assert note.startswith("perplexity: perplexity per token, of models that tokenize the texts in 2 ways (a | b)")
    assert "c was scored before byte perplexity was stored: evaluate again" in note


def test_the_evaluate_section_sends_the_window(tiny_llama):
    """The Compare page's Evaluate section offers the window beside the other advanced settings, at the spec's
    default and with its words, and the queued job carries it."""
    from backend import runner
    from backend.specs import EvalSpec
    from tests.test_pages import app

    registry.import_folder(tiny_llama, "tiny")
    at = app("compare.py")
    window = at.number_input(key="eval_ppl_window")
    assert window.value == EvalSpec.model_fields["perplexity_window"].default == 256
    assert window.help == EvalSpec.model_fields["perplexity_window"].description
    at.multiselect(key="eval_tasks").set_value(["perplexity"]).run()
    at.number_input(key="eval_ppl_window").set_value(2048).run()
    at.button(key="evaluate").click().run()
    assert not at.exception, at.exception
    (job,) = runner.list_jobs()
    assert job.spec["perplexity_window"] == 2048
