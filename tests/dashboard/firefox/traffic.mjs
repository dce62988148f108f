// The Traffic and Triggers pages in Firefox (Debian's firefox-esr, over WebDriver BiDi).
// Usage: node traffic.mjs URL ACCOUNT TOKEN DRAG_FROM DRAG_TO BUCKET ARTIFACT_DIR
// (DRAG_*: fractions of the chart's width) — prints what it saw (JSON).
import path from "node:path";
import puppeteer from "puppeteer-core";

const [url, account, token, dragFrom, dragTo, bucket, artifacts] = process.argv.slice(2);
const seen = { errors: [] };
const browser = await puppeteer.launch({
  browser: "firefox", executablePath: "/usr/bin/firefox-esr", headless: true,
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => seen.errors.push(String(e)));
  await page.setViewport({ width: 1280, height: 900 });
  const shot = (name) => page.screenshot({ path: path.join(artifacts, `firefox-${name}.png`) });
  const text = (sel) => page.$eval(sel, (e) => e.textContent);
  const until = (sel, needle) => page.waitForFunction(
    (s, n) => document.querySelector(s)?.textContent.includes(n), { timeout: 15000 }, sel, needle);
  const loaded = (state) => page.waitForFunction(
    (s) => document.querySelector("#traffic")?.dataset.loaded === s, { timeout: 15000 }, state);
  const choose = async (sel, value) => { await page.select(sel, value); };
  const clickGroup = (name) => page.evaluate((n) => [...document.querySelectorAll(
    "#top button.group")].find((b) => b.textContent.trim() === n).click(), name);

  await page.goto(url);
  await page.waitForSelector("#account");
  await page.type("#account", account);
  await page.type("#token", token);
  await page.click("#signin button[type=submit]");
  await until("main h2", "Network packet captures");

  // Chart and table; another group, another range: new queries, their answers shown.
  await page.goto(`${url}#/traffic`);
  await loaded("destination_port 1h");
  seen.canvases = await page.$$eval("#chart canvas", (c) => c.length);
  seen.ports = await text("#top tbody");
  await choose("#t-group", "protocol");
  await loaded("protocol 1h");
  seen.protocols = await text("#top tbody");
  await choose("#t-range", "6h");
  await loaded("protocol 6h");
  await choose("#t-range", "1h");
  await loaded("protocol 1h");
  await choose("#t-group", "destination_port");
  await loaded("destination_port 1h");

  // The flood's port and span: Capture this, a sample capture of it.
  await clickGroup("5555");
  const box = await page.$eval("#chart .u-over", (e) => {
    const r = e.getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height };
  });
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width * Number(dragFrom), y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * Number(dragTo), y, { steps: 8 });
  await page.mouse.up();
  await until("#selection", "UTC (");
  seen.selection = await text("#selection");
  await shot("traffic");
  await page.click("#capture-this button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#f-destination_port")?.value ===
    "5555", { timeout: 15000 });
  seen.timeLimit = await page.$eval("#f-time_limit", (e) => e.value);
  seen.offsetTime = await page.$eval("#f-offset_time", (e) => e.value);
  await page.click("#start button[type=submit]");
  await until("dl.facts", "success");
  seen.sample = await text("dl.facts");

  // A trigger: armed, listed, deleted.
  await page.goto(`${url}#/triggers?protocol=17`);
  await page.waitForSelector("#arm");
  await page.waitForFunction(() => document.querySelector("#f-protocol")?.value === "17",
                             { timeout: 15000 });
  await page.type("#f-destination_port", "5555");
  await page.select("#f-colo_name", "ORD");
  await page.select("#f-destination_conf", bucket);
  await page.click("#arm button[type=submit]");
  await until(".notice", "armed");
  seen.armed = await text("#triggers tbody");
  await shot("triggers");
  await page.click("#triggers [data-delete]");
  await until(".notice", "Trigger deleted");
  seen.afterDelete = await text("#triggers tbody");
  seen.url = page.url();
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
