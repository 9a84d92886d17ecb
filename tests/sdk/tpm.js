// DPS TPM attestation with Microsoft's Node clients against the emulator. `node tpm.js <flow>`; each flow prints
// {step: outcome} (report.js):
//   enroll    azure-iot-provisioning-service creates the TPM individual enrollment DPS_REGISTRATION_ID (device
//             id DPS_DEVICE_ID) from DPS_TPM_ENDORSEMENT_KEY [+ DPS_TPM_STORAGE_ROOT_KEY] (base64 TPM2B_PUBLIC),
//             reads it back and reads its attestation mechanism
//   register  azure-iot-security-tpm's TpmSecurityClient on the swtpm at SWTPM_HOST:SWTPM_PORT (tpm_device.js)
//             registers DPS_REGISTRATION_ID with azure-iot-provisioning-device over azure-iot-provisioning-device-http,
//             then signs HUB_SIGN_DATA with the key DPS left in the TPM (0x81000100). `wire` is what went over
//             HTTP: method, path, whether an Authorization header was sent, the request body, the status and the
//             answer (base64 blobs shortened to their decoded length).
'use strict';

const { runSteps, requireEnv } = require('./report');

function enrollFlow() {
  const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
  const [connectionString, registrationId, deviceId, endorsementKey] = requireEnv(
    'DPS_CONNECTION_STRING',
    'DPS_REGISTRATION_ID',
    'DPS_DEVICE_ID',
    'DPS_TPM_ENDORSEMENT_KEY'
  );
  const client = ProvisioningServiceClient.fromConnectionString(connectionString);
  const tpm = { endorsementKey };
  if (process.env.DPS_TPM_STORAGE_ROOT_KEY) tpm.storageRootKey = process.env.DPS_TPM_STORAGE_ROOT_KEY;
  const enrollment = {
    registrationId,
    deviceId,
    attestation: { type: 'tpm', tpm },
    provisioningStatus: 'enabled',
    initialTwin: { tags: { site: 'sdk-tpm-lab' } },
  };
  return [
    ['create', () => client.createOrUpdateIndividualEnrollment(enrollment).then((r) => r.responseBody)],
    ['get', () => client.getIndividualEnrollment(registrationId).then((r) => r.responseBody)],
    ['attestation', () => client.getIndividualEnrollmentAttestationMechanism(registrationId).then((r) => r.responseBody)],
  ];
}

// Long base64 strings (keys, activation blobs) as "<base64: N bytes>", so that the wire log stays readable.
function shorten(value) {
  if (typeof value === 'string' && value.length > 64 && /^[A-Za-z0-9+/]+=*$/.test(value)) {
    return `<base64: ${Buffer.from(value, 'base64').length} bytes>`;
  }
  if (Array.isArray(value)) return value.map(shorten);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, shorten(item)]));
  }
  return value;
}

// Record every call the HTTP transport makes through its RestApiClient (created lazily per transport).
function recordWire(transport, wire) {
  const ensure = transport._ensureRestApiClient.bind(transport);
  transport._ensureRestApiClient = (request) => {
    ensure(request);
    const api = transport._restApiClient;
    if (api._wireRecorded) return;
    api._wireRecorded = true;
    const execute = api.executeApiCall.bind(api);
    api.executeApiCall = (method, path, headers, body, ...rest) => {
      const done = rest.pop();
      const entry = { method, path, authorization: Boolean(headers && headers.Authorization), body: shorten(body) };
      wire.push(entry);
      execute(method, path, headers, body, ...rest, (err, result, response) => {
        entry.status = (response || (err && err.response) || {}).statusCode;
        let answer = err ? err.responseBody : result;
        if (typeof answer === 'string') {
          try {
            answer = JSON.parse(answer);
          } catch (parseError) {
            // not JSON: keep the text
          }
        }
        entry.answer = shorten(answer === undefined ? null : answer);
        done(err, result, response);
      });
    };
  };
}

function call(method, ...args) {
  return new Promise((resolve, reject) => method(...args, (err, value) => (err ? reject(err) : resolve(value))));
}

function registerFlow() {
  const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
  const { Http } = require('azure-iot-provisioning-device-http');
  const { TpmSecurityClient } = require('azure-iot-security-tpm');
  const { swtpm } = require('./tpm_device');
  const [host, idScope, registrationId, tpmHost, tpmPort] = requireEnv(
    'DPS_PROVISIONING_HOST',
    'DPS_ID_SCOPE',
    'DPS_REGISTRATION_ID',
    'SWTPM_HOST',
    'SWTPM_PORT'
  );
  const tpm = swtpm(tpmHost, Number(tpmPort));
  const security = new TpmSecurityClient(registrationId, tpm);
  const transport = new Http();
  const wire = [];
  recordWire(transport, wire);
  const client = ProvisioningDeviceClient.create(host, idScope, transport, security);
  const hubSignData = process.env.HUB_SIGN_DATA || 'sdk-tpm-judge\n0';
  const steps = [
    ['endorsementKey', () => call(security.getEndorsementKey.bind(security)).then((key) => key.toString('base64'))],
    ['storageRootKey', () => call(security.getStorageRootKey.bind(security)).then((key) => key.toString('base64'))],
    ['register', () => client.register()],
    ['wire', () => wire],
    [
      'hubSignature',
      (done) => {
        if (!done.register || done.register.error) return null;
        return call(security.signWithIdentity.bind(security), Buffer.from(hubSignData)).then((sig) =>
          Buffer.from(sig).toString('base64')
        );
      },
    ],
  ];
  return { steps, close: () => tpm.close() };
}

const flows = { enroll: () => ({ steps: enrollFlow(), close: () => {} }), register: registerFlow };
const flow = flows[process.argv[2]];
if (!flow) {
  process.stderr.write(`usage: node tpm.js ${Object.keys(flows).join('|')}\n`);
  process.exit(2);
}
const { steps, close } = flow();
runSteps(steps).then(close);
