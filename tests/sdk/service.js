// Microsoft's Node DPS service SDK (azure-iot-provisioning-service) against the emulator, from an ordinary
// connection string (DPS_CONNECTION_STRING). `node service.js <flow>`; each flow prints {step: outcome}:
//   enrollments    CRUD with etags on an X.509 enrollment group (DPS_SIGNING_CA_FILE) and an X.509 individual
//                  enrollment (DPS_CLIENT_CERT_FILE), a symmetric-key enrollment created without keys, the
//                  attestation mechanisms, paged queries, missing records, bulk operations, deletes
//   block          a disabled X.509 individual enrollment for DPS_REGISTRATION_ID (DPS_CLIENT_CERT_FILE)
//   groupKeys      the attestation mechanism (with its keys) of enrollment group DPS_GROUP_ID
//   registrations  the registration record of DPS_REGISTRATION_ID and the records of group DPS_GROUP_ID
'use strict';

const fs = require('fs');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { runSteps, requireEnv } = require('./report');

const [connectionString] = requireEnv('DPS_CONNECTION_STRING');
const client = ProvisioningServiceClient.fromConnectionString(connectionString);

// Every page of a query, walked as Microsoft's samples do: next(callback) continues from the Query's own token.
// (The promise form, next() without a token, asks for the first page again: query.js takes the token from its
// first argument unless that argument is a callback.)
function allPages(query) {
  return new Promise((resolve, reject) => {
    const pages = [];
    const onPage = (err, result) => {
      if (err) return reject(err);
      pages.push(result.map((item) => item.registrationId || item.enrollmentGroupId));
      if (!query.hasMoreResults) return resolve(pages);
      if (pages.length > 50) return reject(new Error('more than 50 pages: the continuation token does not advance'));
      query.next(onPage);
    };
    query.next(onPage);
  });
}

// runBulkEnrollmentOperation with a callback: its promise form never settles (provisioningserviceclient.js calls
// the promise's callback only `if (callback)`, the caller's callback).
function bulkOperation(mode, enrollments) {
  return new Promise((resolve, reject) => {
    client.runBulkEnrollmentOperation({ mode, enrollments }, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

function x509Group(id, pem) {
  return {
    enrollmentGroupId: id,
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: pem } } } },
    provisioningStatus: 'enabled',
    initialTwin: { tags: { site: 'sdk-lab' }, properties: { desired: { telemetryInterval: 30 } } },
  };
}

function x509Individual(id, pem, status) {
  return {
    registrationId: id,
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: pem } } } },
    provisioningStatus: status,
  };
}

function symmetricIndividual(id) {
  return { registrationId: id, attestation: { type: 'symmetricKey' } };
}

const keysOf = (record) => record.attestation.symmetricKey;

function enrollmentFlow() {
  const [caFile, certFile] = requireEnv('DPS_SIGNING_CA_FILE', 'DPS_CLIENT_CERT_FILE');
  const caPem = fs.readFileSync(caFile, 'utf8');
  const certPem = fs.readFileSync(certFile, 'utf8');
  const group = 'sdk-group';
  const device = 'sdk-x509-device';
  const sym = 'sdk-sym-device';
  const bulk = ['sdk-bulk-1', 'sdk-bulk-2', 'sdk-bulk-3'].map(symmetricIndividual);
  return [
    // the X.509 enrollment group
    ['group.create', () => client.createOrUpdateEnrollmentGroup(x509Group(group, caPem)).then((r) => r.responseBody)],
    ['group.createAgain', () => client.createOrUpdateEnrollmentGroup(x509Group(group, caPem)).then(() => 'created')],
    ['group.get', () => client.getEnrollmentGroup(group).then((r) => r.responseBody)],
    [
      'group.update',
      (done) => {
        const changed = { ...done['group.get'], initialTwin: { tags: { site: 'sdk-lab-2' } } };
        return client.createOrUpdateEnrollmentGroup(changed).then((r) => r.responseBody);
      },
    ],
    [
      'group.updateStale',
      (done) => client.createOrUpdateEnrollmentGroup(done['group.get']).then(() => 'updated with a stale etag'),
    ],
    ['group.attestation', () => client.getEnrollmentGroupAttestationMechanism(group).then((r) => r.responseBody)],
    ['group.query', () => allPages(client.createEnrollmentGroupQuery({ query: 'SELECT *' }, 1))],
    // the X.509 individual enrollment
    [
      'individual.create',
      () => client.createOrUpdateIndividualEnrollment(x509Individual(device, certPem, 'enabled')).then((r) => r.responseBody),
    ],
    ['individual.get', () => client.getIndividualEnrollment(device).then((r) => r.responseBody)],
    [
      'individual.update',
      (done) => {
        const changed = { ...done['individual.get'], provisioningStatus: 'disabled' };
        return client.createOrUpdateIndividualEnrollment(changed).then((r) => r.responseBody);
      },
    ],
    [
      'individual.attestation',
      () => client.getIndividualEnrollmentAttestationMechanism(device).then((r) => r.responseBody),
    ],
    // a symmetric-key enrollment created without keys: DPS generates them
    ['symmetric.create', () => client.createOrUpdateIndividualEnrollment(symmetricIndividual(sym)).then((r) => r.responseBody)],
    ['symmetric.get', () => client.getIndividualEnrollment(sym).then((r) => r.responseBody)],
    [
      'symmetric.attestation',
      () => client.getIndividualEnrollmentAttestationMechanism(sym).then((r) => r.responseBody),
    ],
    [
      'symmetric.keysMatch',
      (done) => JSON.stringify(keysOf(done['symmetric.create'])) === JSON.stringify(done['symmetric.attestation'].symmetricKey),
    ],
    // bulk operations (the SDK has them for individual enrollments)
    ['bulk.create', () => bulkOperation('create', bulk)],
    ['bulk.createAgain', () => bulkOperation('create', bulk.slice(0, 1))],
    ['individual.query', () => allPages(client.createIndividualEnrollmentQuery({ query: 'SELECT *' }, 2))],
    ['bulk.delete', () => bulkOperation('delete', bulk)],
    // records that do not exist
    ['missing.individual', () => client.getIndividualEnrollment('sdk-no-such-device').then(() => 'found')],
    ['missing.group', () => client.getEnrollmentGroup('sdk-no-such-group').then(() => 'found')],
    [
      'missing.attestation',
      () => client.getIndividualEnrollmentAttestationMechanism('sdk-no-such-device').then(() => 'found'),
    ],
    // deletes, with etags
    ['individual.deleteStale', (done) => client.deleteIndividualEnrollment(device, done['individual.get'].etag).then(() => 'deleted')],
    ['individual.delete', (done) => client.deleteIndividualEnrollment(done['individual.update']).then(() => 'deleted')],
    ['individual.gone', () => client.getIndividualEnrollment(device).then(() => 'found')],
    ['symmetric.delete', () => client.deleteIndividualEnrollment(sym).then(() => 'deleted')],
    ['group.delete', (done) => client.deleteEnrollmentGroup(group, done['group.update'].etag).then(() => 'deleted')],
    ['group.gone', () => client.getEnrollmentGroup(group).then(() => 'found')],
  ];
}

function blockFlow() {
  const [registrationId, certFile] = requireEnv('DPS_REGISTRATION_ID', 'DPS_CLIENT_CERT_FILE');
  const enrollment = x509Individual(registrationId, fs.readFileSync(certFile, 'utf8'), 'disabled');
  return [['block', () => client.createOrUpdateIndividualEnrollment(enrollment).then((r) => r.responseBody)]];
}

function groupKeyFlow() {
  const [groupId] = requireEnv('DPS_GROUP_ID');
  return [['attestation', () => client.getEnrollmentGroupAttestationMechanism(groupId).then((r) => r.responseBody)]];
}

function registrationFlow() {
  const [registrationId, groupId] = requireEnv('DPS_REGISTRATION_ID', 'DPS_GROUP_ID');
  return [
    ['state', () => client.getDeviceRegistrationState(registrationId).then((r) => r.responseBody)],
    [
      'groupQuery',
      () => allPages(client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: 'SELECT *' }, groupId, 1)),
    ],
    ['delete', (done) => client.deleteDeviceRegistrationState(done.state).then(() => 'deleted')],
    ['gone', () => client.getDeviceRegistrationState(registrationId).then(() => 'found')],
  ];
}

const flows = { enrollments: enrollmentFlow, block: blockFlow, groupKeys: groupKeyFlow, registrations: registrationFlow };
const flow = flows[process.argv[2]];
if (!flow) {
  process.stderr.write(`usage: node service.js ${Object.keys(flows).join('|')}\n`);
  process.exit(2);
}
runSteps(flow());
