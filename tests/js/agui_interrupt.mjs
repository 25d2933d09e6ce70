// Runs an AG-UI agent served by tokenwire's POST /agui with @ag-ui/client's HttpAgent: the run's
// server tool asks for an approval, so the run finishes with an "interrupt" outcome; the agent's
// next run answers it with a resume entry (approved or not) and carries the same run on.
// usage: node agui_interrupt.mjs <base url> <api key> <approve|deny>
import { HttpAgent } from "@ag-ui/client";

const [, , base, key, answer] = process.argv;
const agent = new HttpAgent({
  url: `${base}/agui`,
  headers: { Authorization: `Bearer ${key}` },
  threadId: "thread-pay",
  initialMessages: [{ id: "u1", role: "user", content: "Pay 5" }],
});
const runs = [];
const forwardedProps = { serverTools: ["wire_money"] };
let outcome = null;
const first = [];
await agent.runAgent(
  { runId: "run-0", forwardedProps },
  {
    onEvent: ({ event }) => first.push(event.type),
    onRunFinishedEvent: (e) => { outcome = { outcome: e.outcome, interrupts: e.interrupts ?? [] }; },
  },
);
runs.push({ events: first, outcome, pending: agent.pendingInterrupts });
const resume = agent.pendingInterrupts.map((i) =>
  answer === "approve"
    ? { interruptId: i.id, status: "resolved", payload: { approved: true } }
    : { interruptId: i.id, status: "cancelled" },
);
const second = [];
outcome = null;
await agent.runAgent(
  { runId: "run-1", forwardedProps, resume },
  {
    onEvent: ({ event }) => second.push(event.type),
    onRunFinishedEvent: (e) => { outcome = { outcome: e.outcome }; },
  },
);
runs.push({ events: second, outcome, pending: agent.pendingInterrupts });
console.log(JSON.stringify({ runs, messages: agent.messages }));
