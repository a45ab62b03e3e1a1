// Drives the dashboard in headless Chromium for tests/dashboard.rs, one phase
// per run: `node dashboard.mjs <phase>`. Settings come from the environment
// (BASE, CHROMIUM, SHOTS, TOKEN, APP, RECEIVER_URL, WEBHOOK). Prints one JSON
// line with what the page showed; exits 1 with the reason on failure.
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`missing ${name}`);
  return v;
};
const TIMEOUT = 15000;

async function signIn(page, token, app) {
  await page.goto(env("BASE") + "/dashboard/");
  await page.fill("#signin-token", token);
  if (app) await page.fill("#signin-app", app);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#nav:not([hidden])");
}

async function shot(page, name) {
  await page.screenshot({ path: `${env("SHOTS")}/${name}.png`, fullPage: true });
}

const phases = {
  // Admin: empty state, a validation error next to its field, create, the
  // secret in its copy box, "Send a test".
  async admin(page) {
    await signIn(page, env("TOKEN"), env("APP"));
    const empty = await page.textContent("#webhooks-empty:not([hidden])");
    await shot(page, "01-admin-empty");
    await page.click("#create-open");
    await page.fill("#wh-url", "not a url");
    await page.check("#event-groups input[value='item.created']");
    await page.click("#form-submit");
    const urlError = await (await page.waitForSelector("#err-url:not(:empty)")).textContent();
    const urlInvalid = await page.getAttribute("#wh-url", "aria-invalid");
    await shot(page, "02-admin-validation");
    await page.fill("#wh-url", env("RECEIVER_URL"));
    await page.fill("#wh-name", "Ledger sync");
    await page.check("#event-groups input[value='payment.transaction.updated']");
    await page.check("#wh-ordered");
    await page.fill("#wh-rate", "100");
    await page.selectOption("#wh-rate-per", "1m");
    // A filter: a bad one is named next to its field when tried, a good
    // one tried on an example event that matches and on one that does not.
    await page.click("#filter-try summary");
    await page.fill("#wh-filter", "content.status ==");
    await page.click("#filter-try-run");
    const filterError = await (await page.waitForSelector("#err-filter:not(:empty)")).textContent();
    await page.fill("#wh-filter", env("FILTER"));
    const example = (status) => JSON.stringify({ type: "payment.transaction.updated", content: { status } });
    await page.fill("#wh-filter-event", example("ACSC"));
    await page.click("#filter-try-run");
    const tryMatch = await (await page.waitForSelector("#filter-try-result:has-text('atch')")).textContent();
    await page.fill("#wh-filter-event", example("PDNG"));
    await page.click("#filter-try-run");
    const tryNoMatch = await (await page.waitForSelector("#filter-try-result:has-text('No match')")).textContent();
    await page.fill("#wh-headers", "X-Api-Key: k-123");
    await shot(page, "02b-admin-filter-tried");
    await page.click("#form-submit");
    await page.waitForSelector("#secret-box:not([hidden])");
    const secret = await page.inputValue("#secret-value");
    await shot(page, "03-admin-secret");
    const row = page.locator("#webhooks-rows tr", { hasText: "Ledger sync" });
    await row.getByRole("button", { name: "Send a test" }).click();
    const result = await (await page.waitForSelector("#webhooks-rows .result.ok, #webhooks-rows .result.bad")).textContent();
    await shot(page, "04-admin-test-sent");
    const groups = await page.$$eval("#event-groups h4", (hs) => hs.map((h) => h.textContent));
    return { empty, urlError, urlInvalid, secret, result, groups, rows: await row.count(), filterError, tryMatch, tryNoMatch };
  },

  // Admin again, with 10 webhooks: the limit is visible before trying.
  async limit(page) {
    await signIn(page, env("TOKEN"), env("APP"));
    const notice = await (await page.waitForSelector("#limit-reached:not([hidden])")).textContent();
    const counter = await page.textContent("#limit");
    const createDisabled = await page.isDisabled("#create-open");
    await shot(page, "05-admin-limit");
    // Rotate: the new secret, with the 24 h overlap spelled out.
    page.on("dialog", (d) => d.accept());
    const row = page.locator("#webhooks-rows tr", { hasText: "Ledger sync" });
    await row.getByRole("button", { name: "Rotate secret" }).click();
    await page.waitForSelector("#secret-warning:not([hidden])");
    const rotated = await page.inputValue("#secret-value");
    const warning = await page.textContent("#secret-warning");
    // Signing out leaves nothing of the session on the page.
    await page.click("#sign-out");
    await page.waitForSelector("#view-signin:not([hidden])");
    const secretAfterSignOut = await page.inputValue("#secret-value");
    const stored = await page.evaluate(() => sessionStorage.getItem("wf.token"));
    return { notice, counter, createDisabled, rotated, warning, secretAfterSignOut, stored };
  },

  // Member, at phone width: the list, and no button that writes.
  async member(page) {
    await page.setViewportSize({ width: 390, height: 844 });
    await signIn(page, env("TOKEN"), env("APP"));
    await page.waitForSelector("#webhooks-rows tr");
    const rows = await page.locator("#webhooks-rows tr").count();
    // "History" only reads.
    const rowButtons = await page.$$eval("#webhooks-rows button", (bs) => bs.filter((b) => b.textContent !== "History").length);
    const createVisible = await page.isVisible("#create-open");
    await shot(page, "06-member-phone");
    return { rows, rowButtons, createVisible };
  },

  // Operator: the dead letter of a failing receiver, its detail, replay.
  async operator(page) {
    page.on("dialog", (d) => d.accept());
    await signIn(page, env("TOKEN"), null);
    await page.fill("#f-webhook", env("WEBHOOK"));
    await page.click("#dead-filters button[type=submit]");
    const row = page.locator("#dead-rows tr", { hasText: env("WEBHOOK") });
    await row.first().waitFor({ timeout: TIMEOUT });
    const rows = await page.locator("#dead-rows tr").count();
    await shot(page, "07-operator-dead-letters");
    await row.first().getByRole("button", { name: "Open" }).click();
    await page.waitForSelector("#dead-detail:not([hidden])");
    const body = await page.textContent("#dl-body");
    const attempts = await page.locator("#dl-history tr").count();
    await shot(page, "08-operator-detail");
    await page.click("#dl-replay");
    const status = await (await page.waitForSelector("#status:has-text('Replayed')")).textContent();
    return { rows, body, attempts, status };
  },
};

// Admin: a webhook its receiver disabled shows why; "Re-enable and replay"
// names the count, and after confirming the missed events go out.
phases.catchup = async function catchup(page) {
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });
  await signIn(page, env("TOKEN"), env("APP"));
  const row = page.locator("#webhooks-rows tr", { hasText: "Catch-up" });
  await row.waitFor({ timeout: TIMEOUT });
  const state = await row.locator("td.state").textContent();
  const button = row.locator("button.catch-up");
  await page.waitForFunction(() => document.querySelector("#webhooks-rows button.catch-up")?.dataset.count !== undefined, null, { timeout: TIMEOUT });
  const label = await button.textContent();
  await shot(page, "09-admin-disabled-webhook");
  await button.click();
  const status = await (await page.waitForSelector("#status:has-text('replayed')", { timeout: 30000 })).textContent();
  const after = await page.locator("#webhooks-rows tr", { hasText: "Catch-up" }).locator("td.state").textContent();
  await shot(page, "10-admin-caught-up");
  return { state, label, dialogs, status, after };
};

// Admin: a webhook whose client certificate expires within 30 days is
// flagged in the list and on its page; one with a later expiry is not.
phases.certificates = async function certificates(page) {
  await signIn(page, env("TOKEN"), env("APP"));
  const row = (name) => page.locator("#webhooks-rows tr", { hasText: name });
  await row("Soon").waitFor({ timeout: TIMEOUT });
  const soon = await row("Soon").locator("td.state").textContent();
  const later = await row("Later").locator("td.state").textContent();
  const title = await row("Soon").locator(".flag.warn").getAttribute("title");
  await shot(page, "12-admin-certificate-expiring");
  await row("Soon").getByRole("button", { name: "History" }).click();
  await page.waitForSelector("#hook-health dd");
  const facts = await page.$$eval("#hook-health dd", (dd) => dd.map((d) => d.textContent));
  return { soon, later, title, facts };
};

// Admin: a failing receiver's webhook page shows the chart and its attempts;
// the event-id search finds one event's attempts.
phases.history = async function history(page) {
  await signIn(page, env("TOKEN"), env("APP"));
  const row = page.locator("#webhooks-rows tr", { hasText: "Flaky" });
  await row.waitFor({ timeout: TIMEOUT });
  await page.waitForSelector("#webhooks-rows tr .health.bad", { timeout: TIMEOUT });
  const badge = await row.locator(".health").textContent();
  await row.getByRole("button", { name: "History" }).click();
  await page.waitForSelector("#hook-chart svg rect.bad", { timeout: TIMEOUT });
  await page.waitForSelector("#attempt-rows tr");
  const bars = await page.locator("#hook-chart svg rect.bad").count();
  await page.click("#range-7d");
  await page.waitForSelector("#chart-title:has-text('7 days')");
  const week = await page.locator("#hook-chart svg rect.bad").count();
  await page.click("#range-1h");
  await page.waitForSelector("#chart-title:has-text('hour')");
  const hour = await page.locator("#hook-chart svg rect.bad").count();
  const attempts = await page.locator("#attempt-rows tr").count();
  const facts = await page.$$eval("#hook-health dd", (dd) => dd.map((d) => d.textContent));
  await page.locator("#attempt-rows tr details summary").first().click();
  const expanded = await page.locator("#attempt-rows tr details[open] dd").first().textContent();
  await shot(page, "11-admin-webhook-history");
  await page.fill("#a-event", env("EVENT"));
  await page.click("#attempt-filters button[type=submit]");
  await page.waitForFunction((id) => {
    const rows = [...document.querySelectorAll("#attempt-rows tr")];
    return rows.length > 0 && rows.every((r) => r.dataset.event === id);
  }, env("EVENT"), { timeout: TIMEOUT });
  const found = await page.$$eval("#attempt-rows tr", (rows) => rows.map((r) => r.dataset.event));
  await shot(page, "12-admin-event-search");
  return { badge, bars, week, hour, attempts, facts, expanded, found };
};

const phase = process.argv[2];
if (!phases[phase]) {
  console.error(`unknown phase ${phase}; one of ${Object.keys(phases).join(", ")}`);
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--no-first-run", "--disable-extensions"],
});
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  // Uncaught script errors, and anything the Content-Security-Policy blocked.
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.text().includes("Content Security Policy")) errors.push(m.text()); });
  const out = await phases[phase](page);
  out.pageErrors = errors;
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(`phase ${phase} failed: ${e.stack || e}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
