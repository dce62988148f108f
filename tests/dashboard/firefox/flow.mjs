// The dashboard's main flow in Firefox (Debian's firefox-esr, driven over WebDriver BiDi).
// Usage: node flow.mjs URL ACCOUNT TOKEN BUCKET_DIR ARTIFACT_DIR  — prints what it saw (JSON).
import fs from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";

const [url, account, token, bucketDir, artifacts] = process.argv.slice(2);
const seen = {};
const browser = await puppeteer.launch({
  browser: "firefox", executablePath: "/usr/bin/firefox-esr", headless: true,
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const shot = (name) => page.screenshot({ path: path.join(artifacts, `firefox-${name}.png`) });
  const text = (sel) => page.$eval(sel, (e) => e.textContent);
  const until = (sel, needle) => page.waitForFunction(
    (s, n) => document.querySelector(s)?.textContent.includes(n), { timeout: 15000 }, sel, needle);

  await page.goto(url);
  await page.waitForSelector("#account");
  await page.type("#account", account);
  await page.type("#token", token);
  await page.click("#signin button[type=submit]");
  await until("main h2", "Network packet captures");
  seen.signedIn = await text("main h2");
  await shot("captures");

  await page.goto(`${url}#/buckets`);
  await page.waitForSelector("#f-destination_conf");
  await page.type("#f-destination_conf", `file://${bucketDir}`);
  await page.click("#add button[type=submit]");
  await until(".notice", "ownership-challenge-");
  const name = fs.readdirSync(bucketDir).find((f) => f.startsWith("ownership-challenge-"));
  await page.type("#v-challenge", fs.readFileSync(path.join(bucketDir, name), "utf8"));
  await page.click("#validate button[type=submit]");
  await until(".notice", "Bucket validated");
  seen.bucket = await text("#buckets tbody");
  await shot("buckets");

  await page.goto(`${url}#/new/simple`);
  await page.waitForSelector("#f-time_limit");
  await page.$eval("#f-time_limit", (e) => { e.value = ""; });
  await page.type("#f-time_limit", "301");
  await page.click("#start button[type=submit]");
  await until("#e-time_limit", "between");
  seen.inlineError = await text("#e-time_limit");
  seen.invalid = await page.$eval("#f-time_limit", (e) => e.getAttribute("aria-invalid"));
  await shot("inline-error");

  await page.$eval("#f-time_limit", (e) => { e.value = ""; });
  await page.type("#f-time_limit", "60");
  await page.click("#start button[type=submit]");
  await until("dl.facts", "success");
  seen.sample = await text("dl.facts");
  seen.url = page.url();
  await shot("sample");
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
