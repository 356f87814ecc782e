// `trinity serve` driven by the official OpenAI Node SDK (the `openai` npm package), the way users
// call it: models.list, chat and text completions with and without streaming, usage, and the
// errors the SDK turns into typed exceptions (400, 401, 429 and its retry).
//
// Run by tests/e2e/openai_client.sh against a server started with
//   --api-key $TRINITY_API_KEY --parallel 1 --queue 0 -c 2048
// (one slot and no queue, so a second request while one runs gets 429).
//
// Environment: TRINITY_URL (http://127.0.0.1:PORT), TRINITY_API_KEY.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const url = process.env.TRINITY_URL;
const apiKey = process.env.TRINITY_API_KEY;
assert.ok(url && apiKey, 'TRINITY_URL and TRINITY_API_KEY must be set');
const baseURL = `${url}/v1`;
const client = new OpenAI({ baseURL, apiKey, timeout: 120_000 });

let failures = 0;
async function step(name, fn) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL - ${name}\n${e?.stack ?? e}`);
  }
}

// Expects `promise` to reject with SDK error class `cls` and HTTP `status`; returns the error.
async function expectError(promise, cls, status) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.status, status);
    return e;
  }
  assert.fail(`expected ${cls.name} (${status}), the request succeeded`);
}

function checkUsage(usage, maxCompletion) {
  assert.ok(usage, 'usage is present');
  assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0, JSON.stringify(usage));
  assert.ok(Number.isInteger(usage.completion_tokens) && usage.completion_tokens >= 1, JSON.stringify(usage));
  assert.ok(usage.completion_tokens <= maxCompletion, JSON.stringify(usage));
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

let modelId;
await step('models.list', async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  assert.equal(models.length, 1);
  assert.equal(models[0].object, 'model');
  assert.equal(typeof models[0].id, 'string');
  assert.equal(typeof models[0].owned_by, 'string');
  assert.ok(Number.isInteger(models[0].created));
  modelId = models[0].id;
});

// Greedy, so the streamed text must equal the non-streamed one. ignore_eos (llama.cpp's
// extension, passed through in the body) makes the length exact.
const chatRequest = () => ({
  model: modelId,
  messages: [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'Tell me a short story about a cat.' },
  ],
  max_tokens: 12,
  temperature: 0,
  ignore_eos: true,
});

let chatReply;
await step('chat.completions.create', async () => {
  const r = await client.chat.completions.create(chatRequest());
  assert.equal(r.object, 'chat.completion');
  assert.ok(r.id.startsWith('chatcmpl-'), r.id);
  assert.equal(r.model, modelId);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].index, 0);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.choices[0].message.content.length > 0, 'non-empty content');
  assert.equal(r.choices[0].finish_reason, 'length');
  checkUsage(r.usage, 12);
  assert.equal(r.usage.completion_tokens, 12);
  chatReply = r;
});

await step('chat.completions.create, stream with include_usage', async () => {
  const stream = await client.chat.completions.create({
    ...chatRequest(),
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let role;
  let finish;
  let usage;
  let id;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    assert.equal(chunk.object, 'chat.completion.chunk');
    id ??= chunk.id;
    assert.equal(chunk.id, id);
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;  // the usage chunk
    const c = chunk.choices[0];
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) {
      assert.equal(finish, undefined, 'one finish_reason');
      finish = c.finish_reason;
    }
  }
  assert.ok(chunks >= 3, `${chunks} chunks`);
  assert.equal(role, 'assistant');
  assert.equal(finish, 'length');
  assert.equal(text, chatReply.choices[0].message.content);
  checkUsage(usage, 12);
  assert.deepEqual(usage, chatReply.usage);
});

await step('chat.completions.stream helper (finalChatCompletion)', async () => {
  const runner = client.chat.completions.stream(chatRequest());
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, chatReply.choices[0].message.content);
  assert.equal(final.choices[0].finish_reason, 'length');
});

await step('completions.create, plain and streamed', async () => {
  const request = { model: modelId, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, ignore_eos: true };
  const r = await client.completions.create(request);
  assert.equal(r.object, 'text_completion');
  assert.ok(r.id.startsWith('cmpl-'), r.id);
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.choices[0].text.length > 0, 'non-empty text');
  assert.equal(r.choices[0].finish_reason, 'length');
  checkUsage(r.usage, 6);
  assert.equal(r.usage.completion_tokens, 6);
  const stream = await client.completions.create({ ...request, stream: true });
  let text = '';
  let finish;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, r.choices[0].text);
  assert.equal(finish, 'length');
});

await step('prompt longer than the context -> BadRequestError 400 context_length_exceeded', async () => {
  const e = await expectError(
    client.completions.create({ model: modelId, prompt: 'word '.repeat(5000), max_tokens: 4 }),
    OpenAI.BadRequestError, 400);
  assert.equal(e.code, 'context_length_exceeded');
  assert.match(e.message, /maximum context length/);
});

await step('bad parameters -> BadRequestError 400 (no retries)', async () => {
  let e = await expectError(
    client.chat.completions.create({ ...chatRequest(), temperature: 'hot' }), OpenAI.BadRequestError, 400);
  assert.equal(e.param, 'temperature');
  e = await expectError(client.chat.completions.create({ ...chatRequest(), max_tokens: -5 }),
    OpenAI.BadRequestError, 400);
  assert.equal(e.param, 'max_tokens');
  e = await expectError(client.chat.completions.create({ ...chatRequest(), n: 3 }), OpenAI.BadRequestError, 400);
  assert.equal(e.code, 'unsupported_parameter');
});

await step('unknown model -> NotFoundError 404', async () => {
  const e = await expectError(client.chat.completions.create({ ...chatRequest(), model: 'gpt-nope' }),
    OpenAI.NotFoundError, 404);
  assert.equal(e.code, 'model_not_found');
});

await step('wrong API key -> AuthenticationError 401; /health stays open', async () => {
  const wrong = new OpenAI({ baseURL, apiKey: 'not-the-key', maxRetries: 0 });
  const e = await expectError(wrong.models.list(), OpenAI.AuthenticationError, 401);
  assert.equal(e.code, 'invalid_api_key');
  await expectError(wrong.chat.completions.create(chatRequest()), OpenAI.AuthenticationError, 401);
  const health = await fetch(`${url}/health`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: 'ok' });
});

// One slot, no queue: while a long stream holds the slot, a request without retries gets
// RateLimitError 429, and one with retries succeeds once the slot frees (here: the long stream
// is abandoned by its client, which the server notices at its next token). No timing is
// asserted: the long stream is cut only after the retrying request has seen its first 429.
await step('429 while busy: RateLimitError without retries, success with the SDK retrying', async () => {
  const long = await client.completions.create({
    model: modelId, prompt: 'a', max_tokens: 2000, ignore_eos: true, stream: true,
  });
  const iterator = long[Symbol.asyncIterator]();
  const first = await iterator.next();  // the first text chunk: the job holds the slot now
  assert.equal(first.done, false);

  const noRetry = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const e = await expectError(
    noRetry.completions.create({ model: modelId, prompt: 'b', max_tokens: 2 }), OpenAI.RateLimitError, 429);
  assert.equal(e.code, 'queue_full');
  assert.equal(e.headers.get('retry-after'), '1');

  let statuses = [];
  let saw429;
  const seen429 = new Promise((resolve) => { saw429 = resolve; });
  const retrying = new OpenAI({
    baseURL, apiKey, maxRetries: 8,
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      statuses.push(response.status);
      if (response.status === 429) saw429();
      return response;
    },
  });
  const pending = retrying.completions.create({ model: modelId, prompt: 'c', max_tokens: 2 });
  await Promise.race([seen429, pending.catch(() => {})]);
  assert.ok(statuses.includes(429), `the retrying request should have met the busy slot: ${statuses}`);
  long.controller.abort();  // the client goes away; the slot frees at the next token
  const r = await pending;
  assert.equal(r.object, 'text_completion');
  assert.ok(r.usage.completion_tokens >= 1);
  assert.equal(statuses.at(-1), 200);
  assert.ok(statuses.length >= 2, `${statuses}`);
});

await step('the server is still healthy and answers', async () => {
  const r = await client.chat.completions.create({ ...chatRequest(), max_tokens: 2 });
  assert.equal(r.usage.completion_tokens, 2);
});

if (failures > 0) {
  console.log(`${failures} step(s) failed`);
  process.exit(1);
}
console.log('openai client: all steps passed');
