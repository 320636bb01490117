// Writes what @clerk/shared's has() answers for every claim set × check of
// tests/fixtures/has_corpus.json into its `expected` fields (with --check: compares instead and
// fails on a difference). Run by scripts/compare-js-sdk.sh; the crate's unit test reads the
// same file, so CI compares the crate with the SDK's recorded answers without node.
//
// The options are built as @clerk/backend's signedInAuthObject builds them.

const fs = require('fs');
const { createCheckAuthorization } = require('@clerk/shared/authorization');
const { __experimental_JWTPayloadToAuthObjectProperties: parse } = require('@clerk/shared/jwtPayloadParser');

const [file, mode] = process.argv.slice(2);
const corpus = JSON.parse(fs.readFileSync(file, 'utf8'));
let differences = 0;
for (const set of corpus.claims) {
  let has = null;
  try {
    const auth = parse(set.claims);
    has = createCheckAuthorization({
      orgId: auth.orgId,
      orgRole: auth.orgRole,
      orgPermissions: auth.orgPermissions,
      userId: auth.userId,
      factorVerificationAge: auth.factorVerificationAge,
      features: set.claims.fea || '',
      plans: set.claims.pla || '',
    });
    set.claims_error = null;
  } catch (error) {
    set.claims_error = error.message;
  }
  const answers = corpus.checks.map((check) => (has ? has(check) === true : false));
  if (mode === '--check') {
    answers.forEach((answer, i) => {
      if (set.expected?.[i] !== answer) {
        differences += 1;
        console.log(`DIFFERENT: ${set.name}: ${JSON.stringify(corpus.checks[i])}: sdk ${answer}, recorded ${set.expected?.[i]}`);
      }
    });
  } else {
    set.expected = answers;
  }
}
if (mode === '--check') {
  console.log(`has() corpus: ${corpus.claims.length} claim sets × ${corpus.checks.length} checks, ${differences} differences from the recorded answers`);
  process.exit(differences === 0 ? 0 : 1);
} else {
  fs.writeFileSync(file, `${JSON.stringify(corpus, null, 1)}\n`);
  console.log(`wrote the SDK's answers into ${file}`);
}
