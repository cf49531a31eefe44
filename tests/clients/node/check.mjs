// One scenario of the official OpenAI Node SDK talking to orproxy.
//
// Usage: node check.mjs SCENARIO BASE_URL   (BASE_URL is orproxy's, like http://127.0.0.1:3000/v1)
//
// tests/clients.rs starts the fake OpenRouter and `orproxy serve`, scripts the fake's
// replies for SCENARIO, then runs this. The expected values below are what that test
// scripts. The script checks what the SDK returned, prints `name=value` lines for the
// test, and exits 0; on anything unexpected it prints `FAIL: ...` and exits 1.

import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const MODEL = 'meta-llama/llama-3.3-70b-instruct:free';
const MESSAGES = [{ role: 'user', content: 'Hello' }];
// Reply::chat_ok() of the fake.
const CHAT_CONTENT = 'Hello from fake OpenRouter';
// The fake's Reply::sse_chat(&["Streamed ", "through ", "orproxy"]).
const STREAM_CONTENT = 'Streamed through orproxy';
// The deltas the fake sends before the stream breaks.
const PARTIAL_CONTENT = 'Partial answer';
// The fake's GET /models.
const MODEL_IDS = ['meta-llama/llama-3.3-70b-instruct:free', 'openai/gpt-4o'];

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function expectEqual(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) fail(`${what}: got ${g}, expected ${w}`);
}

// Counts the HTTP requests the SDK sends (retries included).
let requestsSent = 0;

function client(baseURL, options = {}) {
  return new OpenAI({
    baseURL,
    apiKey: 'dummy-key',
    timeout: 60_000,
    fetch: (url, init) => {
      requestsSent += 1;
      return fetch(url, init);
    },
    ...options,
  });
}

async function chat(baseURL) {
  const completion = await client(baseURL).chat.completions.create({ model: MODEL, messages: MESSAGES });
  expectEqual('content', completion.choices[0].message.content, CHAT_CONTENT);
  expectEqual('model', completion.model, MODEL);
  expectEqual('finish_reason', completion.choices[0].finish_reason, 'stop');
  console.log(`content=${completion.choices[0].message.content}`);
}

async function stream(baseURL) {
  let text = '';
  let chunks = 0;
  let finish = null;
  const stream = await client(baseURL).chat.completions.create({
    model: MODEL,
    messages: MESSAGES,
    stream: true,
  });
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
  }
  expectEqual('reassembled text', text, STREAM_CONTENT);
  expectEqual('finish_reason', finish, 'stop');
  if (chunks < 3) fail(`expected one chunk per delta, got ${chunks} chunk(s)`);
  console.log(`content=${text}`);
  console.log(`chunks=${chunks}`);
}

async function models(baseURL) {
  const ids = [];
  for await (const model of client(baseURL).models.list()) ids.push(model.id);
  expectEqual('model ids', ids, MODEL_IDS);
  console.log(`models=${ids.join(',')}`);
}

async function rateLimit(baseURL) {
  try {
    await client(baseURL, { maxRetries: 0 }).chat.completions.create({ model: MODEL, messages: MESSAGES });
  } catch (err) {
    if (!(err instanceof OpenAI.RateLimitError)) fail(`expected a RateLimitError, got ${err}`);
    expectEqual('status', err.status, 429);
    const retryAfter = err.headers.get('retry-after');
    if (retryAfter === null) fail(`no Retry-After on the 429; headers: ${[...err.headers]}`);
    console.log(`retry-after=${retryAfter}`);
    console.log(`code=${err.code}`);
    console.log(`message=${err.message}`);
    return;
  }
  fail('the request succeeded; expected a RateLimitError');
}

async function streamError(baseURL) {
  let text = '';
  try {
    const stream = await client(baseURL).chat.completions.create({
      model: MODEL,
      messages: MESSAGES,
      stream: true,
    });
    for await (const chunk of stream) {
      if (chunk.choices.length > 0) text += chunk.choices[0].delta.content ?? '';
    }
  } catch (err) {
    if (!(err instanceof OpenAI.APIError)) fail(`expected an APIError, got ${err}`);
    // A connection error is an APIError too, but it would mean the SDK saw a broken
    // body rather than the error event a stream must end with.
    if (err instanceof OpenAI.APIConnectionError) fail(`the stream broke without an error event: ${err}`);
    expectEqual('content before the error', text, PARTIAL_CONTENT);
    console.log(`error-type=${err.constructor.name}`);
    console.log(`code=${err.code}`);
    console.log(`message=${err.message}`);
    return;
  }
  fail(`the stream ended quietly after ${JSON.stringify(text)}; expected an APIError`);
}

async function retry(baseURL) {
  const completion = await client(baseURL).chat.completions.create({ model: MODEL, messages: MESSAGES });
  expectEqual('content', completion.choices[0].message.content, CHAT_CONTENT);
  if (requestsSent < 2) fail('the first request succeeded; expected the SDK to retry a 429');
  console.log(`content=${completion.choices[0].message.content}`);
  console.log(`retries=${requestsSent - 1}`);
}

const SCENARIOS = {
  chat,
  stream,
  models,
  'rate-limit': rateLimit,
  'stream-error': streamError,
  retry,
};

const [scenario, baseURL] = process.argv.slice(2);
if (process.argv.length !== 4 || !(scenario in SCENARIOS)) {
  fail(`usage: node check.mjs {${Object.keys(SCENARIOS).join('|')}} BASE_URL`);
}
await SCENARIOS[scenario](baseURL);
console.log(`openai-node ${VERSION}: ${scenario} ok`);
