// A chat page built on the AI SDK's useChat and DefaultChatTransport, pointed at tokenwire's
// POST /api/chat. tests/test_ai_sdk.py bundles it with esbuild and drives it in headless Chromium.
// Query: ?key=<api key>&chat=<chat id>[&resume][&serverTools=a,b] (resume: reconnect to the chat's
// live stream on load; serverTools: the server's tools the run may call, answered with Approve / Deny
// when they ask for an approval).
import { useChat } from "@ai-sdk/react";
import {
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  lastAssistantMessageIsCompleteWithToolCalls,
} from "ai";
import { useState } from "react";
import { createRoot } from "react-dom/client";

const query = new URLSearchParams(location.search);
// The page's own tool: the model calls it, the browser answers (onToolCall → addToolOutput).
const pickColor = { name: "pick_color", description: "The user picks a color.", parameters: { type: "object", properties: {} } };
window.transient = []; // data parts the SDK hands to onData only (transient: never in the message)
window.outputs = []; // every tool output shown as the message streamed (preliminary ones too)

function Part({ part, answer }) {
  if (part.type === "text") return <span className="text">{part.text}</span>;
  if (part.type === "reasoning") return <details className="reasoning"><summary>thinking</summary>{part.text}</details>;
  if (part.type.startsWith("data-")) return <pre className="data" data-name={part.type.slice(5)}>{JSON.stringify(part.data)}</pre>;
  if (part.type.startsWith("tool-")) {
    if (part.output !== undefined) window.outputs.push([part.toolCallId, part.preliminary === true, part.output]);
    const output = part.state === "output-error" ? part.errorText : part.output;
    const asking = part.state === "approval-requested";
    return (
      <div className="tool" data-name={part.type.slice(5)} data-state={part.state}>
        {JSON.stringify(part.input ?? null)} → <span className="output">{JSON.stringify(output ?? null)}</span>
        {asking ? <button className="approve" onClick={() => answer({ id: part.approval.id, approved: true })}>Approve</button> : null}
        {asking ? <button className="deny" onClick={() => answer({ id: part.approval.id, approved: false })}>Deny</button> : null}
      </div>
    );
  }
  return null;
}

function App() {
  const [input, setInput] = useState("");
  const serverTools = (query.get("serverTools") || "").split(",").filter(Boolean);
  const { messages, sendMessage, status, stop, error, addToolOutput, addToolApprovalResponse } = useChat({
    id: query.get("chat"),
    resume: query.has("resume"),
    transport: new DefaultChatTransport({
      api: "/api/chat",
      headers: { Authorization: `Bearer ${query.get("key")}` },
      body: { tools: [pickColor], serverTools },
    }),
    // The page's own tool answered, or every approval the server asked for answered: send again.
    sendAutomaticallyWhen: (chat) =>
      lastAssistantMessageIsCompleteWithToolCalls(chat) || lastAssistantMessageIsCompleteWithApprovalResponses(chat),
    onData(part) {
      window.transient.push(part);
    },
    onToolCall({ toolCall }) {
      if (toolCall.toolName === "pick_color") {
        addToolOutput({ tool: "pick_color", toolCallId: toolCall.toolCallId, output: "teal" });
      }
    },
  });
  return (
    <main>
      <p id="status">{status}</p>
      {error ? <p id="error">{error.message}</p> : null}
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.id} className="message" data-role={m.role} data-id={m.id}>
            {m.parts.map((p, i) => <Part key={i} part={p} answer={addToolApprovalResponse} />)}
          </li>
        ))}
      </ol>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          sendMessage({ text: input });
          setInput("");
        }}
      >
        <input id="input" value={input} onChange={(e) => setInput(e.target.value)} />
        <button id="send" type="submit">Send</button>
      </form>
      <button
        id="stop"
        onClick={() => {
          stop(); // aborts the request; a resumable chat's run survives that, so end it too:
          fetch(`/api/chat/${query.get("chat")}/stream`, { method: "DELETE", headers: { Authorization: `Bearer ${query.get("key")}` } });
        }}
      >
        Stop
      </button>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<App />);
