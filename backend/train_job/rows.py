"""A training job's rows (backend/train_entry.py): the training and held-out data as the spec mixes them, made
plain text for a model without a chat template, and what max_length cuts or trl drops, said in the log."""

from __future__ import annotations

import os

from backend import data
from backend.train_job.overlap import note_eval_overlap
from backend.words import plural


def load_rows(spec, model_path: str, tok):
    """(train, evals): the spec's sources mixed, the held-out share or set, in the form its trainer takes (plain text
    without a chat template, prompt/completion under completion_only_loss); evals None without held-out rows."""
    # The held-out share is split off each source before its weight repeats it (backend/data.py split_mix).
    train, evals, report = data.split_mix([(d.source, d.weight, d.sample_by) for d in spec.data], spec.kind,
                                          spec.seed, spec.max_rows,
                                          eval_fraction=0.0 if spec.eval_data else spec.eval_fraction)
    for d in spec.data + ([spec.eval_data] if spec.eval_data else []):
        if d.sample_by != "line" and data.reads_text_file(d.source):
            print(f"data: {d.source}: a row per {d.sample_by} of its .txt files", flush=True)
    for source, layout, rows in report:
        print(f"data: {source} ({layout}) -> {plural(rows, 'row')}", flush=True)
    if not spec.eval_data and spec.eval_fraction:  # an empty split gave no eval loss, no recovery view, no word
        print(f"data: {plural(len(evals), 'distinct row')} held out ({spec.eval_fraction:g} of each source's), none "
              "of them trained on" if evals is not None
              else f"data: no rows held out (fewer than {data.MIN_HELD_OUT_ROWS} rows): no eval loss", flush=True)
    layouts = {layout for _, layout, _ in report}
    if int(os.environ.get("RANK", "0")) == 0:  # one process reads the rows for it
        note_eval_overlap(train)
    # trl decides the loss's default from the training rows alone (SFTTrainer: "prompt" and "completion" in the
    # training sample); a held-out set of another layout is converted to match, not a vote
    trained = set(layouts)
    only = completion_only(spec, trained)
    if spec.eval_data:
        evals, eval_layout = data.prepare(spec.eval_data.source, spec.kind, max_rows=spec.max_rows,
                                           sample_by=spec.eval_data.sample_by)
        layouts.add(eval_layout)
    if spec.kind in ("sft", "dpo") and not tok.chat_template:
        train, evals = without_chat_template(spec, model_path, layouts, train, evals)
    elif only:
        train = data.to_prompt_completion(train)
        evals = data.to_prompt_completion(evals) if evals is not None else None
    if spec.kind == "sft":
        print(loss_line(spec, trained == {"prompt_completion"}, only), flush=True)
    return train, evals


def completion_only(spec, layouts: set[str]) -> bool:
    """Whether an SFT job learns the completion alone: the spec's completion_only_loss, or when it is None (auto),
    trl's default for the data's form (SFTTrainer: "prompt" and "completion" in the rows): on when every training
    source is a prompt/completion file (`layouts`: theirs, not the held-out set's), off for conversations, which
    trl learns whole."""
    value = getattr(spec, "completion_only_loss", None)
    return value if value is not None else spec.kind == "sft" and layouts == {"prompt_completion"}


def loss_line(spec, prompt_completion: bool, only: bool) -> str:
    """The job log's word on which tokens an SFT job's loss covers (walk23b: nothing said it, and prompt/completion
    files learned their prompts while trl would not). prompt_completion: every source is a prompt/completion file."""
    why = ("completion_only_loss" if spec.completion_only_loss is not None
           else "auto: trl's default for prompt/completion files" if only else "auto: trl's default for conversations")
    if only:
        what = "each row's completion only, not its prompt" if prompt_completion \
            else "each conversation's last assistant reply only, not what comes before it"
        return f"loss: on {what} ({why})"
    return (f"loss: on every token of each row, its prompt and reply alike ({why}"
            + ("; completion_only_loss true learns the replies alone)" if spec.completion_only_loss is None else ")"))


def check_replies_fit(spec, rows, prepared, packed: bool, what: str = "") -> None:
    """With completion_only_loss and no packing, trl drops every conversation whose last reply lies past max_length
    after truncation (it would add no loss): long multi-turn conversations, the ones the option is for, went without
    a word, and with none left the job failed with "num_samples should be a positive integer value"."""
    if not _learns_completion(spec, rows) or packed:
        return
    kept = len(prepared)
    if kept == 0:
        raise SystemExit(f"error: every {what}conversation's last reply lies past max_length {spec.max_length}, so "
                         f"completion_only_loss has nothing to {'score' if what else 'learn'}: raise --max-length, or "
                         "turn completion_only_loss off" + (", or hold out other conversations" if what else ""))
    if kept < len(rows):
        print(f"data: {len(rows) - kept} of {len(rows)} {what}conversations dropped: their last reply lies past "
              f"max_length {spec.max_length} (completion_only_loss); raise --max-length to keep them", flush=True)


def _learns_completion(spec, rows) -> bool:
    """completion_only_loss as trl resolves it for these rows (an explicit value, else prompt/completion rows)."""
    value = getattr(spec, "completion_only_loss", None)
    return value if value is not None else spec.kind == "sft" and "prompt" in rows.column_names


def note_cut_rows(spec, args, rows, prepared, what: str = "", say: bool = True) -> None:
    """Say how many rows max_length cuts, which trl does without a word: unpacked and bfd-packed SFT/CPT rows keep
    their first max_length tokens (a reply's end and its end-of-turn token unlearned), DPO drops a pair whose prompt
    alone fills max_length and cuts the others' replies (their ends never compared). A row exactly max_length long
    is counted too: its tokens cannot be told from a cut one's. Wrapped and bfd_split packing lose nothing. say:
    print (rank 0); every rank refuses a DPO run whose every pair was dropped."""
    import pyarrow.compute as pc

    n = spec.max_length
    if spec.kind == "dpo":
        columns, unit, over = ["prompt_ids", "chosen_ids", "rejected_ids"], "pairs", n + 1  # untruncated here
        if not len(prepared):  # trl's sampler then failed with "num_samples should be a positive integer value"
            raise SystemExit(f"error: every {what}pair's prompt alone fills max_length {n}, so DPO has nothing to "
                             "compare: raise --max-length")
        if (dropped := len(rows) - len(prepared)) and say:
            print(f"data: {dropped} of {len(rows)} {what}pairs dropped: their prompt alone fills max_length {n}; "
                  "raise --max-length to keep them", flush=True)
    elif args.packing and args.packing_strategy != "bfd":
        return
    else:  # truncated to max_length by trl: a row (or a bfd-packed sequence) that long was cut, or fit exactly
        columns, unit, over = ["seq_lengths" if args.packing else "input_ids"], "rows", n
    if not say:
        return
    cut = total = 0
    for batch in prepared.select_columns(columns).with_format("arrow").iter(batch_size=10_000):  # bounded memory
        if spec.kind == "dpo":
            length = pc.add(pc.list_value_length(batch["prompt_ids"]),
                            pc.max_element_wise(pc.list_value_length(batch["chosen_ids"]),
                                                pc.list_value_length(batch["rejected_ids"])))
        else:
            length = pc.list_flatten(batch[columns[0]]) if args.packing else pc.list_value_length(batch[columns[0]])
        cut += pc.sum(pc.greater_equal(length, over)).as_py() or 0
        total += len(length)
    if cut:
        print(f"data: {cut} of {total} {what}{unit} cut at max_length {n}: their tokens past it are never trained "
              "on; raise --max-length" + (" or pack them" if spec.kind == "cpt" and not args.packing else ""),
              flush=True)


def without_chat_template(spec, model_path: str, layouts: set[str], train, evals):
    """(train, evals) for a model without a chat template (a base model): SFT on prompt/completion files and DPO on
    one-turn preference pairs (a plain-text prompt/chosen/rejected file) as trl's plain-text rows: the reply follows
    the prompt as written, then EOS (completion_only_loss scores the completion alone). Conversations need a
    template. The job refused both before, telling the user to "use a prompt/completion file with a base model",
    which it refused too."""
    def single(ds) -> bool:
        import pyarrow.compute as pc

        table = ds.with_format("arrow")[:]
        return all(pc.all(pc.equal(pc.list_value_length(table[c]), 1)).as_py() for c in table.column_names)

    def plain(ds):
        return ds.map(lambda r: {k: r[k][0]["content"] for k in r}, remove_columns=ds.column_names)

    if spec.kind == "sft" and layouts == {"prompt_completion"}:
        # [user, assistant] -> prompt [user], completion [assistant]; trl's conversational rows of several turns
        # (a system turn) need the template: plain() kept the first turn alone
        train, evals = (data.to_prompt_completion(ds) if ds is not None else None for ds in (train, evals))
        if not all(single(ds) for ds in (train, evals) if ds is not None):
            raise SystemExit(f"error: {model_path} has no chat template, and the prompt/completion rows hold "
                             "conversations of several turns: they need one. Use text prompt and completion, or "
                             "an instruct model.")
        to_plain = None
    elif spec.kind == "dpo" and layouts == {"preference"} and all(single(ds) for ds in (train, evals)
                                                                  if ds is not None):
        to_plain = None
    else:
        raise SystemExit(f"error: {model_path} has no chat template; {spec.kind} on conversations "
                         f"({', '.join(sorted(layouts))}) needs one. Without one, train SFT on a prompt/completion "
                         "file or DPO on plain-text prompt/chosen/rejected, or use an instruct model.")
    print("data: no chat template: each prompt and reply as plain text", flush=True)
    return tuple(plain(to_plain(ds) if to_plain else ds) if ds is not None else None for ds in (train, evals))
