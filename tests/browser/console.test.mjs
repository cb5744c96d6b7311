// The web console in a real browser (Debian's Chromium through playwright-core) against the
// real `tidings serve` binary, a temporary SQLite file and a webhook receiver of our own that
// fails on demand.
//
// Run: `npm ci && node --test console.test.mjs` (scripts/test does it). Set
// TIDINGS_CONSOLE_SCREENSHOTS=<dir> to save a screenshot of each page there.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const binary = process.env.TIDINGS_BIN ?? join(root, "target/debug/tidings");
const shots = process.env.TIDINGS_CONSOLE_SCREENSHOTS;
const ADMIN = "console-test-operator-key-0123456789";
const XSS = "<img src=x onerror=alert(1)>";

let dir, server, base, browser, receiver, receiverUrl;
let failing = false;
const received = [];

/** Polls `check` until it returns a truthy value (bounded; no fixed sleeps as assertions). */
async function eventually(what, check, timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

async function api(method, path, body, key = ADMIN) {
  const r = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

const contact = { first_name: "Ann", last_name: "Smith", email: "ann@example.com" };
async function create(collection, body) {
  const withContact = collection === "sites" ? body : { contact, ...body };
  const r = await api("POST", `/v1/${collection}`, withContact);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function shot(page, name, opts = {}) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true, ...opts });
}

async function signIn(page, key) {
  await page.goto(base + "/sign-in");
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(base + "/");
}

const tree = {};

before(async () => {
  assert.ok(existsSync(binary), `${binary} is missing: run cargo build -p tidings first`);
  dir = mkdtempSync(join(tmpdir(), "tidings-console-"));
  receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ url: req.url, body });
      if (failing) {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end("receiver is down for maintenance");
      } else {
        res.writeHead(200);
        res.end("ok");
      }
    });
  });
  await new Promise((ok) => receiver.listen(0, "127.0.0.1", ok));
  receiverUrl = `http://127.0.0.1:${receiver.address().port}`;
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(binary, ["serve"], {
    cwd: dir,
    env: {
      ...process.env,
      TIDINGS_LISTEN: `127.0.0.1:${port}`,
      TIDINGS_DATABASE_URL: `sqlite://${join(dir, "tidings.db")}`,
      TIDINGS_SECRET_KEY_FILE: join(dir, "tidings.key"),
      TIDINGS_ADMIN_KEY: ADMIN,
      TIDINGS_ALLOW_HTTP: "true",
      TIDINGS_SSRF_ALLOW: "127.0.0.1/32",
      TIDINGS_RETRY_SCHEDULE: "200ms",
      RUST_LOG: "warn",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await eventually("the server to answer", async () => (await fetch(base + "/healthz")).ok);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    // launch() gives every run a fresh, temporary profile (its own --user-data-dir).
  });

  // reseller > dealer > (company "Acme" > site, XSS-named site) and a sibling company.
  tree.reseller = await create("resellers", { name: "Northwind Reseller", webhook_url: `${receiverUrl}/reseller` });
  tree.dealer = await create("dealers", { name: "Dealer One", reseller: { id: tree.reseller.id } });
  tree.company = await create("companies", { name: "Acme Company", dealer: { id: tree.dealer.id } });
  tree.sibling = await create("companies", {
    name: "Sibling Secret Co",
    dealer: { id: tree.dealer.id },
    webhook_url: `${receiverUrl}/sibling-hook`,
  });
  tree.site = await create("sites", { name: "Acme HQ", company: { id: tree.company.id } });
  tree.xss = await create("sites", { name: XSS, company: { id: tree.company.id } });
  tree.siblingSite = await create("sites", { name: "Sibling Site", company: { id: tree.sibling.id } });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  receiver?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the console as the operator: tree, live deliveries, attempts, retry, secret, keys, CSRF, sign-out", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const dialogs = [];
  page.on("dialog", (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    d.type() === "confirm" ? d.accept() : d.dismiss();
  });

  // Pages need a session.
  await page.goto(base + "/deliveries");
  assert.equal(new URL(page.url()).pathname, "/sign-in");
  await shot(page, "sign-in");

  // A wrong key is refused with the API's message.
  await page.getByLabel("API key").fill("not-a-key-at-all");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("unknown or revoked API key").waitFor();

  await signIn(page, ADMIN);
  const headers = (await page.request.get(base + "/")).headers();
  assert.match(headers["content-security-policy"], /script-src 'self'/);
  assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
  assert.equal(headers["x-frame-options"], "DENY");
  const cookie = (await context.cookies()).find((c) => c.name === "tidings_console");
  assert.ok(cookie.httpOnly, "the session cookie is HttpOnly");
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(cookie.expires > Date.now() / 1000 + 11 * 3600, "the cookie expires in about 12 h");

  // Hierarchy: the tree, and the XSS-named site as plain text.
  await page.getByRole("link", { name: "Hierarchy" }).click();
  await page.getByRole("link", { name: "Sibling Secret Co" }).waitFor();
  await page.getByText(XSS, { exact: true }).waitFor();
  assert.equal(await page.locator("main img").count(), 0, "no element made from a stored name");
  await shot(page, "hierarchy");

  // Deliveries: a webhook made while the page is open appears without a reload.
  await eventually("the first webhooks delivered", async () => received.length >= 4);
  await page.getByRole("link", { name: "Deliveries" }).click();
  await page.evaluate(() => (window.__sameDocument = true));
  const before = await page.locator("#rows tr").count();
  const live = await create("sites", { name: "Live Site", company: { id: tree.company.id } });
  await eventually("the new webhook row", async () => (await page.locator("#rows tr").count()) > before);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
  await page.locator("#rows tr").first().getByText("SITE_CREATED").waitFor();
  await shot(page, "deliveries");

  // A failing receiver: the webhook fails both attempts; its page shows them; retry it.
  failing = true;
  const failed = await create("sites", { name: "Failing Site", company: { id: tree.company.id } });
  const failedHook = await eventually("the webhook to fail for good", async () => {
    const r = await api("GET", `/v1/webhooks?subject_id=${failed.id}`);
    const w = r.body.data.find((w) => w.status === "failed");
    return w;
  });
  // The overview names the failing level and its error.
  await page.goto(base + "/");
  await page
    .locator("section", { has: page.getByRole("heading", { name: "Levels failing now" }) })
    .getByRole("link", { name: "Northwind Reseller" })
    .waitFor();
  await page.getByText("HTTP 500: only 200 counts as success").first().waitFor();
  await shot(page, "overview");
  await page.goto(`${base}/deliveries?status=failed`);
  await page.getByRole("link", { name: failedHook.id }).click();
  await page.waitForURL(`${base}/deliveries/${failedHook.id}`);
  assert.equal(await page.locator("table.attempts tbody tr").count(), 2);
  await page.getByText("receiver is down for maintenance").first().waitFor();
  await page.locator("table.attempts").getByText("HTTP 500").first().waitFor();
  await shot(page, "delivery");
  failing = false;
  await page.getByRole("button", { name: "Retry now" }).click();
  await page.getByText("Queued for an attempt now.").waitFor();
  await eventually("the retried webhook to succeed", async () => {
    const r = await api("GET", `/v1/webhooks/${failedHook.id}`);
    return r.body.status === "succeeded";
  });
  await page.reload();
  assert.equal(await page.locator("table.attempts tbody tr").count(), 3);
  await page.locator("table.attempts").getByText("HTTP 200").waitFor();

  // Recover: a level's failed webhooks since a time are queued again.
  failing = true;
  const again = await create("sites", { name: "Failing Again", company: { id: tree.company.id } });
  const againHook = await eventually("the second webhook to fail for good", async () => {
    const r = await api("GET", `/v1/webhooks?subject_id=${again.id}`);
    return r.body.data.find((w) => w.status === "failed");
  });
  failing = false;
  await page.goto(`${base}/levels/resellers/${tree.reseller.id}`);
  await page.getByRole("button", { name: "Queue them again" }).click();
  await page.getByText("1 failed webhook(s) queued again.").waitFor();
  await eventually("the recovered webhook to succeed", async () => {
    const r = await api("GET", `/v1/webhooks/${againHook.id}`);
    return r.body.status === "succeeded";
  });

  // A level: an invalid URL gets the API's error next to the field; reveal and rotate.
  await page.goto(`${base}/levels/resellers/${tree.reseller.id}`);
  await page.getByLabel("URL that receives this level's webhooks").fill("ftp://example.com/hook");
  await page.getByRole("button", { name: "Save URL" }).click();
  const urlError = await page.locator("#webhook_url-error").textContent();
  const apiError = await api("PATCH", `/v1/resellers/${tree.reseller.id}`, { webhook_url: "ftp://example.com/hook" });
  assert.equal(apiError.status, 422);
  assert.equal(urlError.trim(), apiError.body.error.message);
  assert.equal((await api("GET", `/v1/resellers/${tree.reseller.id}`)).body.webhook_url, `${receiverUrl}/reseller`);

  await page.getByRole("button", { name: "Reveal secret" }).click();
  const shown = (await page.locator("#secret").textContent()).trim();
  assert.equal(shown, (await api("GET", `/v1/resellers/${tree.reseller.id}/secret`)).body.secret);
  await page.getByLabel(/Make a new secret/).check();
  await page.getByRole("button", { name: "Rotate secret" }).click();
  await page.getByText("Secret rotated.").waitFor();
  const rotated = (await page.locator("#secret").textContent()).trim();
  assert.notEqual(rotated, shown);
  assert.match(rotated, /^whsec_/);
  assert.equal((await api("GET", `/v1/resellers/${tree.reseller.id}/secret`)).body.secret, rotated);
  assert.ok(dialogs.some((d) => d.startsWith("confirm:")), "rotation asked for confirmation");
  await shot(page, "level");

  // A change posted without the CSRF token is refused and changes nothing.
  const refused = await page.evaluate(async (path) => {
    const r = await fetch(path, { method: "POST", body: new URLSearchParams({ confirm: "yes" }) });
    return r.status;
  }, `/levels/resellers/${tree.reseller.id}/rotate`);
  assert.equal(refused, 403);
  assert.equal((await api("GET", `/v1/resellers/${tree.reseller.id}/secret`)).body.secret, rotated);

  // API keys: make a key for the company (shown once), make one more and revoke it.
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Level").selectOption(`company:${tree.company.id}`);
  await page.getByLabel("Label (optional)").fill("acme console");
  await page.getByRole("button", { name: "Make key" }).click();
  const companyKey = (await page.locator("#new-key").textContent()).trim();
  assert.equal((await api("GET", `/v1/companies/${tree.company.id}`, undefined, companyKey)).status, 200);
  tree.companyKey = companyKey;

  await page.getByLabel("Level").selectOption(`site:${tree.site.id}`);
  await page.getByLabel("Label (optional)").fill("to revoke");
  await page.getByRole("button", { name: "Make key" }).click();
  const doomed = (await page.locator("#new-key").textContent()).trim();
  await shot(page, "keys");
  await page.getByRole("button", { name: "Revoke key to revoke" }).click();
  await page.waitForURL(base + "/keys");
  await page.getByRole("row", { name: /to revoke/ }).getByText("revoked").waitFor();
  assert.equal((await api("GET", `/v1/sites/${tree.site.id}`, undefined, doomed)).status, 401);

  // Failure e-mails and the overview.
  await page.getByRole("link", { name: "Failure e-mails" }).click();
  await page.getByRole("link", { name: failedHook.id }).waitFor();
  await shot(page, "emails");
  await page.getByRole("link", { name: "Overview" }).click();
  await page.getByRole("heading", { name: "Last hour, per minute" }).waitFor();
  assert.ok((await page.locator("svg rect.ok").count()) > 0, "the chart shows delivered attempts");
  assert.ok((await page.locator("svg rect.bad").count()) > 0, "the chart shows failed attempts");

  // Phone width: the deliveries list still reads.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(base + "/deliveries");
  await shot(page, "deliveries-phone");
  await page.setViewportSize({ width: 1280, height: 900 });

  // Sign-out ends the session on the server, not only in this browser.
  const session = (await context.cookies()).find((c) => c.name === "tidings_console");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(base + "/sign-in");
  await context.addCookies([session]);
  await page.goto(base + "/");
  assert.equal(new URL(page.url()).pathname, "/sign-in");

  assert.deepEqual(dialogs.filter((d) => d.startsWith("alert")), [], "no script from a stored value ran");
  assert.ok(live.id);
  await context.close();
});

test("a company-scoped key sees its company only, as the API does", async () => {
  assert.ok(tree.companyKey, "the operator test made the key");
  // A webhook addressed to the sibling company.
  const siblingHook = await eventually("a webhook to the sibling", async () => {
    const r = await api("GET", `/v1/webhooks?level_id=${tree.sibling.id}`);
    return r.body.data[0];
  });
  // And one to the company itself (its own site changes reach it once it has a URL).
  const patched = await api("PATCH", `/v1/companies/${tree.company.id}`, { webhook_url: `${receiverUrl}/acme` }, tree.companyKey);
  assert.equal(patched.status, 200);
  await create("sites", { name: "Acme Annex", company: { id: tree.company.id } });

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const dialogs = [];
  page.on("dialog", (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss();
  });
  await signIn(page, tree.companyKey);

  const visit = async (path) => {
    const r = await page.goto(base + path);
    const text = await page.locator("body").innerText();
    const html = await page.content();
    for (const secret of ["Sibling Secret Co", "Sibling Site", "Northwind Reseller", "sibling-hook"]) {
      assert.ok(!text.includes(secret) && !html.includes(secret), `${secret} appears on ${path}`);
    }
    return r.status();
  };
  assert.equal(await visit("/"), 200);
  assert.equal(await visit("/levels"), 200);
  await page.getByRole("link", { name: "Acme Company" }).waitFor();
  await page.getByText(XSS, { exact: true }).waitFor();
  assert.equal(await visit("/deliveries"), 200);
  await eventually("the company's own webhook", async () => {
    await page.reload();
    return (await page.locator("#rows tr").count()) > 0;
  });
  assert.equal(await visit(`/deliveries?level_id=${tree.sibling.id}`), 200);
  assert.equal(await page.locator("#rows tr").count(), 0);
  assert.equal(await visit("/emails"), 200);
  assert.equal(await visit(`/levels/companies/${tree.company.id}`), 200);

  // The sibling's URLs answer as the API does.
  const pairs = [
    [`/levels/companies/${tree.sibling.id}`, `/v1/companies/${tree.sibling.id}`],
    [`/levels/sites/${tree.siblingSite.id}`, `/v1/sites/${tree.siblingSite.id}`],
    [`/levels/dealers/${tree.dealer.id}`, `/v1/dealers/${tree.dealer.id}`],
    [`/deliveries/${siblingHook.id}`, `/v1/webhooks/${siblingHook.id}`],
    ["/keys", "/v1/api-keys"],
  ];
  for (const [console, apiPath] of pairs) {
    const fromApi = await api("GET", apiPath, undefined, tree.companyKey);
    assert.equal(await visit(console), fromApi.status, `${console} answers as ${apiPath}`);
  }
  assert.equal((await api("GET", `/v1/companies/${tree.sibling.id}`, undefined, tree.companyKey)).status, 404);

  // A change to the sibling through the console is refused as by the API.
  await page.goto(`${base}/levels/companies/${tree.company.id}`);
  const csrf = await page.locator("input[name=csrf]").first().inputValue();
  const status = await page.evaluate(
    async ([path, csrf]) => {
      const r = await fetch(path, { method: "POST", body: new URLSearchParams({ csrf, confirm: "yes" }) });
      return r.status;
    },
    [`/levels/companies/${tree.sibling.id}/rotate`, csrf],
  );
  assert.equal(status, 404);
  assert.deepEqual(dialogs, []);
  await context.close();
});
