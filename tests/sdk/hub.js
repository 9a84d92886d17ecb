// Microsoft's Node IoT Hub service SDK (azure-iothub's Registry) against the emulator's IoT Hub service API, from an
// ordinary hub connection string (IOTHUB_CONNECTION_STRING, HostName = the hub's name: run with `node -r
// ./resolve.js` so that the name reaches the emulator). Prints {step: outcome} (report.js): device identities
// (create, get, disable, list, delete, a missing device), twins (tags with etags, a stale etag), device queries paged
// by the SDK's Query, and configurations (add, get, list, a priority change with etags, content that cannot change,
// remove) with the twins' `configurations` map while one targets them.
'use strict';

const { Registry } = require('azure-iothub');
const { runSteps, requireEnv } = require('./report');

const [connectionString] = requireEnv('IOTHUB_CONNECTION_STRING');
const registry = Registry.fromConnectionString(connectionString);

const CANARY = 'sdk-hub-canary';
const EDGE = 'sdk-hub-edge';
const MISSING = 'sdk-hub-missing';
const CONFIG = 'sdk-hub-config';

const body = (result) => JSON.parse(JSON.stringify(result.responseBody));
const twinOf = (deviceId) => registry.getTwin(deviceId).then((result) => result.responseBody.toJSON());

// Every page of a device query, as the SDK's samples walk it: nextAsTwin() until hasMoreResults is false (the
// Query keeps the x-ms-continuation token of the last answer).
async function allPages(sql, pageSize) {
  const query = registry.createQuery(sql, pageSize);
  const pages = [];
  while (query.hasMoreResults) {
    const { result } = await query.nextAsTwin();
    pages.push(result.map((twin) => twin.deviceId).sort());
    if (pages.length > 20) throw new Error('more than 20 pages: the continuation token does not advance');
  }
  return pages;
}

function configuration() {
  return {
    id: CONFIG,
    content: { deviceContent: { 'properties.desired.sdkJudge': { interval: 30 } } },
    targetCondition: "tags.ring = 'canary'",
    priority: 10,
    labels: { owner: 'sdk-judge' },
    metrics: {
      queries: { reporting: 'SELECT deviceId FROM devices WHERE properties.reported.sdkJudge.interval = 30' },
    },
  };
}

const steps = [
  // device identities
  ['device.create', () => registry.create({ deviceId: CANARY }).then(body)],
  ['device.createAgain', () => registry.create({ deviceId: CANARY }).then(() => 'created')],
  ['device.createEdge', () => registry.create({ deviceId: EDGE, capabilities: { iotEdge: true } }).then(body)],
  ['device.get', () => registry.get(CANARY).then(body)],
  [
    'device.disable',
    (out) => registry.update({ ...out['device.get'], status: 'disabled', statusReason: 'sdk judge' }).then(body),
  ],
  ['device.getDisabled', () => registry.get(CANARY).then(body)],
  ['device.enable', (out) => registry.update({ ...out['device.getDisabled'], status: 'enabled' }).then(body)],
  ['device.list', () => registry.list().then((result) => result.responseBody.map((device) => device.deviceId))],
  ['device.missing', () => registry.get(MISSING).then(() => 'found')],

  // twins: tags written with the twin's etag; a stale etag refused
  ['twin.get', () => twinOf(CANARY)],
  [
    'twin.update',
    (out) => registry.updateTwin(CANARY, { tags: { ring: 'canary', site: 'lab' } }, out['twin.get'].etag).then(body),
  ],
  [
    'twin.updateStale',
    (out) => registry.updateTwin(CANARY, { tags: { ring: 'stable' } }, out['twin.get'].etag).then(() => 'updated'),
  ],
  [
    'twin.removeTag',
    (out) => registry.updateTwin(CANARY, { tags: { site: null } }, out['twin.update'].etag).then(body),
  ],
  [
    'twin.updateEdge',
    async () => registry.updateTwin(EDGE, { tags: { ring: 'canary' } }, (await twinOf(EDGE)).etag).then(body),
  ],

  // device queries
  ['query.canaryPaged', () => allPages("SELECT * FROM devices WHERE tags.ring = 'canary'", 1)],
  ['query.edge', () => allPages('SELECT * FROM devices WHERE capabilities.iotEdge = true')],
  ['query.all', () => allPages('SELECT * FROM devices')],
  ['query.malformed', () => allPages("SELECT * FROM devices WHERE tags.ring = 'canary")],

  // configurations
  ['config.add', () => registry.addConfiguration(configuration()).then(body)],
  ['config.addAgain', () => registry.addConfiguration(configuration()).then(() => 'added')],
  ['config.get', () => registry.getConfiguration(CONFIG).then(body)],
  ['config.list', () => registry.getConfigurations().then((result) => result.responseBody.map((c) => c.id))],
  ['config.update', (out) => registry.updateConfiguration({ ...out['config.get'], priority: 20 }).then(body)],
  [
    'config.updateStale',
    (out) => registry.updateConfiguration({ ...out['config.get'], priority: 30 }).then(() => 'updated'),
  ],
  [
    'config.updateContent',
    (out) => {
      const changed = { ...out['config.update'], content: { deviceContent: { 'properties.desired.other': 1 } } };
      return registry.updateConfiguration(changed).then(() => 'updated');
    },
  ],
  ['config.getUpdated', () => registry.getConfiguration(CONFIG).then(body)],
  [
    'twin.configurations',
    async () => ({ [CANARY]: (await twinOf(CANARY)).configurations, [EDGE]: (await twinOf(EDGE)).configurations }),
  ],
  ['config.missing', () => registry.getConfiguration('sdk-hub-no-such-config').then(() => 'found')],
  ['config.remove', () => registry.removeConfiguration(CONFIG).then(() => 'removed')],
  ['config.gone', () => registry.getConfiguration(CONFIG).then(() => 'found')],
  ['twin.configurationsAfter', async () => (await twinOf(CANARY)).configurations || null],

  // deletes
  ['device.delete', () => registry.delete(CANARY).then(() => 'deleted')],
  ['device.gone', () => registry.get(CANARY).then(() => 'found')],
  ['device.deleteEdge', () => registry.delete(EDGE).then(() => 'deleted')],
];

runSteps(steps);
