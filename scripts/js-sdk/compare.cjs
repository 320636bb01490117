// Side by side: Clerk's JS SDK (`@clerk/backend`, authenticateRequest with acceptsToken:
// 'any') and this crate's layer (the `machine_verdicts` example), on the same tokens, the
// same keys and the same fake Backend API. Run by scripts/compare-js-sdk.sh.
//
// A case agrees when both accept it with the same type and subject, or both refuse it.
// Known differences (documented in the README, "API consumers") are listed below; any other
// disagreement fails the run.

const fs = require('fs');
const { createClerkClient } = require('@clerk/backend');

const KNOWN = {
  'api key, revoked': 'the JS SDK lets a 200 that says revoked through',
  'api key, expired flag': 'the JS SDK lets a 200 that says expired through',
  'api key, expiration past': 'the JS SDK lets a 200 whose expiration has passed through',
  'm2m, revoked': 'the JS SDK lets a 200 that says revoked through',
  'm2m jwt, other iss': 'the JS SDK does not check iss on machine JWTs',
  'oauth jwt, other iss': 'the JS SDK does not check iss on machine JWTs',
  'oauth, unknown (active: false)':
    "the JS SDK reads OAuth's {\"active\": false} as a valid token without a subject",
  'oauth jwt, m2m cat': "the JS SDK does not check an OAuth JWT's cat; the M2M and template categories are refused here",
};

async function main() {
  const fixtures = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const clerk = createClerkClient({
    secretKey: fixtures.secret_key,
    publishableKey: fixtures.publishable_key,
    apiUrl: fixtures.api_url,
    jwtKey: fixtures.jwt_key,
  });
  let unexpected = 0;
  const rows = [];
  for (const { name, token } of fixtures.cases) {
    const headers = { authorization: `Bearer ${token}` };
    let js;
    try {
      const state = await clerk.authenticateRequest(
        new Request(`${fixtures.app}/api/me`, { headers }),
        { acceptsToken: 'any', jwtKey: fixtures.jwt_key },
      );
      if (state.isAuthenticated) {
        const auth = state.toAuth();
        const subject = auth.userId ?? auth.subject ?? auth.machineId ?? auth.orgId;
        js = { ok: true, text: `${state.tokenType} ${subject}` };
      } else {
        js = { ok: false, text: `refused (${state.reason})` };
      }
    } catch (error) {
      js = { ok: false, text: `threw (${error.message.split('\n')[0]})` };
    }
    const response = await fetch(`${fixtures.app}/api/me`, { headers });
    const body = await response.json().catch(() => ({}));
    const ours = response.ok
      ? { ok: true, text: `${body.token_type} ${body.subject}` }
      : { ok: false, text: `${response.status} ${body.error}` };
    const agree = js.ok === ours.ok && (!js.ok || js.text === ours.text);
    let verdict = agree ? 'same' : KNOWN[name] ? `known: ${KNOWN[name]}` : 'DIFFERENT';
    if (!agree && !KNOWN[name]) unexpected += 1;
    if (agree && KNOWN[name]) verdict = 'same (a listed difference no longer differs)';
    rows.push([name, js.text, ours.text, verdict]);
  }
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), 8));
  const line = (r) => r.map((cell, i) => (i < 3 ? cell.padEnd(widths[i]) : cell)).join(' | ');
  console.log(line(['case', '@clerk/backend', 'clerk-sync', 'verdict']));
  for (const row of rows) console.log(line(row));
  console.log(`${rows.length} cases, ${unexpected} unexpected differences`);
  process.exit(unexpected === 0 ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
