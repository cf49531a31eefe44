"""One scenario of the official OpenAI or Anthropic Python SDK talking to orproxy.

Usage: check.py SCENARIO BASE_URL [AUTH]

BASE_URL is what the SDK is given: orproxy's /v1 for the OpenAI SDK (like
http://127.0.0.1:3000/v1), orproxy's root for the Anthropic SDK (like
http://127.0.0.1:3000: it appends /v1/messages itself). AUTH, for the Anthropic
scenarios only, is how the SDK sends its credential: `api-key` (the default; the
`api_key` option), `auth-token` (the `auth_token` option) or `x-api-key` (no SDK
credential, an `x-api-key` header, as Claude Code sends it). The credential is
$ORPROXY_TEST_CLIENT_TOKEN, else "dummy-key".

tests/clients.rs starts the fake OpenRouter and `orproxy serve`, scripts the fake's
replies for SCENARIO, then runs this. The expected values below are what that test
scripts. The script checks what the SDK returned, prints `name=value` lines for the
test, and exits 0; on anything unexpected it prints `FAIL: ...` and exits 1.
"""

import json
import os
import sys

import anthropic
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
# The usage the fake's Responses and Messages replies report (FAKE_INPUT_TOKENS).
INPUT_TOKENS = 12
# The fake's Reply::sse_in(dialect, &["Streamed ", "through ", "orproxy"]): one token a word.
STREAM_TOKENS = 3
# The error types an Anthropic-shaped error may name.
ANTHROPIC_ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
}
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


# ---------------------------------------------------------------------------------------
# The Responses API (OpenAI SDK)
# ---------------------------------------------------------------------------------------


def broken(err):
    """What an exception that is not the SDK's report of a failed stream says."""
    if isinstance(err, json.JSONDecodeError):
        return f"a JSON decode error (a half event reached the SDK): {err!r}"
    if isinstance(err, (openai.APIConnectionError, anthropic.APIConnectionError)):
        return f"a connection error (the stream broke without an error event): {err!r}"
    return f"{type(err).__module__}.{type(err).__name__}: {err}"


def responses_create(base_url):
    response = client(base_url).responses.create(model=MODEL, input="Hello")
    expect_equal("status", response.status, "completed")
    expect_equal("output_text", response.output_text, CHAT_CONTENT)
    expect_equal("model", response.model, MODEL)
    expect_equal("usage.input_tokens", response.usage.input_tokens, INPUT_TOKENS)
    print(f"content={response.output_text}")
    print(f"output-tokens={response.usage.output_tokens}")


def responses_events(events):
    """The text of a Responses event stream and its last event."""
    text, last, created, types = "", None, None, []
    for event in events:
        types.append(event.type)
        if event.type == "response.created":
            created = event.response.id
        elif event.type == "response.output_text.delta":
            text += event.delta
        last = event
    return text, last, created, types


def expect_completed(text, last, types):
    if last is None or last.type != "response.completed":
        fail(f"the stream ended after {text!r} with {types[-1:]}, not response.completed: {types}")
    expect_equal("reassembled text", text, STREAM_CONTENT)
    expect_equal("status", last.response.status, "completed")
    usage = last.response.usage
    expect_equal("usage.input_tokens", usage.input_tokens, INPUT_TOKENS)
    expect_equal("usage.output_tokens", usage.output_tokens, STREAM_TOKENS)
    print(f"content={text}")
    print(f"events={','.join(types)}")
    print(f"cost={(usage.model_extra or {}).get('cost')}")


def responses_create_stream(base_url):
    stream = client(base_url).responses.create(model=MODEL, input="Hello", stream=True)
    text, last, _created, types = responses_events(stream)
    expect_completed(text, last, types)


def responses_stream(base_url):
    with client(base_url).responses.stream(model=MODEL, input="Hello") as stream:
        text, last, _created, types = responses_events(stream)
        final = stream.get_final_response()
    expect_completed(text, last, types)
    expect_equal("final output_text", final.output_text, STREAM_CONTENT)


def expect_responses_failure(run):
    """A Responses stream that fails after PARTIAL_CONTENT must say so in its own
    protocol: the SDK's last event is `response.failed` (with the ID of
    `response.created`, status "failed" and an error code) or `error`."""
    text, last, created, types = "", None, None, []
    try:
        text, last, created, types = run()
    except openai.APIError as err:
        if isinstance(err, openai.APIConnectionError):
            fail(broken(err))
        # The SDK raises this for a `data:` event with a top-level `error`: the chat
        # protocol's error chunk, which typed Responses clients (Codex, the AI SDK) ignore.
        fail(
            f"openai.{type(err).__name__} from a data event with a top-level error "
            f"(a chat-shaped error chunk), not a response.failed or error event: {err.message}"
        )
    except Exception as err:  # noqa: BLE001: what broke is the finding
        fail(broken(err))
    if not text.startswith(PARTIAL_CONTENT):
        fail(f"content before the failure: got {text!r}, expected {PARTIAL_CONTENT!r}")
    if last is None or last.type not in ("response.failed", "error"):
        fail(
            f"the stream ended quietly after {text!r}, its last event "
            f"{types[-1:]}: expected response.failed or error; events: {types}"
        )
    if last.type == "response.failed":
        expect_equal("response.failed's response id", last.response.id, created)
        expect_equal("response.status", last.response.status, "failed")
        if last.response.error is None or not last.response.error.code:
            fail(f"response.failed without an error code: {last.response.error!r}")
        code, message = last.response.error.code, last.response.error.message
    else:
        code, message = last.code, last.message
    print(f"content={text}")
    print(f"event={last.type}")
    print(f"code={code}")
    print(f"message={message}")


def responses_create_stream_error(base_url):
    def run():
        return responses_events(
            client(base_url).responses.create(model=MODEL, input="Hello", stream=True)
        )

    expect_responses_failure(run)


def responses_stream_error(base_url):
    def run():
        with client(base_url).responses.stream(model=MODEL, input="Hello") as stream:
            return responses_events(stream)

    expect_responses_failure(run)


# ---------------------------------------------------------------------------------------
# Anthropic Messages (Anthropic SDK)
# ---------------------------------------------------------------------------------------

AUTH = "api-key"


def anthropic_client(base_url):
    token = os.environ.get("ORPROXY_TEST_CLIENT_TOKEN") or "dummy-key"
    if AUTH == "api-key":
        credential = {"api_key": token}
    elif AUTH == "auth-token":
        credential = {"auth_token": token}
    elif AUTH == "x-api-key":
        credential = {"default_headers": {"x-api-key": token}}
    else:
        fail(f"unknown AUTH {AUTH!r}: expected api-key, auth-token or x-api-key")
    return anthropic.Anthropic(base_url=base_url, timeout=60, **credential)


def messages_create(base_url):
    message = anthropic_client(base_url).messages.create(
        model=MODEL, max_tokens=100, messages=MESSAGES
    )
    text = "".join(block.text for block in message.content if block.type == "text")
    expect_equal("text", text, CHAT_CONTENT)
    expect_equal("model", message.model, MODEL)
    expect_equal("stop_reason", message.stop_reason, "end_turn")
    expect_equal("usage.input_tokens", message.usage.input_tokens, INPUT_TOKENS)
    print(f"content={text}")
    print(f"output-tokens={message.usage.output_tokens}")


def messages_events(events):
    """The text of a Messages event stream, its stop reason and event types."""
    text, stop_reason, output_tokens, types = "", None, None, []
    for event in events:
        types.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
        elif event.type == "message_delta":
            stop_reason = event.delta.stop_reason
            output_tokens = event.usage.output_tokens
    return text, stop_reason, output_tokens, types


def expect_message(text, stop_reason, output_tokens, types):
    if not types or types[-1] != "message_stop":
        fail(f"the stream ended after {text!r} without message_stop: {types}")
    expect_equal("reassembled text", text, STREAM_CONTENT)
    expect_equal("stop_reason", stop_reason, "end_turn")
    expect_equal("usage.output_tokens", output_tokens, STREAM_TOKENS)
    print(f"content={text}")
    print(f"events={','.join(types)}")


def messages_create_stream(base_url):
    stream = anthropic_client(base_url).messages.create(
        model=MODEL, max_tokens=100, messages=MESSAGES, stream=True
    )
    expect_message(*messages_events(stream))


def messages_stream(base_url):
    with anthropic_client(base_url).messages.stream(
        model=MODEL, max_tokens=100, messages=MESSAGES
    ) as stream:
        found = messages_events(stream)
        final = stream.get_final_message()
    expect_message(*found)
    text = "".join(block.text for block in final.content if block.type == "text")
    expect_equal("final text", text, STREAM_CONTENT)
    expect_equal("final usage.input_tokens", final.usage.input_tokens, INPUT_TOKENS)
    expect_equal("final usage.output_tokens", final.usage.output_tokens, STREAM_TOKENS)


def expect_messages_failure(run):
    """A Messages stream that fails after PARTIAL_CONTENT must raise the SDK's
    APIStatusError for an `error` event, never a decode or connection error, never a
    quiet end."""
    seen = {"text": "", "types": []}
    try:
        text, stop_reason, _tokens, types = run(seen)
    except anthropic.APIStatusError as err:
        if not seen["text"].startswith(PARTIAL_CONTENT):
            fail(f"content before the error: got {seen['text']!r}, expected {PARTIAL_CONTENT!r}")
        if err.type not in ANTHROPIC_ERROR_TYPES:
            fail(f"the error event's error.type is {err.type!r}; body {err.body!r}")
        print(f"content={seen['text']}")
        print(f"error-class={type(err).__name__}")
        print(f"status={err.status_code}")
        print(f"type={err.type}")
        print(f"message={err.api_message}")
        return
    except Exception as err:  # noqa: BLE001: what broke is the finding
        fail(f"{broken(err)} (after {seen['text']!r}, events {seen['types']})")
    fail(
        f"the stream ended quietly after {text!r} with stop_reason={stop_reason!r}, "
        f"no error raised; events: {types}"
    )


def _recording(events, seen):
    for event in events:
        seen["types"].append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            seen["text"] += event.delta.text
        yield event


def messages_create_stream_error(base_url):
    def run(seen):
        stream = anthropic_client(base_url).messages.create(
            model=MODEL, max_tokens=100, messages=MESSAGES, stream=True
        )
        return messages_events(_recording(stream, seen))

    expect_messages_failure(run)


def messages_stream_error(base_url):
    def run(seen):
        with anthropic_client(base_url).messages.stream(
            model=MODEL, max_tokens=100, messages=MESSAGES
        ) as stream:
            found = messages_events(_recording(stream, seen))
            stream.get_final_message()
            return found

    expect_messages_failure(run)


def messages_rejected(base_url):
    """orproxy refuses the credential: an Anthropic-shaped 401."""
    try:
        anthropic_client(base_url).messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    except anthropic.AuthenticationError as err:
        if err.type != "authentication_error":
            fail(f"the 401's error.type is {err.type!r}, not authentication_error; body {err.body!r}")
        print(f"status={err.status_code}")
        print(f"type={err.type}")
        print(f"message={err.api_message}")
        return
    except Exception as err:  # noqa: BLE001
        fail(broken(err))
    fail("the request succeeded; expected an AuthenticationError")


SCENARIOS = {
    "chat": chat,
    "stream": stream,
    "models": models,
    "rate-limit": rate_limit,
    "stream-error": stream_error,
    "retry": retry,
    "responses-create": responses_create,
    "responses-create-stream": responses_create_stream,
    "responses-stream": responses_stream,
    "responses-create-stream-error": responses_create_stream_error,
    "responses-stream-error": responses_stream_error,
    "messages-create": messages_create,
    "messages-create-stream": messages_create_stream,
    "messages-stream": messages_stream,
    "messages-create-stream-error": messages_create_stream_error,
    "messages-stream-error": messages_stream_error,
    "messages-rejected": messages_rejected,
}

if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in SCENARIOS:
        fail(f"usage: check.py {{{'|'.join(SCENARIOS)}}} BASE_URL [api-key|auth-token|x-api-key]")
    if len(sys.argv) == 4:
        AUTH = sys.argv[3]
    try:
        SCENARIOS[sys.argv[1]](sys.argv[2])
    except Exception as err:  # noqa: BLE001: say what broke in one line
        fail(f"the SDK raised {broken(err)}")
    if sys.argv[1].startswith("messages"):
        print(f"anthropic-python {anthropic.__version__} ({AUTH}): {sys.argv[1]} ok")
    else:
        print(f"openai-python {openai.__version__}: {sys.argv[1]} ok")
