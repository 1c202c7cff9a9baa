// A real browser logging in through the gateway: headless Chromium (Debian's, driven with
// playwright-core) opens URL, is sent to the provider, logs in as USER on its form, comes back
// through the gateway's callback, and the landing page is kept as a screenshot. TEST TOOL.
//
//   node browser-login.mjs URL USER CERT.pem[,CERT.pem…] SCREENSHOT.png
//
// Prints one JSON line: {"status", "url", "body", "cookies": [names of the browser's cookies]}.
// The browser trusts the given certificates (the servers' own, from the test PKI) through
// --ignore-certificate-errors-spki-list (their SPKI hashes), not by ignoring certificate
// errors altogether.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

import { chromium } from 'playwright-core';

const [url, user, certPaths, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node browser-login.mjs URL USER CERT.pem[,CERT.pem…] SCREENSHOT.png');
  process.exit(2);
}
const spki = certPaths
  .split(',')
  .map((path) => crypto
    .createHash('sha256')
    .update(new crypto.X509Certificate(fs.readFileSync(path)).publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64'))
  .join(',');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--ignore-certificate-errors-spki-list=${spki}`,
    // Every host name the test uses is loopback.
    '--host-resolver-rules=MAP localhost 127.0.0.1',
  ],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: false });
  const page = await context.newPage();
  let response = await page.goto(url, { timeout: 20000 });
  if (await page.locator('input[name="username"]').count()) {
    await page.fill('input[name="username"]', user);
    await Promise.all([
      page.waitForURL((u) => u.toString().startsWith(url), { timeout: 20000 }),
      page.locator('form').first().evaluate((form) => form.submit()),
    ]);
    response = await page.waitForResponse((r) => r.url() === url, { timeout: 5000 }).catch(() => null);
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  const cookies = (await context.cookies()).map((c) => c.name);
  console.log(JSON.stringify({
    status: response ? response.status() : null,
    url: page.url(),
    body: await page.locator('body').innerText(),
    cookies,
  }));
} finally {
  await browser.close();
}
