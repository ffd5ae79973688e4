// The chat page in a real browser: headless Chromium (Debian's package) driven by
// playwright-core, against the real threadchat binary started on free ports.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { createHmac } from "node:crypto";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.THREADCHAT_BIN || path.join(ROOT, "target/debug/threadchat");
const SHOTS = path.join(ROOT, "target");
const WAIT = 10_000; // every wait in this file fails after this many ms

let browser;

// Starts the binary; resolves with { proc, http, ws } once it printed both addresses.
function startServer(httpAddr = "127.0.0.1:0", wsAddr = "127.0.0.1:0", dataDir = null, extra = []) {
  dataDir ??= mkdtempSync(path.join(tmpdir(), "threadchat-browser-"));
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ["--http-addr", httpAddr, "--ws-addr", wsAddr, "--data-dir", dataDir, ...extra], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, RUST_LOG: "warn" },
    });
    const timer = setTimeout(() => reject(new Error("server did not start")), WAIT);
    const addrs = {};
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const m = line.match(/^(http|ws) listening on \w+:\/\/(.+)$/);
      if (m) addrs[m[1]] = m[2];
      if (addrs.http && addrs.ws) {
        clearTimeout(timer);
        resolve({ proc, http: addrs.http, ws: addrs.ws, dataDir });
      }
    });
    proc.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
}

// Starts a server again on the ports of one that stopped (the page reconnects to them). A
// port just released could be taken meanwhile by another program's bind(0): retry until
// WAIT runs out rather than fail on a neighbour's luck.
async function restartServer(old, dataDir = null) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    try {
      return await startServer(old.http, old.ws, dataDir);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function stopServer(server) {
  return new Promise((resolve) => {
    if (server.proc.exitCode !== null) return resolve(server.proc.exitCode);
    server.proc.once("exit", (code) => resolve(code));
    server.proc.kill("SIGINT");
  });
}

async function openChat(url) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => { throw e; });
  await page.goto(url);
  await page.locator("#status.connected").waitFor({ timeout: WAIT });
  assert.ok(await page.locator("#auth-form").isHidden(), "no sign-in form without --token");
  return page;
}

function messageTexts(page) {
  return page.locator("#messages li.message .text").allTextContents();
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // The machine has no internet: keep Chromium from trying to phone home.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

test("a message typed in one page appears in both, as text", async () => {
  const server = await startServer();
  try {
    const url = `http://${server.http}/`;
    const alice = await openChat(url);
    const bob = await openChat(url);

    await alice.fill("#name", "Alice");
    await alice.click("#name-form button");
    await bob.locator("#messages li.notice", { hasText: "is now Alice" }).waitFor({ timeout: WAIT });

    await send(alice, "hello from Alice");
    for (const page of [alice, bob]) {
      await page.locator("#messages li.message", { hasText: "hello from Alice" }).waitFor({ timeout: WAIT });
    }
    assert.deepEqual(await messageTexts(bob), ["hello from Alice"]);
    assert.equal(await bob.locator("#messages li.message .who").first().textContent(), "Alice:");
    assert.equal(await alice.inputValue("#text"), "", "the input is cleared after sending");

    // Markup in a message is shown, never run.
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold?</b>';
    await send(bob, evil);
    await alice.locator("#messages li.message", { hasText: "bold?" }).waitFor({ timeout: WAIT });
    assert.deepEqual(await messageTexts(alice), ["hello from Alice", evil]);
    assert.equal(await alice.locator("#messages img, #messages b").count(), 0);
    assert.equal(await alice.evaluate(() => window.__pwned), undefined);

    // Errors from the server are shown.
    await alice.fill("#name", "bad\u0007name");
    await alice.click("#name-form button");
    await alice.locator("#messages li.error", { hasText: "control characters" }).waitFor({ timeout: WAIT });

    // carol takes the name "bob" once bob is gone: alice's conversation stays with bob's
    // id, and carol reads none of it.
    await bob.close();
    await alice.locator("#messages li.notice", { hasText: "left." }).waitFor({ timeout: WAIT });
    await alice.screenshot({ path: path.join(SHOTS, "browser-chat.png"), fullPage: true });
    await alice.close();
  } finally {
    assert.equal(await stopServer(server), 0, "server exits 0 on SIGINT");
  }
});

test("the page chats over the HTTP port alone, under its Content-Security-Policy", async () => {
  const server = await startServer();
  try {
    const url = `http://${server.http}/`;
    const seen = []; // every URL either page asked for, WebSockets included
    const violations = [];
    const open = async () => {
      const page = await browser.newPage();
      page.on("request", (r) => seen.push(r.url()));
      page.on("websocket", (ws) => seen.push(ws.url()));
      await page.addInitScript(() => {
        window.__csp = [];
        document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective));
      });
      const response = await page.goto(url);
      const csp = response.headers()["content-security-policy"] || "";
      assert.match(csp, /frame-ancestors 'none'/);
      assert.match(csp, /script-src 'self'/);
      await page.locator("#status.connected").waitFor({ timeout: WAIT });
      return page;
    };
    const alice = await open();
    const bob = await open();
    await send(alice, "one port is enough");
    await bob.locator("#messages li.message", { hasText: "one port is enough" }).waitFor({ timeout: WAIT });
    for (const page of [alice, bob]) violations.push(...(await page.evaluate(() => window.__csp)));
    assert.deepEqual(violations, [], "the page itself breaks no rule of its policy");
    // The policy is in force: an injected inline script does not run, and is reported.
    const ran = await alice.evaluate(async () => {
      const s = document.createElement("script");
      s.textContent = "window.__inline = 1";
      document.body.appendChild(s);
      await new Promise((r) => setTimeout(r, 100));
      return { inline: window.__inline, reported: window.__csp.length };
    });
    assert.deepEqual(ran, { inline: undefined, reported: 1 });
    const wsPort = server.ws.split(":").pop();
    const others = seen.filter((u) => new URL(u).host !== server.http);
    assert.deepEqual(others, [], `nothing but ${server.http} was contacted (the second port is ${wsPort})`);
    assert.ok(seen.some((u) => u.startsWith(`ws://${server.http}/ws`)), `the chat socket is on the page's origin: ${seen}`);
    await alice.screenshot({ path: path.join(SHOTS, "browser-one-port.png") });
    await alice.close();
    await bob.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});

test("the page shows a lost connection and reconnects by itself", async () => {
  const first = await startServer();
  const page = await openChat(`http://${first.http}/`);
  assert.equal(await stopServer(first), 0);
  // The server said goodbye with 1001, and the page says so.
  await page.locator("#status.disconnected").waitFor({ timeout: WAIT });
  await page.locator("#messages li.notice", { hasText: "1001" }).waitFor({ timeout: WAIT });

  // Same ports again: the page's backoff brings it back without a reload.
  const second = await restartServer(first);
  try {
    await page.locator("#status.connected").waitFor({ timeout: WAIT });
    await send(page, "back again");
    await page.locator("#messages li.message", { hasText: "back again" }).waitFor({ timeout: WAIT });
    await page.screenshot({ path: path.join(SHOTS, "browser-reconnect.png") });
    await page.close();
  } finally {
    assert.equal(await stopServer(second), 0);
  }
});

test("the stats page plots live activity", async () => {
  const server = await startServer();
  try {
    const stats = await browser.newPage();
    stats.on("pageerror", (e) => { throw e; });
    await stats.goto(`http://${server.http}/stats.html`);
    await stats.locator("#status.connected").waitFor({ timeout: WAIT });

    const chat = await openChat(`http://${server.http}/`);
    for (let i = 0; i < 10; i++) await send(chat, `burst ${i}`);
    await chat.locator("#messages li.message", { hasText: "burst 9" }).waitFor({ timeout: WAIT });

    // The plots' scale shows the busiest second of the window: the burst.
    await stats.waitForFunction(
      () => parseFloat(document.getElementById("scale-messages_per_sec").textContent.replace("max ", "")) >= 5,
      null, { timeout: WAIT },
    );
    await stats.waitForFunction(
      () => document.getElementById("now-clients").textContent === "1", null, { timeout: WAIT },
    );
    // Something was drawn: the canvas is not blank.
    const painted = await stats.evaluate(() => {
      const c = document.getElementById("plot-messages_per_sec");
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
      return false;
    });
    assert.ok(painted, "the messages/s plot has pixels");
    await stats.screenshot({ path: path.join(SHOTS, "browser-stats.png"), fullPage: true });
    await stats.close();
    await chat.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});

test("after a server restart the page resumes: every missed message once, in order", async () => {
  const first = await startServer();
  const page = await openChat(`http://${first.http}/`);
  await send(page, "before restart");
  await page.locator("#messages li.message", { hasText: "before restart" }).waitFor({ timeout: WAIT });
  assert.equal(await stopServer(first), 0);
  await page.locator("#status.disconnected").waitFor({ timeout: WAIT });

  // Same ports, same data dir. Post while the page is still waiting to reconnect.
  const second = await restartServer(first, first.dataDir);
  try {
    for (let i = 1; i <= 5; i++) {
      const r = await fetch(`http://${second.http}/api/rooms/lobby/messages`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: `missed ${i}`, name: "script" }),
      });
      assert.equal(r.status, 201);
    }
    await page.locator("#status.connected").waitFor({ timeout: WAIT });
    await page.locator("#messages li.message", { hasText: "missed 5" }).waitFor({ timeout: WAIT });
    await send(page, "after restart");
    await page.locator("#messages li.message", { hasText: "after restart" }).waitFor({ timeout: WAIT });
    assert.deepEqual(await messageTexts(page), [
      "before restart", "missed 1", "missed 2", "missed 3", "missed 4", "missed 5", "after restart",
    ]);
    const seqs = await page.locator("#messages li.message").evaluateAll((lis) => lis.map((li) => Number(li.dataset.seq)));
    assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7]);
    await page.screenshot({ path: path.join(SHOTS, "browser-resume.png") });

    // Rooms: join one, talk there, and the lobby does not show it.
    await page.fill("#join-room", "dev");
    await page.press("#join-room", "Enter");
    await page.locator("#room-tabs button[data-room=dev][aria-selected=true]").waitFor({ timeout: WAIT });
    await send(page, "in dev");
    await page.locator("#messages li.message:not([hidden])", { hasText: "in dev" }).waitFor({ timeout: WAIT });
    await page.click("#room-tabs button[data-room=lobby]");
    assert.equal(await page.locator("#messages li.message:not([hidden])", { hasText: "in dev" }).count(), 0);
    await page.close();
  } finally {
    assert.equal(await stopServer(second), 0);
  }
});

test("with a token required, the page signs in and connects with one-time tickets only", async () => {
  const TOKEN = "correct-horse-battery-staple";
  const server = await startServer(undefined, undefined, null, ["--token", TOKEN]);
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => { throw e; });
    const socketUrls = [];
    page.on("websocket", (ws) => socketUrls.push(ws.url()));
    await page.goto(`http://${server.http}/`);
    await page.locator("#auth-form").waitFor({ state: "visible", timeout: WAIT });
    // A wrong token is refused and the form comes back.
    await page.fill("#auth-token", "wrong-token-wrong-token");
    await page.press("#auth-token", "Enter");
    await page.locator("#messages li.error", { hasText: "not accepted" }).waitFor({ timeout: WAIT });
    await page.locator("#auth-form").waitFor({ state: "visible", timeout: WAIT });
    await page.fill("#auth-token", TOKEN);
    await page.press("#auth-token", "Enter");
    await page.locator("#status.connected").waitFor({ timeout: WAIT });
    assert.ok(await page.locator("#auth-form").isHidden(), "the sign-in form is gone once connected");
    await send(page, "signed in");
    await page.locator("#messages li.message", { hasText: "signed in" }).waitFor({ timeout: WAIT });
    assert.ok(socketUrls.length >= 1);
    for (const url of socketUrls) {
      assert.ok(url.includes("ticket="), url);
      assert.ok(!url.includes(TOKEN), "the token must never be in a WebSocket URL: " + url);
    }
    await page.screenshot({ path: path.join(SHOTS, "browser-signed-in.png") });
    await page.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});

// The tutorials' own page (examples/tutorial), served from a port of its own as the
// tutorial's Express serves it; unchanged but for the WebSocket port when 3002 is taken here.
function serveTutorial(wsPort) {
  const dir = path.join(ROOT, "examples/tutorial");
  const types = { ".html": "text/html", ".css": "text/css", ".js": "text/javascript" };
  const server = createServer((req, res) => {
    const name = req.url === "/" ? "index.html" : req.url.slice(1);
    if (!["index.html", "style.css", "script.js"].includes(name)) {
      res.writeHead(404).end();
      return;
    }
    let body = readFileSync(path.join(dir, name), "utf8");
    if (name === "script.js") body = body.replace("ws://localhost:3002", `ws://localhost:${wsPort()}`);
    res.writeHead(200, { "Content-Type": types[path.extname(name)] }).end(body);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

function portFree(port) {
  return new Promise((resolve) => {
    const probe = createNetServer().once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

test("the tutorial's unchanged plain-text page chats with the threadchat page through the lobby", async () => {
  let wsPort = 3002;
  const pages = await serveTutorial(() => wsPort);
  const origin = `http://localhost:${pages.address().port}`;
  // The page comes from another origin than threadchat's, as in the tutorial: allow it.
  const server = await startServer(undefined, `127.0.0.1:${(await portFree(3002)) ? 3002 : 0}`, null,
    ["--allow-origin", origin]);
  wsPort = Number(server.ws.split(":").pop());
  try {
    const tutorial = await browser.newPage();
    tutorial.on("pageerror", (e) => { throw e; });
    await tutorial.goto(`${origin}/`);
    // Its socket is the script's top-level `ws`.
    await tutorial.waitForFunction(() => ws.readyState === WebSocket.OPEN, null, { timeout: WAIT });
    const chat = await openChat(`http://${server.http}/`);

    // Plain text from the tutorial page: a chat message in the threadchat page, and the
    // bare text back in the tutorial page (the tutorial's broadcast reaches its sender).
    await tutorial.fill("#input", "hello from the tutorial");
    await tutorial.press("#input", "Enter");
    await chat.locator("#messages li.message", { hasText: "hello from the tutorial" }).waitFor({ timeout: WAIT });
    await tutorial.locator("#messages li", { hasText: "hello from the tutorial" }).waitFor({ timeout: WAIT });

    await send(chat, "hello from threadchat");
    await tutorial.locator("#messages li", { hasText: "hello from threadchat" }).waitFor({ timeout: WAIT });
    // The tutorial page shows each message's bare text: no JSON, no notices, no presence.
    assert.deepEqual(await tutorial.locator("#messages li").allTextContents(),
      ["hello from the tutorial", "hello from threadchat"]);
    await tutorial.screenshot({ path: path.join(SHOTS, "browser-tutorial.png") });
    await tutorial.close();
    await chat.close();
  } finally {
    pages.close();
    assert.equal(await stopServer(server), 0);
  }
});

test("the member list, typing and history paging", async () => {
  // Posting the history fast from one address needs the per-address rate lifted.
  const server = await startServer(undefined, undefined, null, ["--message-rate", "1000"]);
  try {
    // 120 messages before anyone opens the page (over HTTP, as a script would post them).
    for (let i = 1; i <= 120; i++) {
      const resp = await fetch(`http://${server.http}/api/rooms/lobby/messages`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: `old ${i}`, name: "archivist" }),
      });
      assert.equal(resp.status, 201);
    }
    const url = `http://${server.http}/`;
    const alice = await openChat(url);
    // Entering shows the last 50, in order, from one request.
    await alice.locator("#messages li.message", { hasText: "old 120" }).waitFor({ timeout: WAIT });
    let texts = await messageTexts(alice);
    assert.equal(texts.length, 50);
    assert.equal(texts[0], "old 71");
    // Scrolling to the top fetches the page before, until the start.
    for (const first of ["old 21", "old 1"]) {
      await alice.evaluate(() => { document.querySelector("main").scrollTop = 0; });
      await alice.waitForFunction((want) =>
        document.querySelector("#messages li.message .text")?.textContent === want, first, { timeout: WAIT });
    }
    texts = await messageTexts(alice);
    assert.deepEqual(texts, Array.from({ length: 120 }, (_, i) => `old ${i + 1}`), "every message once, in order");

    // Who is online: both pages list both names, with the count.
    const bob = await openChat(url);
    await alice.fill("#name", "Alice");
    await alice.click("#name-form button");
    for (const page of [alice, bob]) {
      await page.locator("#member-list li", { hasText: "Alice" }).waitFor({ timeout: WAIT });
      await page.waitForFunction(() => document.querySelector("#member-count").textContent === "2", null, { timeout: WAIT });
    }
    // Typing shows in the other page and clears by itself.
    await alice.fill("#text", "I am typ");
    await bob.locator("#typing", { hasText: "Alice is typing…" }).waitFor({ timeout: WAIT });
    assert.equal(await alice.locator("#typing").textContent(), "", "not shown to the typist");
    await bob.waitForFunction(() => document.querySelector("#typing").textContent === "", null, { timeout: WAIT });
    // A phone-width screen still shows who is online.
    await bob.setViewportSize({ width: 375, height: 667 });
    assert.ok(await bob.locator("#members").isVisible());
    await bob.screenshot({ path: path.join(SHOTS, "browser-phone.png") });
    // Leaving updates the list.
    await bob.close();
    await alice.waitForFunction(() => document.querySelector("#member-count").textContent === "1", null, { timeout: WAIT });
    await alice.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});

test("a direct message reaches only its two parties, each in a conversation tab", async () => {
  const server = await startServer();
  try {
    const url = `http://${server.http}/`;
    const [alice, bob, carol] = [await openChat(url), await openChat(url), await openChat(url)];
    for (const [page, name] of [[alice, "alice"], [bob, "bob"], [carol, "carol"]]) {
      await page.fill("#name", name);
      await page.click("#name-form button");
      await page.locator("#messages li.notice", { hasText: `is now ${name}` }).first().waitFor({ timeout: WAIT });
    }
    // alice clicks bob's name in the member list: a conversation tab opens.
    await alice.locator("#member-list li", { hasText: "bob" }).click();
    await alice.locator('#room-tabs button[aria-selected="true"]', { hasText: "@bob" }).waitFor({ timeout: WAIT });
    await send(alice, "just between us");
    await alice.locator('#messages li.message[data-room^="@guest~"]', { hasText: "just between us" }).waitFor({ timeout: WAIT });
    // bob gets a tab "@alice" with an unread mark, and the message in it.
    await bob.locator("#room-tabs button", { hasText: "@alice" }).locator(".unread").waitFor({ timeout: WAIT });
    await bob.click("#room-tabs button:has-text('@alice')");
    await bob.locator('#messages li.message:not([hidden])', { hasText: "just between us" }).waitFor({ timeout: WAIT });
    // He answers from his tab; carol, meanwhile, saw nothing of it.
    await send(bob, "agreed");
    await alice.locator('#messages li.message[data-room^="@guest~"]', { hasText: "agreed" }).waitFor({ timeout: WAIT });
    await send(carol, "anyone here?");
    // (alice is in her @bob tab: the lobby line arrives hidden.)
    await alice.locator("#messages li.message", { hasText: "anyone here?" }).waitFor({ state: "attached", timeout: WAIT });
    assert.equal(await carol.locator("#room-tabs button", { hasText: "@" }).count(), 0);
    assert.equal(await carol.locator("#messages li.message", { hasText: /just between us|agreed/ }).count(), 0);
    await bob.screenshot({ path: path.join(SHOTS, "browser-dm.png") });
    const bobUser = await bob.evaluate(() => myUser);
    // A reload is the same guest: same user, same name, the conversation replayed. The
    // credential rides in the cookie, never in a WebSocket URL (logs keep URLs).
    const wsUrls = [];
    bob.on("websocket", (ws) => wsUrls.push(ws.url()));
    await bob.reload();
    await bob.locator("#status.connected").waitFor({ timeout: WAIT });
    await bob.locator("#messages li.notice", { hasText: "is now bob" }).first().waitFor({ timeout: WAIT });
    assert.equal(await bob.evaluate(() => myUser), bobUser, "the same user after a reload");
    assert.ok(wsUrls.length > 0 && wsUrls.every((u) => !u.includes("identity=")), wsUrls.join(" "));
    await bob.click("#room-tabs button:has-text('@alice')");
    await bob.locator('#messages li.message:not([hidden])', { hasText: "just between us" }).waitFor({ timeout: WAIT });
    await bob.locator('#messages li.message:not([hidden])', { hasText: "agreed" }).waitFor({ timeout: WAIT });
    // carol takes the name "bob" once bob is gone: alice's conversation stays with bob's
    // id, and carol reads none of it.
    await bob.close();
    await alice.locator("#messages li.notice", { hasText: "bob left." }).last().waitFor({ state: "attached", timeout: WAIT });
    await carol.fill("#name", "bob");
    await carol.click("#name-form button");
    await carol.locator("#messages li.notice", { hasText: "is now bob" }).first().waitFor({ timeout: WAIT });
    await send(alice, "are you still there?");
    // Refused (bob, a guest, is not connected), never delivered to the name's new holder.
    await alice.locator("#messages li.error", { hasText: "no user" }).waitFor({ timeout: WAIT });
    assert.equal(await carol.locator("#messages li.message", { hasText: /just between us|agreed|still there/ }).count(), 0);
    for (const page of [alice, carol]) await page.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});

// An HS256 JWT, as any JWT library makes one.
function makeJwt(secret, claims) {
  const b64 = (s) => Buffer.from(s).toString("base64url");
  const signed = `${b64(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64(JSON.stringify(claims))}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

// A new page on `server` signed in with `token` (the sign-in form, as a person uses it).
async function signedInPage(server, token) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => { throw e; });
  await page.goto(`http://${server.http}/`);
  await page.locator("#auth-form").waitFor({ state: "visible", timeout: WAIT });
  await page.fill("#auth-token", token);
  await page.press("#auth-token", "Enter");
  await page.locator("#status.connected").waitFor({ timeout: WAIT });
  return page;
}

test("a private room refuses a signed-in user whose token does not name it", async () => {
  const SECRET = "a-jwt-secret-of-at-least-32-bytes!!";
  const server = await startServer(undefined, undefined, null, ["--jwt-secret", SECRET, "--private-room", "team-*"]);
  const exp = Math.floor(Date.now() / 1000) + 600;
  const signIn = (claims) => signedInPage(server, makeJwt(SECRET, claims));
  const join = async (page, room) => {
    await page.fill("#join-room", room);
    await page.press("#join-room", "Enter");
  };
  try {
    const insider = await signIn({ sub: "u-ines", name: "ines", exp, rooms: ["team-*"] });
    const outsider = await signIn({ sub: "u-otto", name: "otto", exp });
    await join(insider, "team-red");
    await insider.locator("#member-list li", { hasText: "ines" }).waitFor({ timeout: WAIT });
    await send(insider, "team only");
    await insider.locator("#messages li.message", { hasText: "team only" }).waitFor({ timeout: WAIT });
    // otto's join is refused with the one error, and he learns nothing of the room.
    await join(outsider, "team-red");
    await outsider.locator("#messages li.error", { hasText: "that room is not open to you" }).waitFor({ timeout: WAIT });
    assert.equal(await outsider.locator("#messages li", { hasText: /team only|ines/ }).count(), 0);
    assert.equal(await outsider.locator("#member-list li", { hasText: "ines" }).count(), 0);
    await insider.close();
    await outsider.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});

test("when its JWT expires the page is closed, signs in again and misses nothing", async () => {
  const SECRET = "a-jwt-secret-of-at-least-32-bytes!!";
  const server = await startServer(undefined, undefined, null, ["--jwt-secret", SECRET]);
  const now = Math.floor(Date.now() / 1000);
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => { throw e; });
    await page.goto(`http://${server.http}/`);
    await page.locator("#auth-form").waitFor({ state: "visible", timeout: WAIT });
    // `exp` 57 s ago: inside the 60 s leeway, so about 3 s left.
    await page.fill("#auth-token", makeJwt(SECRET, { sub: "u-ada", name: "ada", exp: now - 57 }));
    await page.press("#auth-token", "Enter");
    await page.locator("#status.connected").waitFor({ timeout: WAIT });
    await send(page, "before expiry");
    await page.locator("#messages li.message", { hasText: "before expiry" }).waitFor({ timeout: WAIT });
    // The server closes the socket at expiry (4001); the token no longer buys a ticket, so
    // the page asks to sign in again.
    await page.locator("#messages li.notice", { hasText: "sign-in expired" }).waitFor({ timeout: WAIT });
    await page.locator("#auth-form").waitFor({ state: "visible", timeout: WAIT });
    // Meanwhile someone else talks.
    const resp = await fetch(`http://${server.http}/api/rooms/lobby/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${makeJwt(SECRET, { sub: "u-bo", name: "bo", exp: now + 600 })}` },
      body: JSON.stringify({ text: "while you were away" }),
    });
    assert.equal(resp.status, 201);
    await page.fill("#auth-token", makeJwt(SECRET, { sub: "u-ada", name: "ada", exp: now + 600 }));
    await page.press("#auth-token", "Enter");
    await page.locator("#status.connected").waitFor({ timeout: WAIT });
    await page.locator("#messages li.message", { hasText: "while you were away" }).waitFor({ timeout: WAIT });
    assert.deepEqual(await messageTexts(page), ["before expiry", "while you were away"], "each message once, in order");
    await page.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});

test("a moderator deletes a message and a member's page shows it deleted; a member deletes its own", async () => {
  const SECRET = "a-jwt-secret-of-at-least-32-bytes!!";
  const server = await startServer(undefined, undefined, null, ["--jwt-secret", SECRET]);
  const exp = Math.floor(Date.now() / 1000) + 600;
  const signIn = (claims) => signedInPage(server, makeJwt(SECRET, { exp, ...claims }));
  try {
    const mod = await signIn({ sub: "u-mo", name: "mo", roles: ["mod"], mod_rooms: ["lobby"] });
    const member = await signIn({ sub: "u-me", name: "me" });
    await send(member, "something regrettable");
    await send(member, "my own typo");
    const line = (page, text) => page.locator("#messages li.message", { hasText: text });
    await line(mod, "my own typo").waitFor({ timeout: WAIT });
    // The member has a delete button on its own lines only; the moderator on every line.
    await send(mod, "from the moderator");
    await line(member, "from the moderator").waitFor({ timeout: WAIT });
    assert.equal(await line(member, "from the moderator").locator("button.delete").count(), 0);
    assert.equal(await line(mod, "something regrettable").locator("button.delete").count(), 1);
    // The moderator deletes; the member's page replaces the text.
    await line(mod, "something regrettable").locator("button.delete").click();
    await member.locator("#messages li.message.deleted .text", { hasText: "message deleted" }).first().waitFor({ timeout: WAIT });
    assert.equal(await line(member, "something regrettable").count(), 0, "the text is gone from the member's page");
    // The member deletes its own; the moderator's page follows.
    await line(member, "my own typo").locator("button.delete").click();
    await mod.locator("#messages li.message.deleted").nth(1).waitFor({ timeout: WAIT });
    assert.equal(await line(mod, "my own typo").count(), 0);
    // A reload shows the tombstones from the history, never the text.
    await member.reload();
    await member.locator("#status.connected").waitFor({ timeout: WAIT });
    await line(member, "from the moderator").waitFor({ timeout: WAIT });
    assert.equal(await line(member, "regrettable").count(), 0);
    assert.equal(await member.locator("#messages li.message.deleted").count(), 2);
    // The moderator sees kick and mute on the member (not ban: that is an admin's). The
    // reload's leave and join reach the moderator at the room's notice ticks (netted away
    // if both fell in one): wait for the member to be listed.
    const entry = mod.locator("#member-list li", { hasText: "me" });
    await entry.locator("button.kick").waitFor({ timeout: WAIT });
    assert.equal(await entry.locator("button.kick").count(), 1);
    assert.equal(await entry.locator("button.ban").count(), 0);
    await mod.screenshot({ path: path.join(SHOTS, "browser-moderation.png") });
    await mod.close();
    await member.close();
  } finally {
    assert.equal(await stopServer(server), 0);
  }
});
