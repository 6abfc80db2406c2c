// The Vercel AI SDK's OpenAI provider (its default model is the Responses model) against two
// Synapse processes, requests alternating between them as behind a Service. Driven by
// tests/compat/test_vercel_ai.py, which reads the JSON printed at the end.
// Env: SYNAPSE_URLS (two base URLs, comma-separated), SYNAPSE_KEY, MODEL, PHASE
// (`conversation` or `stream`).
import { createOpenAI } from "@ai-sdk/openai";
import { APICallError, generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const bases = process.env.SYNAPSE_URLS.split(",");
const sent = []; // every request: which replica, and the `input` items it carried
let turn = 0;

async function alternating(url, init) {
  const base = bases[turn++ % bases.length];
  const target = String(url).replace(bases[0], base);
  sent.push({
    replica: bases.indexOf(base),
    path: new URL(target).pathname,
    input: JSON.parse(init.body).input,
  });
  return fetch(target, init);
}

const openai = createOpenAI({
  baseURL: bases[0] + "/v1",
  apiKey: process.env.SYNAPSE_KEY,
  fetch: alternating,
});
const model = openai(process.env.MODEL);
const getWeather = tool({
  description: "Weather in a city",
  inputSchema: jsonSchema({
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
  }),
  execute: async ({ city }) => `sunny in ${city}`,
});

const out = { texts: {}, errors: {} };

async function conversation() {
  // A two-turn conversation, then a tool loop in the same conversation (references in every step).
  const messages = [{ role: "user", content: "remember 42" }];
  let result = await generateText({ model, messages });
  out.texts.first = result.text;
  messages.push(...result.response.messages, { role: "user", content: "what number?" });
  result = await generateText({ model, messages });
  out.texts.second = result.text;
  messages.push(...result.response.messages, { role: "user", content: "weather in Paris?" });
  result = await generateText({
    model,
    messages,
    tools: { get_weather: getWeather },
    stopWhen: stepCountIs(3),
  });
  out.texts.toolLoop = result.text;
  out.toolLoopSteps = result.steps.length;
}

async function streamed() {
  // Streamed: ids are announced before the text exists, so they carry nothing. With the
  // default (store on) the second turn's reference gets a 400 that says what to do ...
  const history = [{ role: "user", content: "stream once" }];
  let stream = streamText({ model, messages: history });
  out.texts.streamed = await stream.text;
  history.push(...(await stream.response).messages, { role: "user", content: "and again" });
  let refusal;
  stream = streamText({
    model,
    messages: history,
    onError: ({ error }) => {
      refusal = error;
    },
  });
  await stream.consumeStream();
  out.errors.streamedReference = APICallError.isInstance(refusal)
    ? { status: refusal.statusCode, message: refusal.message }
    : String(refusal);
  // ... and with store: false the SDK sends the items themselves, which works streamed too.
  const storeFalse = { openai: { store: false } };
  stream = streamText({ model, messages: history, providerOptions: storeFalse });
  out.texts.streamedStoreFalse = await stream.text;
}

await (process.env.PHASE === "stream" ? streamed() : conversation());
out.sent = sent;
console.log(JSON.stringify(out));
