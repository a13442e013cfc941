"""One chat completion from any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, OpenAI…), with the
standard library only. The synthetic-math rephraser and the QA judge call it and turn its errors into their own."""

from __future__ import annotations

import email.utils
import json
import random
import time
import urllib.error
import urllib.request

# As the openai client retries (openai 1.x-3.x, _base_client.py `_should_retry`, `_calculate_retry_timeout`): the statuses
# that say "try again" (408 timeout, 409 lock, 429 rate limit, 5xx), twice by default, after the server's
# Retry-After when it gives one of at most a minute, else 0.5 s doubling to 8 s with jitter. The rephraser sends 4
# requests at a time: a hosted endpoint's 429 for one burst failed those pairs for good. Not retried, unlike the
# client: a refused connection (no server there: every request would wait the back-off before saying so) and a
# timeout (the caller's `timeout` bounds the wait; a retry would triple it).
RETRIED = {408, 409, 429}
MAX_RETRIES = 2


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    """The seconds the server asks to wait (Retry-After-Ms, Retry-After in seconds or as an HTTP date), if any."""
    headers = exc.headers or {}
    try:
        if ms := headers.get("retry-after-ms"):
            return float(ms) / 1000
        if (value := headers.get("retry-after")) is not None:
            try:
                return float(value)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return when.timestamp() - time.time()
    except (TypeError, ValueError):
        return None
    return None


def _should_retry(exc: urllib.error.HTTPError) -> bool:
    said = (exc.headers or {}).get("x-should-retry")  # the server's own word first, as the client reads it
    if said in ("true", "false"):
        return said == "true"
    return exc.code in RETRIED or exc.code >= 500


def chat_completion(base_url: str, model: str, content: str, *, key: str = "", temperature: float = 0.0,
                    timeout: float = 60.0, max_retries: int = MAX_RETRIES) -> str:
    """The text of the first choice for one user message. Raises urllib.error.HTTPError / URLError, TimeoutError
    or OSError when the server fails or cannot be reached (an HTTP 408, 409, 429 or 5xx only after `max_retries`
    retries), and KeyError / IndexError / TypeError / json.JSONDecodeError when the reply is not in the
    chat-completions format."""
    body = json.dumps({"model": model, "temperature": temperature,
                       "messages": [{"role": "user", "content": content}]}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{base_url.rstrip('/')}/chat/completions", data=body, headers=headers)
    for attempt in range(max_retries + 1):
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                choice = json.loads(resp.read())["choices"][0]
            break
        except urllib.error.HTTPError as exc:
            if attempt == max_retries or not _should_retry(exc):
                raise
            wait = _retry_after(exc)
            if wait is None or not 0 < wait <= 60:  # as the client: Retry-After 0 is no wait, the back-off is
                wait = min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())
            exc.close()
            time.sleep(wait)
    content = choice["message"]["content"]
    if not isinstance(content, str):
        # null when the server stopped before any text (a reasoning model out of tokens, a refusal, a tool call):
        # returned as is, the QA judge failed on None[:80] with a bare TypeError instead of its own message
        raise TypeError(f"the reply has no text (content {content!r}, finish_reason "
                        f"{choice.get('finish_reason')!r})")
    return content
