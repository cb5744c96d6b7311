// Example receiver for Tidings webhooks.
//
// GET /     answers "Welcome! I am ready to receive!" so a browser shows it is up.
// POST /... verifies the Standard Webhooks signature (401 if bad or missing), checks that the
//           body is a webhook (400 if not), logs it, and answers 200. A webhook that was
//           already received (same id, e.g. a retry whose first answer got lost) is answered
//           200 again but not handled twice.
//
// Settings (environment):
//   TIDINGS_RECEIVER_SECRET  your level's signing secret, "whsec_..." (required)
//   PORT                     port to listen on (default 9999)

"use strict";

const http = require("node:http");
const { Webhook } = require("standardwebhooks");

const WELCOME = "Welcome! I am ready to receive!";
const MAX_BODY_BYTES = 1024 * 1024;
// How many webhook ids to remember for deduplication. A busy receiver should keep the ids in
// its database instead.
const REMEMBERED_IDS = 10000;

const secret = process.env.TIDINGS_RECEIVER_SECRET;
if (!secret) {
  console.error("Set TIDINGS_RECEIVER_SECRET to your signing secret (whsec_...).");
  process.exit(1);
}
// Checks the signature headers and rejects timestamps more than 5 minutes from our clock.
const webhook = new Webhook(secret);

// Ids of the webhooks received lately; a Set keeps insertion order, so the first is the oldest.
const seen = new Set();
function firstTime(id) {
  if (seen.has(id)) return false;
  seen.add(id);
  if (seen.size > REMEMBERED_IDS) seen.delete(seen.values().next().value);
  return true;
}

// The body Tidings sends: { id, created, attempt, type, data }.
function isWebhook(body) {
  return (
    body !== null &&
    typeof body === "object" &&
    typeof body.id === "string" &&
    typeof body.created === "string" &&
    Number.isInteger(body.attempt) &&
    typeof body.type === "string" &&
    body.data !== null &&
    typeof body.data === "object" &&
    !Array.isArray(body.data)
  );
}

function reply(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

function receive(req, res, rawBody) {
  // 1. Verify the signature over the raw body, before trusting anything in it.
  try {
    webhook.verify(rawBody, req.headers, { jsonParse: false });
  } catch (err) {
    console.warn(`Rejected a request: ${err.message}`);
    return reply(res, 401, { error: err.message });
  }

  // 2. Parse it as a webhook.
  let event;
  try {
    event = JSON.parse(rawBody);
  } catch (err) {
    event = null;
  }
  if (!isWebhook(event)) {
    console.warn("Rejected a request: not a webhook");
    return reply(res, 400, { error: "not a webhook" });
  }

  // 3. Handle each webhook once. A repeat still gets 200, or Tidings would retry it.
  if (!firstTime(event.id)) {
    console.log(`Repeat of ${event.type} ${event.id} (attempt ${event.attempt}); ignored`);
    return reply(res, 200, { status: "repeat" });
  }

  // 4. Your code goes here; this example only logs the webhook.
  console.log(`Received ${event.type} ${event.id} (attempt ${event.attempt})`);
  console.log(JSON.stringify(event.data, null, 2));
  return reply(res, 200, { status: "received" });
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/") {
    res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
    return res.end(WELCOME);
  }
  if (req.method !== "POST") {
    return reply(res, 405, { error: "use POST to send a webhook" });
  }
  // Collect the raw body: the signature covers the exact bytes that were sent.
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      reply(res, 413, { error: "body too large" });
      req.destroy();
    } else {
      chunks.push(chunk);
    }
  });
  req.on("end", () => receive(req, res, Buffer.concat(chunks).toString("utf8")));
});

server.listen(Number(process.env.PORT || 9999), () => {
  console.log(`Listening on port ${server.address().port}`);
});

// Stop cleanly on Ctrl-C and on `docker stop`.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
