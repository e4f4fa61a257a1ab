"""The official openai client against rbee's queen: the checks of the OpenAI API test.

Usage: python check_client.py BASE_URL API_TOKEN MODEL
Prints one line per check; exits non-zero on the first failure.
"""

import sys

import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def check(name, condition, detail=""):
    print(f"{'ok' if condition else 'FAILED'} {name} {detail}".rstrip(), flush=True)
    if not condition:
        sys.exit(1)


models = [m.id for m in client.models.list().data]
check("models.list names the served model", model in models, repr(models))

question = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
reply = client.chat.completions.create(model=model, messages=question, max_tokens=24, temperature=0)
content = reply.choices[0].message.content
check("chat completion answers", "Paris" in content, repr(content))
check("chat completion object", reply.object == "chat.completion", reply.object)
check(
    "chat usage counts tokens",
    reply.usage.completion_tokens > 0
    and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens,
    repr(reply.usage),
)

stream = client.chat.completions.create(
    model=model,
    messages=question,
    max_tokens=24,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage, chunks = [], None, None, 0
for chunk in stream:
    chunks += 1
    check("stream chunk object", chunk.object == "chat.completion.chunk", chunk.object)
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
streamed = "".join(pieces)
check("streamed chat arrives in several chunks", chunks > 2, str(chunks))
check("streamed chat matches the whole answer", streamed == content, repr(streamed))
check("streamed chat ends with a finish reason", finish in ("stop", "length"), repr(finish))
check("streamed usage", usage is not None and usage.completion_tokens > 0, repr(usage))

limited = client.chat.completions.create(model=model, messages=question, max_tokens=2, temperature=0)
check("max_tokens ends with length", limited.choices[0].finish_reason == "length", repr(limited.choices[0]))

import math

scored = client.chat.completions.create(
    model=model, messages=question, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
)
entries = scored.choices[0].logprobs.content
check(
    "chat logprobs: one entry per generated token",
    len(entries) == scored.usage.completion_tokens,
    f"{len(entries)} entries, {scored.usage.completion_tokens} tokens",
)
check(
    "chat logprobs: greedy picks the most likely token, three alternatives sorted",
    all(
        len(e.top_logprobs) == 3
        and e.top_logprobs[0].token == e.token
        and math.isclose(e.top_logprobs[0].logprob, e.logprob)
        and e.logprob <= 0
        and e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
        for e in entries
    ),
    repr(entries[:2]),
)
check(
    "chat logprobs: the tokens spell the answer",
    "".join(e.token for e in entries) == scored.choices[0].message.content,
    repr([e.token for e in entries]),
)
plain = client.chat.completions.create(model=model, messages=question, max_tokens=4, temperature=0)
check("no logprobs unless asked", plain.choices[0].logprobs is None, repr(plain.choices[0].logprobs))
streamed_scores = client.chat.completions.create(
    model=model, messages=question, max_tokens=8, temperature=0, logprobs=True, stream=True
)
streamed_entries = [
    e for chunk in streamed_scores for c in chunk.choices if c.logprobs for e in c.logprobs.content
]
check(
    "streamed chat logprobs equal the whole answer's",
    [(e.token, round(e.logprob, 4)) for e in streamed_entries]
    == [(e.token, round(e.logprob, 4)) for e in entries],
    repr(streamed_entries[:2]),
)
text_scores = client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2
)
scores = text_scores.choices[0].logprobs
check(
    "completion logprobs: tokens, their logprobs, two alternatives and offsets",
    len(scores.tokens) == len(scores.token_logprobs) == len(scores.top_logprobs) == 4
    and all(len(top) == 2 for top in scores.top_logprobs)
    and scores.text_offset[0] == 0
    and "".join(scores.tokens) == text_scores.choices[0].text,
    repr(scores),
)

completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
check("completion object", completion.object == "text_completion", completion.object)
check("completion text", len(completion.choices[0].text) > 0, repr(completion.choices[0].text))

text_stream = client.completions.create(
    model=model, prompt="One, two, three,", max_tokens=8, temperature=0, stream=True
)
text = "".join(c.choices[0].text for c in text_stream if c.choices)
check("streamed completion", len(text) > 0, repr(text))

try:
    client.chat.completions.create(model="no-such-model", messages=question, max_tokens=4)
    check("unknown model is refused", False)
except openai.NotFoundError as error:
    check("unknown model is a not-found error", error.status_code == 404, str(error))

wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong-token", max_retries=0)
try:
    wrong.models.list()
    check("a wrong API key is refused", False)
except openai.AuthenticationError as error:
    check("a wrong API key is a 401", error.status_code == 401, str(error))

print("all checks passed")
