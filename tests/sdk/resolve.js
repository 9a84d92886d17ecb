// Preloaded (`node -r ./resolve.js hub.js`) so that Microsoft's IoT Hub SDK reaches the emulator by the hub's own
// name: SDK_RESOLVE="<host name>=<address>[,<host name>=<address>...]" answers those names with those addresses and
// leaves every other name to the system resolver. The SDK dials the connection string's HostName on port 443 and
// signs that name (sr), the emulator picks the hub from sr, and TLS verifies the name against the emulator's
// certificate, so the name has to stay the hub's: only the address is ours. /etc/hosts stays untouched.
// net.connect asks dns.lookup at connect time (its default `lookup` option), so replacing the export is enough.
'use strict';

const dns = require('dns');
const net = require('net');

const table = new Map();
for (const entry of (process.env.SDK_RESOLVE || '').split(',').filter(Boolean)) {
  const [name, address] = entry.split('=');
  if (!name || !net.isIP(address || '')) {
    process.stderr.write(`resolve.js: SDK_RESOLVE entry '${entry}' is not <host name>=<IP address>\n`);
    process.exit(2);
  }
  table.set(name.toLowerCase(), address);
}

const systemLookup = dns.lookup;

function lookup(hostname, options, callback) {
  if (typeof options === 'function') {
    callback = options;
    options = {};
  }
  const address = table.get(String(hostname).toLowerCase());
  if (address === undefined) {
    return systemLookup.call(dns, hostname, options, callback);
  }
  const family = net.isIPv6(address) ? 6 : 4;
  const all = typeof options === 'object' && options !== null && options.all;
  process.nextTick(() => (all ? callback(null, [{ address, family }]) : callback(null, address, family)));
  return {};
}

dns.lookup = lookup;
