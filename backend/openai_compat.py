"""One chat completion from any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, OpenAI…), with the
standard library only. The synthetic-math rephraser and the QA judge call it and turn its errors into their own."""

from __future__ import annotations

import json
import urllib.request


def chat_completion(base_url: str, model: str, content: str, *, key: str = "", temperature: float = 0.0,
                    timeout: float = 60.0) -> str:
    """The text of the first choice for one user message. Raises urllib.error.HTTPError / URLError, TimeoutError
    or OSError when the server fails or cannot be reached, and KeyError / IndexError / TypeError /
    json.JSONDecodeError when the reply is not in the chat-completions format."""
    body = json.dumps({"model": model, "temperature": temperature,
                       "messages": [{"role": "user", "content": content}]}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{base_url.rstrip('/')}/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        choice = json.loads(resp.read())["choices"][0]
    content = choice["message"]["content"]
    if not isinstance(content, str):
        # null when the server stopped before any text (a reasoning model out of tokens, a refusal, a tool call):
        # returned as is, the QA judge failed on None[:80] with a bare TypeError instead of its own message
        raise TypeError(f"the reply has no text (content {content!r}, finish_reason "
                        f"{choice.get('finish_reason')!r})")
    return content
