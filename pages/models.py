"""Models page: every registered model with facts and lineage; import, push to the Hub, delete, and a quick
streaming chat."""

from __future__ import annotations

import re
from pathlib import Path

import huggingface_hub
import pandas as pd
import streamlit as st
import yaml

from backend import hubpush, registry, runner
from backend.chat import GenerationStats, stream_reply
from backend.specs import ImportSpec, PushSpec, explain
from pages.common import MISSING, cached_model, current_model, human, job_status, submit, worker_banner, via_app
from pydantic import ValidationError

via_app(__file__)
st.title("Models & chat")
worker_banner()

with st.expander("Import a model", expanded=not registry.list_models()):
    st.caption("`builtin` (SmolLM2-135M-Instruct, shipped offline), a local Hugging Face folder, a `.gguf` file, "
               "or a Hub id such as `HuggingFaceTB/SmolLM2-360M-Instruct` (needs internet). GGUF and pickle "
               "weights are converted to safetensors; remote code is never run.")
    c1, c2, c3 = st.columns([3, 2, 1])
    target = c1.text_input("Import from", value="builtin", key="import_target")
    new_name = c2.text_input("Name (optional)", key="import_name")
    allow_pickle = c3.checkbox("allow pickle (.bin)", key="allow_pickle",
                               help="Pickle files can run code; they are read with torch.load(weights_only=True).")
    if st.button("Import", key="import"):
        st.session_state.pop("import_job", None)  # the last import's outcome is not this attempt's
        try:
            spec = ImportSpec(target=target, name=new_name or None, allow_pickle=allow_pickle)
            submit(spec, "import_job")
        except ValidationError as exc:
            st.error(explain(exc))
    if "import_job" in st.session_state:
        job_status(st.session_state["import_job"])

models = registry.list_models()
if not models:
    st.info("No models yet: import one above.")
    st.stop()

registered = {r.name for r in models}
table = pd.DataFrame([{
    "name": r.name, "kind": r.kind, "arch": arch, "layers": r.num_layers, "hidden": r.hidden_size, "vocab": vocab,
    "parameters": r.num_parameters, "dtype": r.dtype, "size (MiB)": round(r.size_bytes / 2**20, 1),
    "parents": ", ".join(p.split("/")[-1] for p in registry.parents_shown(r, registered)) or "—", "made by": r.source,
    "job": r.job_id,  # the job whose run registered it (none: a command in a terminal, or an older version's row)
    "created": r.created.strftime("%Y-%m-%d %H:%M")} for r in models for arch, vocab in [registry.arch_and_vocab(r)]])
# the parameters as numbers (as text, "1.0B" sorted before "135.0M"), shown compact
st.dataframe(table, hide_index=True, key="models_table", placeholder=MISSING,
             column_config={"parameters": st.column_config.NumberColumn(format="compact")})



def push_control(rec) -> None:
    """Upload the model with a card of its lineage and scores: a push job (backend/hubpush.py, as `models push`),
    so a model of many GiB uploads in the worker, whatever happens to this page."""
    st.caption("Uploads its weights, config and tokenizer with a model card that tells how it was made and what it "
               "scored here, in one commit, as a job (its progress and log on the Jobs page). Needs the internet "
               "and HF_TOKEN (a token with write access) in the worker's environment.")
    repo = st.text_input("Hub repo (owner/name; made if missing)", key=f"push_repo_{rec.name}",
                         placeholder=f"your-name/{rec.name}")
    private = st.checkbox("Private repo", key=f"push_private_{rec.name}", help="if the repo is made by this push")
    # the Hub's card spec pairs a licence `other` with license_name and license_link; the bases' card gives them,
    # else the card asks for them (its preview below) and they are typed here
    name_col, link_col = st.columns(2)
    license_name = name_col.text_input("Licence name (only for a licence `other`)", key=f"push_lname_{rec.name}",
                                       placeholder="my-license-1.0", help=PushSpec.model_fields["license_name"]
                                       .description)
    license_link = link_col.text_input("Licence link (only for a licence `other`)", key=f"push_llink_{rec.name}",
                                       placeholder="LICENSE or https://…", help=PushSpec.model_fields["license_link"]
                                       .description)
    spec, problem = None, None
    if repo:
        try:
            spec = PushSpec(model=rec.name, repo=repo, private=private, license_name=license_name or None,
                            license_link=license_link or None)
        except ValidationError as exc:
            problem = explain(exc)
            st.error(problem)
    # the push job refuses without a token, but only when the worker reaches it, minutes later behind other jobs:
    # said here first. A warning, not a refusal: the worker's environment may hold a token this process does not
    if huggingface_hub.get_token() is None:
        st.warning("No Hugging Face token is visible here: the push will fail unless the worker's environment has "
                   "one. Create a token with write access at https://huggingface.co/settings/tokens and set HF_TOKEN "
                   "to it where the worker starts, or run `hf auth login` as the worker's user.")
    # the button, why it is off and the job's outcome under the repo box they belong to: below the preview (a card
    # of 2,500 px with its spec) a refused repo name, the greyed Push and the push's failure sat out of sight
    if st.button("Push", key=f"push_{rec.name}", disabled=spec is None,
                 help=None if spec else problem or "Type the Hub repo (owner/name) first."):
        submit(spec, f"push_job_{rec.name}")
    if f"push_job_{rec.name}" in st.session_state:
        job_status(st.session_state[f"push_job_{rec.name}"])
    if st.toggle("Preview the model card", key=f"push_card_{rec.name}"):
        # a refused repo id (above) is no title for the card: "not a repo!!" headed the preview
        try:
            card = hubpush.model_card(rec.name, spec.repo if spec else f"your-name/{rec.name}",
                                      license_name=spec.license_name if spec else None,
                                      license_link=spec.license_link if spec else None)
        except hubpush.PushRefused as exc:  # a licence name or link the bases' licence does not take
            st.error(str(exc))
            return
        _, meta, body = card.split("---\n", 2)
        with st.container(height=480, key=f"push_card_box_{rec.name}"):  # scrolls in place, the form stays in view
            st.code(meta, language="yaml")  # the Hub's metadata: as Markdown its lines ran together
            st.markdown(re.sub(r"^(#{1,3}) ", r"###\1 ", body, flags=re.M))  # its headings, smaller in this column


names = [r.name for r in models]
# the model this page showed on its last run, deleted since (another tab, the CLI): the picker fell back to the
# newest model without a word, and a question typed to the deleted one went to that other model
vanished = st.session_state.get("model")
vanished = None if vanished is None or vanished in names else vanished
if vanished:
    # set, not deleted: the browser keeps a widget's last value under its key (the key is the selectbox's identity,
    # its options are not), so a deleted entry left the picker naming the deleted model over another's details;
    # a value set here is sent to the browser
    st.session_state["model"] = names[-1]
    if st.session_state.pop("_deleted_here", None) == vanished:
        st.success(f"Deleted {vanished}.")
    else:
        st.warning(f"{vanished} was deleted since this page showed it (in another tab or from the command line); "
                   f"now showing {names[-1]}.")
chosen = st.selectbox("Model", names, index=None if "model" in st.session_state else len(names) - 1, key="model")
rec = registry.get(chosen)
info, chat = st.columns([2, 3])

with info:
    st.subheader(rec.name)
    st.write(f"**{rec.kind}** · {rec.architecture or rec.model_type} · {rec.num_layers} layers · hidden "
             f"{rec.hidden_size} · {human(rec.num_parameters)} parameters · {rec.dtype}")
    st.caption(f"Folder: `{rec.path}`")
    if not Path(rec.path, "config.json").is_file():
        st.warning(f"The folder `{rec.path}` is gone or holds no config.json: this model cannot be loaded. "
                   "Put the folder back, or delete the entry below.")
    chain = registry.lineage(rec.name)  # a deleted ancestor stays named, marked deleted
    if chain:
        # the first-parent chain: a merge's other candidates were missing, so "base → sft → merge" read as a
        # merge of one model
        others = registry.parents_shown(rec, registered)[1:]  # the names read once above, not a lookup each
        st.write("Lineage: " + " → ".join(f"`{p.split('/')[-1]}`" + ("" if present else " (deleted)")
                                          for p, present in chain) + f" → **{rec.name}**"
                 + (" (also made from " + ", ".join(f"`{p.split('/')[-1]}`" for p in others) + ")" if others else ""))
    kids = registry.children(rec.name)
    if kids:
        st.write("Made from it: " + ", ".join(f"`{k.name}`" for k in kids))
    if rec.recipe and rec.kind != "base":
        with st.expander("Recipe (spec)"):
            st.code(yaml.safe_dump(rec.recipe, sort_keys=False, allow_unicode=True), language="yaml")
    card = Path(rec.path, "README.md")
    if card.exists() and rec.kind != "base":
        with st.expander("Model card"):
            st.markdown(card.read_text().split("---", 2)[-1])
    with st.expander("Push to the Hugging Face Hub"):
        push_control(rec)
    with st.expander("Delete"):
        owned = "its folder is deleted too" if Path(rec.path).is_relative_to(registry.db.models_dir()) else \
            "its folder (outside the workspace) is kept"
        st.write(f"Removes **{rec.name}** from the registry; {owned}.")
        if kids:
            st.warning(f"{len(kids)} model(s) were made from it: " + ", ".join(f"`{k.name}`" for k in kids)
                       + ". They stay, and their lineage keeps naming it, marked deleted.")
        # a queued or running job reading it (training, merge, evaluation) lost its model without a word here
        users = runner.jobs_using(rec.name)
        if users:
            st.warning(f"{len(users)} queued or running job(s) use it: " + ", ".join(
                f"job {j.id} ({j.kind}, {j.status})" for j in users) + ". Deleted now, they fail without it: cancel "
                "them on the Jobs page first, or wait until they end.")
        label = f"Yes, delete {rec.name}" + (f" although {len(kids)} model(s) were made from it" if kids else "") \
            + (f"{' and' if kids else ' although'} job{'s' if len(users) > 1 else ''} "
               f"{', '.join(str(j.id) for j in users)} use{'' if len(users) > 1 else 's'} it" if users else "")
        # the tick is for this model only: it stayed for the next model shown (after a delete, the one that took
        # its place), so a second click on Delete removed a model nobody had confirmed
        if st.session_state.get("_confirm_delete_for") != rec.name:
            st.session_state["confirm_delete"] = False
        st.session_state["_confirm_delete_for"] = rec.name
        sure = st.checkbox(label, key="confirm_delete")
        if st.button("Delete", disabled=not sure, key="delete"):
            registry.delete(rec.name, force=True)  # the checkbox above named the dependants
            # its loaded copy went on holding memory (on CUDA, GPU memory) in the cache every session shares, until
            # four other models had been loaded
            cached_model.clear(rec.path, rec.name)
            st.session_state["_deleted_here"] = rec.name  # said as done, not as a deletion from elsewhere
            st.session_state.pop("_confirm_delete_for", None)  # the same name imported again starts unticked
            st.session_state.pop("chat", None)
            st.rerun()

with chat:
    st.subheader("Quick chat")
    c1, c2 = st.columns(2)
    max_new = c1.slider("Max new tokens", 8, 512, 96, key="max_new")
    temperature = c2.slider("Temperature (0 = greedy)", 0.0, 1.5, 0.0, 0.05, key="temperature")
    history = st.session_state.setdefault("chat", {}).setdefault(rec.name, [])
    # the conversation sits above the input: in a column the input is drawn inline, and messages written after it
    # appeared below it until the next rerun
    box = st.container()
    for msg in history:
        box.chat_message(msg["role"]).write(msg["content"])
    prompt = st.chat_input(f"Ask {rec.name}…", key="chat_input")
    if prompt and vanished:  # typed to the deleted model: not sent to the one shown in its place
        st.warning(f"Not sent: {vanished}, the model it was typed to, is gone. Ask {rec.name} again if you mean "
                   "it.")
        prompt = None
    if prompt:
        history.append({"role": "user", "content": prompt})
        box.chat_message("user").write(prompt)
        try:
            lm = current_model(rec.path, rec.name)
        except Exception as exc:  # noqa: BLE001 - a folder moved or deleted since import: say so, no traceback
            history.pop()  # not answered: not kept as if it had been
            st.error(f"{rec.name} cannot be loaded: {exc}")
            st.stop()
        stats = GenerationStats()
        with box.chat_message("assistant"):
            try:
                reply = st.write_stream(stream_reply(lm, history, max_new_tokens=max_new, temperature=temperature,
                                                     stats=stats))
            except RuntimeError as exc:
                # not kept as if it had been answered: the next message made two user turns in a row, which the
                # templates that alternate turns (Mistral's, Gemma's) refuse, so every later message failed as well
                history.pop()
                st.error(f"{exc} (Not answered: your message is left out of the conversation; send it again, "
                         "changed if need be.)")
                reply = None
            if reply is not None and not str(reply).strip():
                st.caption("(the reply is only whitespace or special tokens)")
        if reply is not None:
            history.append({"role": "assistant", "content": reply})
            box.caption(f"{stats.new_tokens} tokens · first token {stats.first_token_s or 0:.2f} s · "
                       f"{stats.tokens_per_s:.1f} tokens/s")
            if stats.dropped:
                box.caption(f"The conversation is longer than {rec.name}'s context of {stats.context} tokens: it "
                            f"read the latest turns only, not the first {stats.dropped} "
                            "message(s). Clear the chat to start afresh.")
            if stats.max_new_tokens is not None and stats.max_new_tokens < max_new:
                box.caption(f"The reply could take {stats.max_new_tokens} tokens, not {max_new}: the prompt filled "
                            f"the rest of the model's context of {stats.context} tokens.")
    if history and st.button("Clear chat", key="clear_chat"):
        history.clear()
        st.rerun()
