"""Perplexity as lm-eval's HFLM loglikelihood_rolling scores a text (lm_eval/models/huggingface.py): every token
of it, the first after the tokenizer's BOS (else EOS), in rolling windows no wider than the positions the model
reads, all texts' windows batched; and which tokenizer scored it. backend/evalscore.py turns the per-text losses into
the perplexity task's scores (with their bootstrap error, word and byte perplexities).

    from backend.evalrolling import perplexity_items
    perplexity_items(tok, model, ["Paris is the capital of France."])  # [(summed nll, scored tokens)]
"""

from __future__ import annotations

import hashlib
import json

MAX_LENGTH = 256  # perplexity's default window (EvalSpec.perplexity_window): a longer text rolls on, never cut
# How perplexity scores a text, in its settings; rows stored before say {"max_length": 256}: cut there, the first
# token unscored
ROLLING = "rolling windows, every token, the first after BOS or else EOS (lm-eval loglikelihood_rolling)"
UNSET_MAX_LENGTH = int(1e30)  # a tokenizer's model_max_length when it sets none (transformers, lm-eval)


def context_length(tok, model) -> int:
    """The longest input the model reads, found as lm-eval's HFLM finds it (lm_eval/models/utils.py
    resolve_max_length): the (text) config's n_positions, max_position_embeddings or n_ctx, else the tokenizer's
    model_max_length when it is set, else 2048."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(cfg, attr, None) is not None:
            return int(getattr(cfg, attr))
    n = getattr(tok, "model_max_length", None)
    return int(n) if n is not None and n != UNSET_MAX_LENGTH else 2048


def rolling_windows(ids: list[int], prefix: int | None, window: int) -> list[tuple[list[int], int]]:
    """lm-eval's windows of one text (lm_eval/utils.py get_rolling_token_windows with context_len 1, then
    make_disjoint_window) as (tokens, k): the model reads tokens[:-1] (at most `window`) and the last k of
    tokens[1:] are scored. The first window starts with `prefix` (lm-eval's prefix_token_id), so the text's first
    token is scored too; each next one scores the next `window` tokens (the last, the rest) after as many earlier
    tokens as fill it. Every token is scored once; without a prefix token the first one cannot be."""
    seq = ([prefix] if prefix is not None else []) + list(ids)
    out = [(seq[:window + 1], min(window + 1, len(seq)) - 1)] if len(seq) > 1 else []
    done = window + 1
    while done < len(seq):
        k = min(len(seq) - done, window)
        out.append((seq[done + k - window - 1:done + k], k))
        done += k
    return out


def perplexity_window(tok, model, max_length: int = MAX_LENGTH) -> int:
    """The tokens a perplexity window holds: `max_length` (EvalSpec.perplexity_window), at most the positions the
    model reads (context_length, as lm-eval's max_length)."""
    return min(max_length, context_length(tok, model))


def _prefix_token(tok, model) -> int | None:
    """lm-eval's prefix_token_id, the tokenizer's BOS else its EOS; for a tokenizer that names neither (a bare
    tokenizer.json), the model's generation_config's or config's (lm-eval fails there)."""
    cfgs = [getattr(model, "generation_config", None), getattr(model, "config", None)]
    ids = [tok.bos_token_id, tok.eos_token_id] + [getattr(c, a, None) for a in ("bos_token_id", "eos_token_id")
                                                  for c in cfgs]
    ids = [i[0] if isinstance(i, list) and i else i for i in ids]  # a generation_config lists several eos ids
    return next((int(i) for i in ids if isinstance(i, int)), None)


def perplexity_items(tok, model, texts: list[str], max_length: int = MAX_LENGTH, batch_size: int = 8) -> list[tuple]:
    """(summed negative log-likelihood, scored tokens) per text, as lm-eval's HFLM loglikelihood_rolling scores it:
    the text's own tokens (no special ones), the first conditioned on the tokenizer's BOS (else EOS), in rolling
    windows (rolling_windows) of perplexity_window tokens. A text was cut at 256 tokens (a long document's rest
    unscored), its first token never scored, and a 128-position model read 255. The windows of all texts are
    batched longest first (little padding), right-padded."""
    import torch

    window = perplexity_window(tok, model, max_length)
    prefix = _prefix_token(tok, model)
    # verbose=False: a text longer than the model reads is no mistake here, it rolls (transformers warned of it)
    encoded = tok(texts, add_special_tokens=False, verbose=False).input_ids
    wins = sorted(((j, w) for j, ids in enumerate(encoded) for w in rolling_windows(ids, prefix, window)),
                  key=lambda x: -len(x[1][0]))
    nll, count = [0.0] * len(texts), [0] * len(texts)
    pad, dev = tok.pad_token_id or 0, model.device
    with torch.inference_mode():
        for i in range(0, len(wins), batch_size):
            batch = wins[i:i + batch_size]
            width = len(batch[0][1][0])
            ids = torch.tensor([s + [pad] * (width - len(s)) for _, (s, _) in batch], device=dev)
            lens = torch.tensor([len(s) for _, (s, _) in batch], device=dev)[:, None]
            mask = torch.arange(width, device=dev)[None] < lens
            logits = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1].long()).logits.float()
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            # target position p predicts token p + 1: a window scores its last k targets
            k = torch.tensor([k for _, (_, k) in batch], device=dev)[:, None]
            pos = torch.arange(width - 1, device=dev)[None]
            scored = (pos >= lens - 1 - k) & (pos < lens - 1)
            for (j, (_, n)), v in zip(batch, torch.where(scored, losses, 0.0).sum(1).tolist()):
                nll[j] += v
                count[j] += n
    return list(zip(nll, count))


def tokenizer_id(tok) -> str | None:
    """Which tokenizer scored a perplexity: the sha256 of its vocabulary (token → id); None for one that lists
    none. Perplexities per token of two tokenizers do not compare (scorevalues.headline heads them by bytes)."""
    if not hasattr(tok, "get_vocab"):
        return None
    vocab = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(vocab.encode()).hexdigest()[:16]
