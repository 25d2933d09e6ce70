// Reads tokenwire's POST /api/chat with the AI SDK's DefaultChatTransport and readUIMessageStream
// (which validate every chunk against the SDK's schema), then tries to resume the chat's stream.
// usage: node ui_chat.mjs <ai|ai5> <base url> <api key> <chat id> [resume]
// With "resume" it only reconnects to the chat's active stream and prints its first text.
const [, , pkg, base, key, chatId, mode] = process.argv;
const { DefaultChatTransport, readUIMessageStream } = await import(pkg);
const transport = new DefaultChatTransport({ api: `${base}/api/chat`, headers: { Authorization: `Bearer ${key}` } });
const errors = [];
if (mode === "resume") {
  const stream = await transport.reconnectToStream({ chatId });
  if (stream === null) {
    console.log(JSON.stringify({ resumed: false }));
    process.exit(0);
  }
  for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(String(e)) })) {
    const text = message.parts.find((p) => p.type === "text");
    if (text && text.text) {
      console.log(JSON.stringify({ resumed: true, text: text.text, errors }));
      process.exit(0);
    }
  }
  throw new Error("the resumed stream ended without text");
}
const messages = [{ id: "u1", role: "user", parts: [{ type: "text", text: "weather?" }] }];
const stream = await transport.sendMessages({
  chatId, messages, trigger: "submit-message", messageId: undefined, abortSignal: undefined,
});
let last;
const outputs = [];  // every tool output the message showed as it streamed (preliminary ones too), in order
for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(String(e)) })) {
  last = message;
  for (const p of message.parts) {
    if (!p.type.startsWith("tool-") || p.output === undefined) continue;
    const seen = { id: p.toolCallId, output: p.output, preliminary: p.preliminary === true };
    const prev = outputs.findLast((o) => o.id === seen.id);
    if (!prev || prev.output !== seen.output || prev.preliminary !== seen.preliminary) outputs.push(seen);
  }
}
const resumed = await transport.reconnectToStream({ chatId });
console.log(JSON.stringify({ message: last, errors, outputs, resumed: resumed !== null }));
