// One device registers with Microsoft's Node device SDK over HTTPS:
//   DPS_PROVISIONING_HOST, DPS_ID_SCOPE, DPS_REGISTRATION_ID and either
//   DPS_CERT_FILE + DPS_KEY_FILE (X.509: the PEM holds the leaf then its intermediates) or
//   DPS_GROUP_KEY (symmetric key: the device key is derived from the enrollment group's key, as Microsoft's
//   samples do).
// Prints {"register": <registrationState or the error>}.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { X509Security } = require('azure-iot-security-x509');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { runSteps, requireEnv } = require('./report');

const [host, idScope, registrationId] = requireEnv('DPS_PROVISIONING_HOST', 'DPS_ID_SCOPE', 'DPS_REGISTRATION_ID');

function securityClient() {
  if (process.env.DPS_GROUP_KEY) {
    const deviceKey = crypto
      .createHmac('SHA256', Buffer.from(process.env.DPS_GROUP_KEY, 'base64'))
      .update(registrationId, 'utf8')
      .digest('base64');
    return new SymmetricKeySecurityClient(registrationId, deviceKey);
  }
  const [certFile, keyFile] = requireEnv('DPS_CERT_FILE', 'DPS_KEY_FILE');
  return new X509Security(registrationId, {
    cert: fs.readFileSync(certFile, 'utf8'),
    key: fs.readFileSync(keyFile, 'utf8'),
  });
}

const client = ProvisioningDeviceClient.create(host, idScope, new Http(), securityClient());
runSteps([['register', () => client.register()]]);
