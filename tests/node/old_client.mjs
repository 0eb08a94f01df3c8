// An old MCP client: the TypeScript SDK 1.10.2 (protocol 2024-11-05), over Streamable HTTP or the
// legacy HTTP+SSE transport. Usage: node old_client.mjs <base url> <http|sse> <token>
// Prints one JSON line: the server's info, the tool names, and the echo tool's text. The client
// refuses any protocol version but 2024-11-05 and 2024-10-07, so connecting at all proves the version.
import { Client } from "sdk-1-10/client/index.js";
import { SSEClientTransport } from "sdk-1-10/client/sse.js";
import { StreamableHTTPClientTransport } from "sdk-1-10/client/streamableHttp.js";

const [base, kind, token] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${token}` };
const transport =
  kind === "sse"
    ? new SSEClientTransport(new URL(base + "/sse"), {
        requestInit: { headers },
        eventSourceInit: {
          fetch: (url, init) => fetch(url, { ...init, headers: { ...(init?.headers ?? {}), ...headers } }),
        },
      })
    : new StreamableHTTPClientTransport(new URL(base + "/mcp"), { requestInit: { headers } });
const client = new Client({ name: "old-client", version: "1.10.2" });
const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(2);
}, 20000);
await client.connect(transport);
const tools = await client.listTools();
const res = await client.callTool({ name: "test__echo", arguments: { text: "from 2024" } });
console.log(
  JSON.stringify({
    server: client.getServerVersion(),
    tools: tools.tools.map((t) => t.name),
    text: res.content.map((c) => c.text ?? "").join(""),
  }),
);
clearTimeout(timer);
await client.close();
