// What the node scripts of tests/sdk share: run named steps against the emulator with Microsoft's SDKs and print
// one JSON object {step: outcome} on stdout, for tests/sdk/test_sdk.py to judge. A step's outcome is what it
// returned, or the error the SDK raised (its class, message, HTTP status and DPS error body), so a failing step
// shows what the SDK saw instead of a stack trace.
'use strict';

function describeError(err) {
  const response = err.response || err.transportObject;
  let body = err.responseBody !== undefined ? err.responseBody : err.result;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch (parseError) {
      // not JSON: keep the text
    }
  }
  return {
    error: err.constructor ? err.constructor.name : 'Error',
    message: err.message,
    statusCode: response && response.statusCode,
    body: body === undefined ? null : body,
  };
}

async function runSteps(steps) {
  const outcome = {};
  for (const [name, step] of steps) {
    try {
      const value = await step(outcome);
      outcome[name] = value === undefined ? null : value;
    } catch (err) {
      outcome[name] = describeError(err);
    }
  }
  process.stdout.write(JSON.stringify(outcome) + '\n');
}

function requireEnv(...names) {
  const missing = names.filter((name) => !process.env[name]);
  if (missing.length) {
    process.stderr.write(`${process.argv[1]}: set ${missing.join(', ')} (tests/sdk/test_sdk.py does)\n`);
    process.exit(2);
  }
  return names.map((name) => process.env[name]);
}

module.exports = { describeError, runSteps, requireEnv };
