// Runs an AG-UI agent served by tokenwire's POST /agui with @ag-ui/client's HttpAgent (which
// verifies the event order and applies every event to the agent's messages), answers the
// frontend tool the model called, and runs again with the result.
// usage: node agui_client.mjs <base url> <api key>
import { HttpAgent } from "@ag-ui/client";

const [, , base, key] = process.argv;
const pickColor = { name: "pick_color", description: "The user picks a color.", parameters: { type: "object", properties: {} } };
const agent = new HttpAgent({
  url: `${base}/agui`,
  headers: { Authorization: `Bearer ${key}` },
  threadId: "thread-1",
  initialMessages: [{ id: "u1", role: "user", content: "Weather, and my color?" }],
});
const runs = [];
for (let attempt = 0; attempt < 2; attempt++) {
  const events = [];
  const { newMessages } = await agent.runAgent(
    { runId: `run-${attempt}`, tools: [pickColor] },
    { onEvent: ({ event }) => events.push(event.type) },
  );
  runs.push({ events, newMessages });
  // Frontend tools: a call the run left unanswered is ours to answer before the next run.
  const answered = new Set(agent.messages.filter((m) => m.role === "tool").map((m) => m.toolCallId));
  const pending = agent.messages.flatMap((m) => m.toolCalls ?? []).filter((c) => !answered.has(c.id));
  if (pending.length === 0) break;
  for (const call of pending) {
    agent.addMessage({ id: `result-${call.id}`, role: "tool", toolCallId: call.id, content: "teal" });
  }
}
console.log(JSON.stringify({ runs, messages: agent.messages }));
