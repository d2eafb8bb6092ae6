// Drives berry-proxy with the official `openai` npm SDK (openai_sdk_test.cc starts the proxy and
// the mock providers): plain chats, streams with usage, and tool calls, plain and streamed, on
// the models "tools" (Anthropic) and "gemini-tools" (Gemini).
// Usage: node openai_sdk_client.cjs <dir holding node_modules/openai> <base URL ending in /v1>
// Prints one line "RESULT <json>" on success; exits 1 with the error otherwise.
'use strict';

const [, , sdkDir, baseURL] = process.argv;
const OpenAI = require(require.resolve('openai', { paths: [sdkDir] }));
const client = new OpenAI({ baseURL, apiKey: 'berry-test-key', maxRetries: 0, timeout: 20000 });

const messages = [{ role: 'user', content: 'Hello?' }];
const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

async function main() {
  const out = { texts: [], streams: [], tools: [], toolStreams: [] };
  for (let i = 0; i < 6; i++) {
    const r = await client.chat.completions.create({ model: 'chat', messages });
    out.texts.push({
      content: r.choices[0].message.content,
      finish: r.choices[0].finish_reason,
      usage: r.usage,
    });
  }
  for (let i = 0; i < 6; i++) {
    const stream = await client.chat.completions.create({
      model: 'chat', messages, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices.length > 0) {
        text += chunk.choices[0].delta.content ?? '';
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    out.streams.push({ text, finish, usage });
  }
  for (const model of ['tools', 'gemini-tools']) {
    const t = await client.chat.completions.create({
      model, messages, tools, tool_choice: 'required',
    });
    out.tools.push({ model, finish: t.choices[0].finish_reason, calls: t.choices[0].message.tool_calls });
    const ts = await client.chat.completions.create({ model, messages, tools, stream: true });
    let name = '';
    let args = '';
    let finish = null;
    for await (const chunk of ts) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      for (const call of choice.delta.tool_calls ?? []) {
        if (call.function?.name) name = call.function.name;
        args += call.function?.arguments ?? '';
      }
      finish = choice.finish_reason ?? finish;
    }
    out.toolStreams.push({ model, name, args, finish });
  }
  console.log('RESULT ' + JSON.stringify(out));
}

main().catch((error) => {
  console.error('FAILED', error);
  process.exit(1);
});
