"""One scenario of the official OpenAI Python SDK talking to orproxy.

Usage: check.py SCENARIO BASE_URL      (BASE_URL is orproxy's, like http://127.0.0.1:3000/v1)

tests/clients.rs starts the fake OpenRouter and `orproxy serve`, scripts the fake's
replies for SCENARIO, then runs this. The expected values below are what that test
scripts. The script checks what the SDK returned, prints `name=value` lines for the
test, and exits 0; on anything unexpected it prints `FAIL: ...` and exits 1.
"""

import sys

import openai
from openai import OpenAI

MODEL = "meta-llama/llama-3.3-70b-instruct:free"
MESSAGES = [{"role": "user", "content": "Hello"}]
# Reply::chat_ok() of the fake.
CHAT_CONTENT = "Hello from fake OpenRouter"
# The fake's Reply::sse_chat(&["Streamed ", "through ", "orproxy"]).
STREAM_CONTENT = "Streamed through orproxy"
# The deltas the fake sends before the stream breaks.
PARTIAL_CONTENT = "Partial answer"
# The fake's GET /models.
MODEL_IDS = ["meta-llama/llama-3.3-70b-instruct:free", "openai/gpt-4o"]


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def expect_equal(what, got, want):
    if got != want:
        fail(f"{what}: got {got!r}, expected {want!r}")


def client(base_url, **options):
    return OpenAI(base_url=base_url, api_key="dummy-key", timeout=60, **options)


def chat(base_url):
    completion = client(base_url).chat.completions.create(model=MODEL, messages=MESSAGES)
    expect_equal("content", completion.choices[0].message.content, CHAT_CONTENT)
    expect_equal("model", completion.model, MODEL)
    expect_equal("finish_reason", completion.choices[0].finish_reason, "stop")
    print(f"content={completion.choices[0].message.content}")


def stream(base_url):
    text, chunks, finish = "", 0, None
    for chunk in client(base_url).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    ):
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    expect_equal("reassembled text", text, STREAM_CONTENT)
    expect_equal("finish_reason", finish, "stop")
    if chunks < 3:
        fail(f"expected one chunk per delta, got {chunks} chunk(s)")
    print(f"content={text}")
    print(f"chunks={chunks}")


def models(base_url):
    ids = [m.id for m in client(base_url).models.list()]
    expect_equal("model ids", ids, MODEL_IDS)
    print(f"models={','.join(ids)}")


def rate_limit(base_url):
    try:
        client(base_url, max_retries=0).chat.completions.create(model=MODEL, messages=MESSAGES)
    except openai.RateLimitError as err:
        expect_equal("status", err.status_code, 429)
        retry_after = err.response.headers.get("retry-after")
        if retry_after is None:
            fail(f"no Retry-After on the 429; headers: {dict(err.response.headers)}")
        print(f"retry-after={retry_after}")
        print(f"code={err.code}")
        print(f"message={err.message}")
        return
    fail("the request succeeded; expected a RateLimitError")


def stream_error(base_url):
    text = ""
    try:
        for chunk in client(base_url).chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    except openai.APIError as err:
        # A connection error is an APIError too, but it would mean the SDK saw a broken
        # body rather than the error event a stream must end with.
        if isinstance(err, openai.APIConnectionError):
            fail(f"the stream broke without an error event: {err!r}")
        expect_equal("content before the error", text, PARTIAL_CONTENT)
        print(f"error-type={type(err).__name__}")
        print(f"code={err.code}")
        print(f"message={err.message}")
        return
    fail(f"the stream ended quietly after {text!r}; expected an APIError")


def retry(base_url):
    raw = client(base_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES
    )
    completion = raw.parse()
    expect_equal("content", completion.choices[0].message.content, CHAT_CONTENT)
    if raw.retries_taken < 1:
        fail("the first request succeeded; expected the SDK to retry a 429")
    print(f"content={completion.choices[0].message.content}")
    print(f"retries={raw.retries_taken}")


SCENARIOS = {
    "chat": chat,
    "stream": stream,
    "models": models,
    "rate-limit": rate_limit,
    "stream-error": stream_error,
    "retry": retry,
}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SCENARIOS:
        fail(f"usage: check.py {{{'|'.join(SCENARIOS)}}} BASE_URL")
    SCENARIOS[sys.argv[1]](sys.argv[2])
    print(f"openai-python {openai.__version__}: {sys.argv[1]} ok")
