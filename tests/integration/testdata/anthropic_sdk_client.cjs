// Drives berry-proxy's /v1/messages with the official `@anthropic-ai/sdk` npm SDK
// (anthropic_sdk_test.cc starts the proxy and the mock providers): plain messages, streams
// (the SDK's own accumulation of Anthropic's events), and tool use, plain and streamed, on the
// models "tools" (Anthropic), "gemini-tools" (Gemini) and "openai-tools" (OpenAI).
// Usage: node anthropic_sdk_client.cjs <dir holding node_modules/@anthropic-ai/sdk> <proxy URL>
//        <berry user token>
// Prints one line "RESULT <json>" on success; exits 1 with the error otherwise.
'use strict';

const [, , sdkDir, baseURL, apiKey] = process.argv;
const sdk = require(require.resolve('@anthropic-ai/sdk', { paths: [sdkDir] }));
const Anthropic = sdk.default ?? sdk;
// The SDK sends the key as x-api-key.
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });

const messages = [{ role: 'user', content: 'Hello?' }];
const tools = [{
  name: 'get_weather',
  description: 'Current weather of a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

function text(message) {
  return message.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
}

async function main() {
  const out = { texts: [], streams: [], tools: [], toolStreams: [], error: null };
  for (let i = 0; i < 3; i++) {
    const m = await client.messages.create({ model: 'chat', max_tokens: 256, messages });
    out.texts.push({ type: m.type, text: text(m), stop: m.stop_reason, usage: m.usage });
  }
  for (let i = 0; i < 3; i++) {
    const stream = client.messages.stream({ model: 'chat', max_tokens: 256, messages });
    let deltas = '';
    stream.on('text', (t) => { deltas += t; });
    const m = await stream.finalMessage();
    out.streams.push({ text: text(m), deltas, stop: m.stop_reason, usage: m.usage });
  }
  for (const model of ['tools', 'gemini-tools', 'openai-tools']) {
    const t = await client.messages.create({
      model, max_tokens: 256, messages, tools, tool_choice: { type: 'any' },
    });
    out.tools.push({ model, stop: t.stop_reason, block: t.content.find((b) => b.type === 'tool_use') });
    if (model === 'openai-tools') continue;  // the OpenAI mock streams text only
    const m = await client.messages.stream({ model, max_tokens: 256, messages, tools }).finalMessage();
    out.toolStreams.push({ model, stop: m.stop_reason, block: m.content.find((b) => b.type === 'tool_use') });
  }
  try {
    await client.messages.create({ model: 'no-such-model', max_tokens: 5, messages });
  } catch (e) {
    out.error = { status: e.status, type: e.error?.error?.type ?? e.error?.type ?? null };
  }
  console.log('RESULT ' + JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
