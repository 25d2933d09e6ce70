// Runs one AG-UI run against tokenwire's POST /agui with @ag-ui/client's HttpAgent (which verifies
// the event order and applies every event, MESSAGES_SNAPSHOT included, to the agent's messages)
// and prints the events' types and the messages the agent holds at the end.
// usage: node agui_run.mjs <base url> <api key>
import { HttpAgent } from "@ag-ui/client";

const [, , base, key] = process.argv;
const agent = new HttpAgent({
  url: `${base}/agui`,
  headers: { Authorization: `Bearer ${key}` },
  threadId: "thread-r",
  initialMessages: [{ id: "u1", role: "user", content: "go" }],
});
const events = [];
await agent.runAgent({ runId: "run-r" }, { onEvent: ({ event }) => events.push(event.type) });
console.log(JSON.stringify({ events, messages: agent.messages }));
