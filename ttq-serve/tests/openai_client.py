"""Drives a running ttq server with the official `openai` Python client.

Usage: python3 openai_client.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Exits non-zero with a message on the first failed check; prints `openai client: N passed, 0 failed`.
"""
import sys

try:
    import openai
except ImportError:
    sys.exit("the `openai` Python package is missing: python3 -m pip install openai (.ci/run installs it)")

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
passed = 0


def check(cond, what):
    global passed
    if not cond:
        sys.exit(f"FAILED: {what}")
    passed += 1


models = client.models.list()
check([m.id for m in models.data] == ["tiny"], f"models: {models}")

c = client.completions.create(model="tiny", prompt="Hello world", max_tokens=8, temperature=0)
check(c.object == "text_completion", f"object: {c.object}")
check(c.usage.prompt_tokens == 12, f"usage: {c.usage}")
check(c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens, f"usage: {c.usage}")
check(c.choices[0].finish_reason in ("stop", "length"), f"finish: {c.choices[0]}")

pieces = []
finish = None
for chunk in client.completions.create(model="tiny", prompt="Hello world", max_tokens=8, temperature=0, stream=True):
    for choice in chunk.choices:
        pieces.append(choice.text)
        finish = choice.finish_reason or finish
check("".join(pieces) == c.choices[0].text, f"stream {pieces!r} vs {c.choices[0].text!r}")
check(finish == c.choices[0].finish_reason, f"stream finish {finish}")

chat = client.chat.completions.create(
    model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0, seed=1
)
check(chat.choices[0].message.role == "assistant", f"chat: {chat}")
deltas = []
usage = None
for chunk in client.chat.completions.create(
    model="tiny",
    messages=[{"role": "user", "content": "Hi"}],
    max_tokens=6,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
):
    for choice in chunk.choices:
        deltas.append(choice.delta.content or "")
    if chunk.usage is not None:
        usage = chunk.usage
check("".join(deltas) == chat.choices[0].message.content, f"chat stream {deltas!r}")
check(usage is not None and usage.prompt_tokens == chat.usage.prompt_tokens, f"stream usage {usage}")

try:
    client.completions.create(model="tiny", prompt="x", max_tokens=500)
    check(False, "an over-long request was accepted")
except openai.BadRequestError as e:
    check("context" in str(e) or "allows" in str(e), f"error message: {e}")

print(f"openai client: {passed} passed, 0 failed")
