#!/usr/bin/env node
// Headless MCP client built on the official TypeScript SDK (@modelcontextprotocol/sdk, pinned in
// ./package.json), used by Bastion's interop tests as a "real third-party client".
//
// It lives in tests/node/ (not tests/interop/) on purpose: ESM resolves bare specifiers from the
// script's own folder upwards and ignores NODE_PATH, so it must sit next to node_modules.
//
// Usage:  node tests/node/ts_client.mjs <mcp-url> [<plan-json> | @plan-file.json]
//
// Plan (every key optional):
//   {
//     "headers":        {"Authorization": "Bearer ..."},   // sent on every HTTP request
//     "clientInfo":     {"name": "ts-interop-client", "version": "1.0.0"},
//     "listTools":      true,                              // default true
//     "calls": [ {"name": "test_tool_with_progress", "arguments": {}, "progress": true,
//                 "timeoutMs": 60000} ],
//     "elicitation":    {"action": "accept", "content": {"response": "yes"}},
//                       // auto-answer elicitation/create; without it the client does not
//                       // declare the elicitation capability
//     "sampling":       {"text": "Paris", "model": "ts-interop-model"},
//                       // auto-answer sampling/createMessage (declares the sampling capability)
//     "listResources":  false, "readResources": ["test://static-text"],
//     "listPrompts":    false, "getPrompts": [{"name": "test_simple_prompt", "arguments": {}}],
//     "ping":           false,
//     "terminateSession": true                             // DELETE the session at the end
//   }
//
// Output: ONE JSON document on stdout:
//   {"ok": true, "serverInfo", "serverCapabilities", "protocolVersion", "sessionId",
//    "tools": [{name, description, inputSchema, ...}],
//    "calls": [{"name", "result" | "error", "progress": [{progress, total, message}], "logs": [...]}],
//    "elicitations": [<params received>], "samplings": [<params received>],
//    "resources", "resourceContents", "prompts", "promptResults", "logs": [<all log notifications>]}
// and exit code 0; on a fatal error {"ok": false, "error": "...", ...partial} and exit code 1.
// A failing tools/call is recorded in its entry ("error") and does not make the run fail.

import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  LoggingMessageNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

function parsePlan(arg) {
  if (!arg) return {};
  const text = arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg;
  return JSON.parse(text);
}

function errorInfo(err) {
  const out = { message: String(err?.message ?? err) };
  if (err && typeof err === 'object') {
    if ('code' in err) out.code = err.code;
    if ('data' in err && err.data !== undefined) out.data = err.data;
  }
  return out;
}

async function main() {
  const [url, planArg] = process.argv.slice(2);
  if (!url) {
    process.stderr.write('usage: node ts_client.mjs <mcp-url> [<plan-json>|@file]\n');
    process.exit(2);
  }
  const plan = parsePlan(planArg);
  const out = {
    ok: false,
    url,
    tools: null,
    calls: [],
    elicitations: [],
    samplings: [],
    logs: [],
  };

  const capabilities = {};
  if (plan.elicitation) capabilities.elicitation = { form: {} };
  if (plan.sampling) capabilities.sampling = {};
  const client = new Client(plan.clientInfo ?? { name: 'bastion-ts-interop-client', version: '1.0.0' }, {
    capabilities,
  });

  let currentCall = null;
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    out.logs.push(n.params);
    if (currentCall) currentCall.logs.push(n.params);
  });
  if (plan.elicitation) {
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      out.elicitations.push(req.params);
      const { action = 'accept', content } = plan.elicitation;
      return action === 'accept' ? { action, content: content ?? {} } : { action };
    });
  }
  if (plan.sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
      out.samplings.push(req.params);
      return {
        role: 'assistant',
        content: { type: 'text', text: plan.sampling.text ?? 'ok' },
        model: plan.sampling.model ?? 'bastion-ts-interop-model',
        stopReason: 'endTurn',
      };
    });
  }

  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: plan.headers ? { headers: plan.headers } : undefined,
  });

  try {
    await client.connect(transport);
    out.serverInfo = client.getServerVersion();
    out.serverCapabilities = client.getServerCapabilities();
    out.protocolVersion = transport.protocolVersion ?? null;
    out.sessionId = transport.sessionId ?? null;

    if (plan.ping) out.ping = await client.ping();
    if (plan.listTools !== false) out.tools = (await client.listTools()).tools;

    for (const call of plan.calls ?? []) {
      const entry = { name: call.name, progress: [], logs: [] };
      currentCall = entry;
      const options = { timeout: call.timeoutMs ?? 60000 };
      if (call.progress) {
        options.onprogress = (p) => entry.progress.push(p);
        options.resetTimeoutOnProgress = true;
      }
      try {
        entry.result = await client.callTool({ name: call.name, arguments: call.arguments ?? {} }, undefined, options);
      } catch (err) {
        entry.error = errorInfo(err);
      } finally {
        currentCall = null;
      }
      out.calls.push(entry);
    }

    if (plan.listResources) out.resources = (await client.listResources()).resources;
    if (plan.readResources) {
      out.resourceContents = {};
      for (const uri of plan.readResources) out.resourceContents[uri] = (await client.readResource({ uri })).contents;
    }
    if (plan.listPrompts) out.prompts = (await client.listPrompts()).prompts;
    if (plan.getPrompts) {
      out.promptResults = [];
      for (const p of plan.getPrompts) {
        out.promptResults.push(await client.getPrompt({ name: p.name, arguments: p.arguments ?? {} }));
      }
    }
    if (plan.terminateSession !== false && transport.sessionId) {
      try {
        await transport.terminateSession();
      } catch (err) {
        out.terminateError = errorInfo(err);
      }
    }
    out.ok = true;
  } catch (err) {
    out.error = errorInfo(err);
  } finally {
    try {
      await client.close();
    } catch {
      // closing a half-open transport may throw; the result is already recorded
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exitCode = out.ok ? 0 : 1;
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ ok: false, error: errorInfo(err) }) + '\n');
  process.exitCode = 1;
});
