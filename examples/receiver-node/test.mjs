// Tests for receiver.js: starts it on a free port and sends it webhooks signed the way Tidings
// signs them. Run with `node --test` in this directory (after `npm install`).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { fileURLToPath } from "node:url";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const ID = "26edf51b5ed353431566fdf1";

// Standard Webhooks: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">, keyed with the
// base64-decoded part of the secret after "whsec_".
function sign(secret, id, timestamp, body) {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const mac = createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64");
  return `v1,${mac}`;
}

const now = () => Math.floor(Date.now() / 1000);

function webhookBody(id = ID) {
  return JSON.stringify({
    id,
    created: "2020-07-15T12:33:14.000Z",
    attempt: 2,
    type: "COMPANY_CHANGED",
    data: { id: "784d061c0856dc4c97774da7", name: "Company 1" },
  });
}

function signedHeaders(body, { secret = SECRET, id = ID, timestamp = now() } = {}) {
  return {
    "content-type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": sign(secret, id, timestamp, body),
  };
}

let receiver;
let baseUrl;
let output = "";

before(async () => {
  receiver = spawn(process.execPath, [fileURLToPath(new URL("receiver.js", import.meta.url))], {
    env: { ...process.env, PORT: "0", TIDINGS_RECEIVER_SECRET: SECRET },
    stdio: ["ignore", "pipe", "pipe"],
  });
  receiver.stderr.on("data", (chunk) => (output += chunk));
  // PORT=0 picks a free port; receiver.js prints the one it got.
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`receiver did not start: ${output}`)), 10000);
    receiver.stdout.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/Listening on port (\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    receiver.on("exit", (code) => reject(new Error(`receiver exited with ${code}: ${output}`)));
  });
  baseUrl = `http://127.0.0.1:${port}`;
});

after(() => receiver.kill());

async function post(body, headers, path = "/") {
  const res = await fetch(baseUrl + path, { method: "POST", headers, body });
  return { status: res.status, body: await res.json() };
}

test("the test's signer reproduces the Standard Webhooks test vector", () => {
  assert.equal(
    sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'),
    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  );
});

test("GET / answers the welcome text", async () => {
  const res = await fetch(baseUrl + "/");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "Welcome! I am ready to receive!");
});

test("a signed webhook is answered 200 and logged", async () => {
  const body = webhookBody("0123456789abcdef01234567");
  assert.deepEqual(await post(body, signedHeaders(body, { id: "0123456789abcdef01234567" })), {
    status: 200,
    body: { status: "received" },
  });
  // The log reaches stdout asynchronously.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.match(output, /Received COMPANY_CHANGED 0123456789abcdef01234567 \(attempt 2\)/);
  assert.match(output, /"name": "Company 1"/);
});

test("a signed webhook to another path is answered 200", async () => {
  const body = webhookBody("1123456789abcdef01234567");
  const headers = signedHeaders(body, { id: "1123456789abcdef01234567" });
  assert.equal((await post(body, headers, "/send/webhook/here")).status, 200);
});

test("a tampered body is answered 401", async () => {
  const body = webhookBody();
  const tampered = body.replace("Company 1", "Company 2");
  assert.deepEqual(await post(tampered, signedHeaders(body)), {
    status: 401,
    body: { error: "No matching signature found" },
  });
});

test("a wrong secret is answered 401", async () => {
  const body = webhookBody();
  assert.equal((await post(body, signedHeaders(body, { secret: OTHER_SECRET }))).status, 401);
});

test("a timestamp more than 5 minutes old is answered 401", async () => {
  const body = webhookBody();
  assert.deepEqual(await post(body, signedHeaders(body, { timestamp: now() - 6 * 60 })), {
    status: 401,
    body: { error: "Message timestamp too old" },
  });
});

test("a bare v1, signature is answered 401", async () => {
  const body = webhookBody();
  const headers = { ...signedHeaders(body), "webhook-signature": "v1," };
  assert.equal((await post(body, headers)).status, 401);
});

test("missing signature headers are answered 401", async () => {
  const body = webhookBody();
  for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
    const headers = signedHeaders(body);
    delete headers[name];
    assert.deepEqual(
      await post(body, headers),
      { status: 401, body: { error: "Missing required headers" } },
      `without ${name}`,
    );
  }
});

test("a signed body that is not a webhook is answered 400", async () => {
  for (const body of ["hello", '{"test": 2432232314}', webhookBody().replace(/"data":\{.*\}\}$/, '"data":[]}')]) {
    assert.deepEqual(
      await post(body, signedHeaders(body)),
      { status: 400, body: { error: "not a webhook" } },
      body,
    );
  }
});

test("a repeated webhook id is answered 200 as a repeat", async () => {
  const body = webhookBody("2123456789abcdef01234567");
  const id = "2123456789abcdef01234567";
  assert.deepEqual(await post(body, signedHeaders(body, { id })), {
    status: 200,
    body: { status: "received" },
  });
  // A retry: same webhook, new timestamp and signature.
  assert.deepEqual(await post(body, signedHeaders(body, { id, timestamp: now() + 1 })), {
    status: 200,
    body: { status: "repeat" },
  });
});
