// A tss.js TPM on a swtpm's TCP data port. tss.js (2.0.0, lib/TpmDevice.js) reaches a TPM through a `device` with
// connect / dispatchCommand / close: /dev/tpm0 on Linux (raw TPM 2.0 command bytes) or, in simulator mode,
// TpmTcpDevice, which speaks Microsoft's simulator protocol (a HandShake on the port, SignalPowerOn/NvOn on port+1)
// that swtpm does not know: swtpm's port+1 is its control channel. swtpm's data port takes the raw bytes that
// tss.js writes to /dev/tpm0, so this device writes them there and reads one response back (its size is in the
// response header). swtpm serves one data client at a time: the TPM is ours until close().
'use strict';

const net = require('net');
const tss = require('tss.js');

const HEADER = 10; // tag u16, size u32, response code u32

class RawTcpTpmDevice {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.socket = null;
    this.error = null;
    this.pending = null; // {continuation, response}
  }

  connect(continuation) {
    const socket = net.connect(this.port, this.host);
    this.socket = socket;
    let connected = false;
    socket.on('connect', () => {
      connected = true;
      setImmediate(continuation, null);
    });
    socket.on('data', (chunk) => this._receive(chunk));
    socket.on('error', (err) => {
      this.error = new tss.TpmError(
        tss.TPM_RC.TSS_TCP_DISCONNECTED,
        'swtpm',
        `swtpm at ${this.host}:${this.port}: ${err.message}`
      );
      if (!connected) {
        connected = true; // report once
        setImmediate(continuation, this.error);
      }
      this._fail(this.error);
    });
    socket.on('close', () => {
      this.error = this.error || new tss.TpmError(tss.TPM_RC.TSS_TCP_DISCONNECTED, 'swtpm', 'swtpm closed the connection');
      this._fail(this.error);
    });
    return null;
  }

  dispatchCommand(command, continuation) {
    if (this.error || !this.socket) {
      setImmediate(continuation, this.error || new tss.TpmError(tss.TPM_RC.TSS_SEND_OP_FAILED, 'swtpm', 'not connected'));
      return;
    }
    this.pending = { continuation, response: Buffer.alloc(0) };
    this.socket.write(command);
  }

  close() {
    if (this.socket) {
      this.socket.end();
      this.socket.unref();
      this.socket = null;
    }
  }

  _receive(chunk) {
    if (!this.pending) return;
    const pending = this.pending;
    pending.response = Buffer.concat([pending.response, chunk]);
    if (pending.response.length < HEADER) return;
    const size = pending.response.readUInt32BE(2);
    if (pending.response.length < size) return;
    this.pending = null;
    setImmediate(pending.continuation, null, pending.response.subarray(0, size));
  }

  _fail(err) {
    if (!this.pending) return;
    const pending = this.pending;
    this.pending = null;
    setImmediate(pending.continuation, err, null);
  }
}

// A tss.js Tpm (for TpmSecurityClient's customTpm) on the swtpm whose data port is `port`.
function swtpm(host, port) {
  const tpm = new tss.Tpm(false);
  tpm.device = new RawTcpTpmDevice(host, port);
  return tpm;
}

module.exports = { RawTcpTpmDevice, swtpm };
