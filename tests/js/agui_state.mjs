// Runs an AG-UI agent served by tokenwire's POST /agui with @ag-ui/client's HttpAgent, which applies
// STATE_SNAPSHOT and STATE_DELTA (JSON Patch) to agent.state; prints that state and the CUSTOM events.
// usage: node agui_state.mjs <base url> <api key>
import { HttpAgent } from "@ag-ui/client";

const [, , base, key] = process.argv;
const agent = new HttpAgent({
  url: `${base}/agui`,
  headers: { Authorization: `Bearer ${key}` },
  threadId: "thread-state",
  initialMessages: [{ id: "u1", role: "user", content: "go" }],
});
const custom = [];
await agent.runAgent(
  { runId: "run-state" },
  { onCustomEvent: ({ event }) => custom.push([event.name, event.value]) },
);
console.log(JSON.stringify({ state: agent.state, custom }));
