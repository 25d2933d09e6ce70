// Applies UI message stream chunks (a JSON array on stdin, as tokenwire's encoder wrote them) with
// the AI SDK's own readUIMessageStream, which validates each chunk against the SDK's schema, and
// prints the message they make.
// usage: node ui_chunks.mjs <ai|ai5> < chunks.json
const [, , pkg] = process.argv;
const { readUIMessageStream } = await import(pkg);
let input = "";
for await (const piece of process.stdin) input += piece;
const chunks = JSON.parse(input);
const stream = new ReadableStream({
  start(controller) {
    for (const chunk of chunks) controller.enqueue(chunk);
    controller.close();
  },
});
const errors = [];
let last;
for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(String(e)) })) last = message;
console.log(JSON.stringify({ message: last, errors }));
